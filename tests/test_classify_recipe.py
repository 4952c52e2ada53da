"""The classification recipe: CSV and JSON datalists, class names, stratified hold-out, class weights,
multi-label cases, and one-line refusals that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke

from mitk.errors import InputError
from mitk.tasks.classify.recipe import ClassificationRecipe, LoadClassCase, class_weights, stratified_hold_out


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """Twelve greyscale PNG crops of scikit-image's real fundus photograph (microaneurysms), 32²."""
    from PIL import Image
    from skimage import data

    folder = tmp_path / "pictures"
    folder.mkdir()
    fundus = data.microaneurysms()
    for index in range(12):
        row, column = divmod(index, 4)
        Image.fromarray(fundus[row * 32: row * 32 + 32, column * 17: column * 17 + 32]).save(folder / f"p{index}.png")
    return folder


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_datalist_with_relative_paths_and_stratified_hold_out(pictures: Path) -> None:
    labels = ["10", "2"] * 4 + ["2"] * 4  # 4 of class 10, 8 of class 2
    source = write_csv(pictures / "labels.csv", ["image,label", *(f"p{i}.png,{labels[i]}" for i in range(12))])
    datalist = ClassificationRecipe().read_datalist(source, seed=0, validation_fraction=0.25)
    assert datalist.labels == {0: "2", 1: "10"}  # numeric order
    assert datalist.held_out and len(datalist.training) + len(datalist.validation) == 12
    assert sorted(c["label"] for c in datalist.validation) == ["10", "2", "2"]  # a quarter of each class
    assert all(Path(c["image"]).parent == pictures for c in datalist.training)
    found = ClassificationRecipe().found_config(datalist)
    assert found["class_names"] == ["2", "10"] and found["spatial_dims"] == 2 and found["in_channels"] == 1
    # inverse frequency in the training cases (6 of "2", 3 of "10"), scaled to mean 1
    assert found["class_weights"] == pytest.approx([2 / 3, 4 / 3])


def test_split_column_and_json_datalist(pictures: Path) -> None:
    source = write_csv(pictures / "labels.csv", ["image,label,split", "p0.png,a,training", "p1.png,b,train",
                                                 "p2.png,a,validation", "p3.png,b,val"])
    datalist = ClassificationRecipe().read_datalist(source, seed=0, validation_fraction=0.2)
    assert not datalist.held_out and [c["name"] for c in datalist.validation] == ["p2", "p3"]
    document = {"training": [{"image": "p0.png", "label": "a"}, {"image": "p1.png", "label": ["a", "b"]}],
                "validation": [{"image": "p2.png", "label": ["b"]}]}
    (pictures / "list.json").write_text(json.dumps(document))
    datalist = ClassificationRecipe().read_datalist(pictures / "list.json", seed=0, validation_fraction=0.2)
    assert datalist.extra["multi_label"] is True
    config = ClassificationRecipe().found_config(datalist)
    assert config["multi_label"] is True and config["class_names"] == ["a", "b"]
    loader = LoadClassCase(["a", "b"], spatial_dims=2, in_channels=1, multi_label=True)
    case = loader(datalist.training[1])
    assert torch.equal(case["label"], torch.tensor([1.0, 1.0])) and tuple(case["image"].shape) == (1, 32, 32)


@pytest.mark.parametrize(("lines", "message"), [
    (["picture,label", "p0.png,a"], "needs image and label columns"),
    (["image,label", "p0.png,a", "missing.png,b"], "listed in labels.csv but missing"),
    (["image,label", "p0.png,a", "p1.png,"], "line 3: every case needs a label"),
    (["image,label", "p0.png,a", "p1.png,a"], "at least two classes"),
    (["image,label,split", "p0.png,a,test"], "split must be training or validation"),
])
def test_bad_labels_files_are_refused(pictures: Path, lines: list[str], message: str) -> None:
    source = write_csv(pictures / "labels.csv", lines)
    with pytest.raises(InputError, match=message):
        ClassificationRecipe().read_datalist(source, seed=0, validation_fraction=0.5)


def test_train_cli_names_the_bad_file(pictures: Path, tmp_path: Path) -> None:
    source = write_csv(pictures / "labels.csv", ["image,label", "p0.png,a", "gone.png,b"])
    code, stdout, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data", str(source),
                                   "-d", str(tmp_path / "run")])
    assert code == 1 and stdout == ""
    assert "gone.png" in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_hold_out_and_weights_edges(tmp_path: Path) -> None:
    cases = [{"image": f"{i}.png", "label": label} for i, label in enumerate(["a", "a", "a", "b"])]
    training, validation = stratified_hold_out(cases, seed=1, fraction=0.5, source=tmp_path)
    assert [c["label"] for c in training] == ["a", "b"]
    assert [c["label"] for c in validation] == ["a", "a"]  # round(0.5 × 3) of a; b has one case: it stays
    assert class_weights(cases, ["a", "b"], multi_label=False) == pytest.approx([0.5, 1.5])
    assert class_weights(cases, ["a", "b"], multi_label=True) == pytest.approx([1 / 3, 3.0])


def test_label_outside_the_classes_is_refused(pictures: Path) -> None:
    loader = LoadClassCase(["a", "b"], spatial_dims=2, in_channels=1, multi_label=False)
    with pytest.raises(InputError, match="'c' is not one of the model's classes"):
        loader({"image": str(pictures / "p0.png"), "label": "c"})


def test_multi_label_training_runs(pictures: Path, tmp_path: Path) -> None:
    rows = [f"p{i}.png,{'a;b' if i % 3 == 0 else 'a' if i % 3 == 1 else 'b'}" for i in range(12)]
    source = write_csv(pictures / "labels.csv", ["image,label", *rows])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, stdout, stderr = invoke(["train", "classify", "--plugin", "resnet", "--data", str(source), "-d",
                                       str(tmp_path / "run"), "--epochs", "1", "--batch-size", "6", "--json",
                                       "--set", "image_size=[32,32]", "--set", "network.widen_factor=0.125"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, stderr
    from mitk.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert checkpoint.config["multi_label"] is True and checkpoint.config["class_names"] == ["a", "b"]
    assert np.isfinite(json.loads(stdout)["best_metric"]["value"])
