"""Two quiet wrong answers of classification: probabilities rounded on their way to ``--csv``/``--json`` (so
``mitk evaluate classify`` scored other numbers than the model gave), and 2-D training that flipped images
left-right by default (which swaps the patient's sides under a side-dependent label)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import invoke, load

import mitk
from mitk import hookimpl
from mitk.checkpoint import load_checkpoint, save_checkpoint
from mitk.tasks import ClassificationPlugin, Transform

PLUGIN = "sure-mean"
CLASS_NAMES = ["dim", "bright"]


class SureMeanClassifier(ClassificationPlugin):
    """Logits ``W · mean(image) + b`` on 2-D images: made very sure, so that probabilities differ only in
    their seventh and later decimals."""

    def default_config(self) -> dict[str, Any]:
        return {"class_names": CLASS_NAMES, "spatial_dims": 2, "in_channels": 1}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose

        return Compose([])


@pytest.fixture
def sure_mean(mitk_plugins: Callable[..., Any]) -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register(PLUGIN, task="classify", factory=SureMeanClassifier)

    mitk_plugins(Plugin())


@pytest.mark.usefixtures("sure_mean")
def test_csv_and_json_keep_full_precision_so_evaluate_scores_the_models_numbers(brain_mr: Path,
                                                                              tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    # The 25 axial slices of a real MR as 2-D inputs, labelled by a fixed pattern (not by brightness alone).
    mr = load(brain_mr)
    volume = np.asarray(mr.get_fdata(dtype=np.float32))
    folder = tmp_path / "slices"
    folder.mkdir()
    paths = []
    for k in range(volume.shape[2]):
        affine = mr.affine.copy()
        affine[:3, 3] = mr.affine[:3, :3] @ [0, 0, k] + mr.affine[:3, 3]
        paths.append(folder / f"slice_{k:02d}.nii.gz")
        nib.save(nib.Nifti1Image(volume[:, :, k:k + 1], affine), paths[-1])
    labels = ["bright" if k % 3 else "dim" for k in range(len(paths))]
    reference = tmp_path / "labels.csv"
    reference.write_text("image,label\n" + "".join(f"slices/{p.name},{c}\n" for p, c in zip(paths, labels,
                                                                                              strict=True)))
    # Logit difference 15..25 over the slices' mean intensities: P(dim) between 1e-11 and 3e-7, which six
    # decimals would all round to 0 (every case tied: an AUC of 0.5).
    means = volume.mean(axis=(0, 1))
    low, high = float(means.min()), float(means.max())
    slope = 10.0 / (high - low)
    network = SureMeanClassifier().network({})
    state = network.state_dict()
    state["2.weight"] = torch.tensor([[0.0], [slope]])
    state["2.bias"] = torch.tensor([0.0, 15.0 - slope * low])
    weights = save_checkpoint(tmp_path / "sure.safetensors", state, task="classify", plugin=PLUGIN,
                              plugin_version="0", config=SureMeanClassifier().default_config())

    model = mitk.load(weights=weights, device="cpu")
    expected = [model.classify(p).probabilities for p in paths]
    dim = [p[0] for p in expected]
    assert max(dim) < 5e-7 and len(set(dim)) == len(dim)  # would all round to 0.0
    truth = roc_auc_score([c == "bright" for c in labels], [p[1] for p in expected])
    assert truth != pytest.approx(0.5, abs=0.05)

    predictions = tmp_path / "preds.csv"
    code, stdout, stderr = invoke(["classify", *map(str, paths), "--weights", str(weights), "--csv",
                                   str(predictions), "--json"])
    assert code == 0, stderr
    records = json.loads(stdout)["cases"]
    assert [list(r["probabilities"].values()) for r in records] == expected  # exactly the model's numbers
    rows = list(csv.DictReader(predictions.open()))
    assert [[float(r["prob_dim"]), float(r["prob_bright"])] for r in rows] == expected
    code, stdout, stderr = invoke(["evaluate", "classify", "--pred", str(predictions), "--ref", str(reference),
                                   "--json"])
    assert code == 0, stderr
    scores = json.loads(stdout)
    assert scores["paired"] == len(paths)
    assert scores["per_class"]["bright"]["auc"] == pytest.approx(truth, abs=1e-12)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    folder = tmp_path_factory.mktemp("sample")
    make_classification_sample(folder, cases=9, size=32, seed=0, dims=2)
    return folder


TINY = {"densenet121": ["--set", "network.block_config=[2,2]", "--set", "network.init_features=8",
                        "--set", "network.growth_rate=8"],
        "resnet": ["--set", "network.widen_factor=0.125"]}


@pytest.mark.parametrize("plugin_name", ["densenet121", "resnet"])
def test_two_d_training_does_not_flip_unless_asked(plugin_name: str, sample: Path, tmp_path: Path) -> None:
    """Every built-in 2-D classifier trains without flips by default (the checkpoint says so, and its training
    transforms leave a real, asymmetric slice unmirrored under any seed); ``augmentation.flip`` opts in."""
    from mitk.io.reader import load_image
    from mitk.plugin_manager import get_registry
    from mitk.tasks.classify.runner import network_input

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, _, stderr = invoke(["train", "classify", "--plugin", plugin_name, "--data", str(sample / "train.csv"),
                                  "-d", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "5", "--seed", "0",
                                  "--set", "image_size=[32,32]", *TINY[plugin_name]])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, stderr
    config = load_checkpoint(tmp_path / "run" / "best.safetensors").config
    assert config["spatial_dims"] == 2 and config["augmentation"]["flip"] == 0.0
    plugin = get_registry().get(plugin_name, "classify").load()
    image = network_input(load_image(sample / "images" / "case_000.nii.gz"), spatial_dims=2, in_channels=1)
    plain = plugin.inference_transforms(config)({"image": image.clone()})["image"].as_tensor()
    assert not torch.allclose(plain, torch.flip(plain, dims=[1]), atol=0.1)  # the slice is not symmetric

    def mirrored_draws(augmentation: dict[str, float]) -> int:
        """How many of 20 seeded draws of the training transforms mirror the slice left-right (other random
        steps off, so that every draw is the plain image or its mirror)."""
        settings = {**config, "augmentation": {**config["augmentation"], "rotate": 0.0, "zoom": 0.0,
                                               "intensity": 0.0, "noise": 0.0, **augmentation}}
        transforms = plugin.training_transforms(settings)
        count = 0
        for seed in range(20):
            transforms.set_random_state(seed)
            out = transforms({"image": image.clone()})["image"].as_tensor()
            flipped = torch.allclose(out, torch.flip(plain, dims=[1]), atol=1e-5)
            assert flipped or torch.allclose(out, plain, atol=1e-5)
            count += flipped
        return count

    assert mirrored_draws({}) == 0
    assert 0 < mirrored_draws({"flip": 0.5}) < 20
