"""Classification end to end on real images: train on MNI152 slices (``mitk sample classify``), classify
real radiographs, fundus photographs and NIfTI volumes with the checkpoint alone, explain with Grad-CAM."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import invoke, load

from mitk.checkpoint import load_checkpoint, save_checkpoint
from mitk.io.reader import load_image

TINY_DENSENET = ["--set", "image_size=[32,32]", "--set", "network.block_config=[2,2]",
                 "--set", "network.init_features=8", "--set", "network.growth_rate=8"]
LEVELS = ["cerebellum", "ventricles", "vertex"]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    folder = tmp_path_factory.mktemp("sample")
    make_classification_sample(folder, cases=48, size=32, seed=0, dims=2)
    return folder


@pytest.fixture(scope="module")
def trained(sample: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A tiny DenseNet121 trained 8 epochs on 32² slices (a few seconds)."""
    run = tmp_path_factory.mktemp("run") / "run"
    code, _, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data", str(sample / "train.csv"),
                              "-d", str(run), "--epochs", "8", "--batch-size", "8", "--lr", "3e-3", "--seed", "0",
                              *TINY_DENSENET])
    assert code == 0, stderr
    return run


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """scikit-image's real fundus photographs: retina (colour PNG) and microaneurysms (greyscale JPEG)."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.retina()).save(folder / "retina.png")
    Image.fromarray(data.microaneurysms()).save(folder / "microaneurysms.jpg", quality=95)
    return folder / "retina.png", folder / "microaneurysms.jpg"


def radiographs() -> list[Path]:
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    found = [get_testdata_file(name) for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm")]
    if None in found:
        pytest.skip("pydicom-data radiographs RG1/RG3 are not available")
    return [Path(str(path)) for path in found]


def log_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "log.csv").open()))


def test_training_learns_above_chance(trained: Path, sample: Path, tmp_path: Path) -> None:
    rows = log_rows(trained)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    aucs = [float(r["val_mean_auc"]) for r in rows]
    assert max(aucs) >= 0.9 and max(aucs) - aucs[0] >= 0.15, aucs  # it learned, from near chance
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert (trained / "training_curve.png").is_file() and (trained / "best.safetensors").is_file()
    # The held-out test cases, scored by the CLI: one-vs-rest AUC well above chance (0.5).
    tests = list(csv.DictReader((sample / "test.csv").open()))
    predictions = tmp_path / "preds.csv"
    code, _, stderr = invoke(["classify", *(str(sample / r["image"]) for r in tests), "--weights",
                              str(trained / "best.safetensors"), "--csv", str(predictions)])
    assert code == 0, stderr
    code, stdout, stderr = invoke(["evaluate", "classify", "--pred", str(predictions), "--ref",
                                   str(sample / "test.csv"), "--json"])
    assert code == 0, stderr
    scores = json.loads(stdout)
    assert scores["paired"] == len(tests) and scores["classes"] == LEVELS
    assert scores["macro_auc"] >= 0.8, scores


def test_checkpoint_round_trips(trained: Path, sample: Path) -> None:
    from mitk_builtin._classify_networks import DenseNet121Classifier

    from mitk.runner.model import load_model
    from mitk.tasks.classify.runner import ClassificationRunner, network_input

    checkpoint = load_checkpoint(trained / "best.safetensors")
    assert checkpoint.task == "classify" and checkpoint.plugin == "densenet121"
    config = checkpoint.config
    assert config["class_names"] == LEVELS and config["spatial_dims"] == 2 and config["in_channels"] == 1
    assert len(config["class_weights"]) == 3
    model = load_model("classify", None, trained / "best.safetensors", device="cpu")
    for name, tensor in model.network.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(tensor, checkpoint.state_dict[name]), name
    # The runner's answer is the plain network's softmax on the plugin's preprocessing.
    plugin = DenseNet121Classifier()
    network = plugin.network(config).eval()
    network.load_state_dict(checkpoint.state_dict)
    image = load_image(sample / "images" / "case_045.nii.gz")
    prepared = plugin.inference_transforms(config)({"image": network_input(image, spatial_dims=2, in_channels=1)})
    with torch.no_grad():
        expected = torch.softmax(network(prepared["image"].as_tensor()[None]), dim=1)[0].tolist()
    result = ClassificationRunner(model)(load_image(sample / "images" / "case_045.nii.gz"))
    assert np.allclose(result.probabilities, expected, atol=1e-5)
    assert sum(result.probabilities) == pytest.approx(1.0)


def test_resume_continues_the_run(sample: Path, tmp_path: Path, one_thread: None) -> None:
    run = tmp_path / "run"
    common = ["--data", str(sample / "train.csv"), "-d", str(run), "--batch-size", "16", *TINY_DENSENET]
    code, _, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--epochs", "1", *common])
    assert code == 0, stderr
    code, _, stderr = invoke(["train", "classify", "--resume", "-d", str(run), "--epochs", "2"])
    assert code == 0, stderr
    assert [int(r["epoch"]) for r in log_rows(run)] == [1, 2]


def test_real_radiographs_photographs_and_slices_in_one_call(trained: Path, sample: Path,
                                                             photos: tuple[Path, Path], tmp_path: Path) -> None:
    chest, tibia = radiographs()
    retina, microaneurysms = photos
    slice_ = sample / "images" / "case_000.nii.gz"
    inputs = [chest, tibia, retina, microaneurysms, slice_]
    out, table = tmp_path / "out", tmp_path / "preds.csv"
    code, stdout, stderr = invoke(["classify", *map(str, inputs), "--weights", str(trained / "best.safetensors"),
                                   "-d", str(out), "--csv", str(table), "--explain"])
    assert code == 0, stderr
    assert "predicted" in stdout and "RG1_UNCR.dcm" in stdout  # the printed table
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 5 and list(rows[0]) == ["input", "predicted", *(f"prob_{c}" for c in LEVELS)]
    for row in rows:
        assert sum(float(row[f"prob_{c}"]) for c in LEVELS) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] in LEVELS
    assert (tmp_path / rows[2]["input"]).resolve() == retina.resolve()  # relative to the CSV's folder
    from PIL import Image

    for path in inputs:
        image = load_image(path)
        columns, rows_ = image.array.shape[:2]
        stem = path.name.split(".")[0]
        with Image.open(out / f"{stem}_gradcam.png") as overlay:
            assert overlay.size == (columns, rows_) and overlay.mode == "RGB"
        record = json.loads((out / f"{stem}_class.json").read_text())
        assert record["explanation"] == [str(out / f"{stem}_gradcam.png")]


def test_grad_cam_follows_the_input_geometry(trained: Path, photos: tuple[Path, Path]) -> None:
    """The map of a picture is the picture's size, and a bright region of it overlays the same pixels."""
    from mitk.runner.model import load_model
    from mitk.tasks.classify.explain import overlay_picture
    from mitk.tasks.classify.runner import ClassificationRunner

    runner = ClassificationRunner(load_model("classify", None, trained / "best.safetensors", device="cpu"))
    image = load_image(photos[1])
    result, heat = runner.explain(image)
    assert heat.shape == image.spatial_shape and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0
    assert result.probabilities == pytest.approx(runner(load_image(photos[1])).probabilities, abs=1e-5)
    # Brought back from the 32² network grid by linear interpolation, not in blocks of repeated values (with
    # the resize's own "area" mode about half of all neighbours were equal; linearly, about a fifth).
    assert np.mean(np.diff(heat[:, :, 0], axis=0) == 0) < 0.35
    picture = overlay_picture(image, heat)
    assert picture.shape == (image.array.shape[1], image.array.shape[0], 3)  # rows × columns
    peak = np.unravel_index(int(np.argmax(heat[:, :, 0])), heat.shape[:2])
    cold = np.unravel_index(int(np.argmin(heat[:, :, 0])), heat.shape[:2])
    red = picture[..., 0].astype(int) - picture[..., 2].astype(int)
    assert red[peak[1], peak[0]] > red[cold[1], cold[0]]  # the overlay's pixel (row j, column i) is warm


def test_multi_label_uses_sigmoids_and_a_threshold(trained: Path, sample: Path) -> None:
    code, stdout, stderr = invoke(["classify", str(sample / "images" / "case_001.nii.gz"), "--weights",
                                   str(trained / "best.safetensors"), "--multi-label", "--threshold", "0.3",
                                   "--json"])
    assert code == 0, stderr
    record = json.loads(stdout)["cases"][0]
    probabilities = record["probabilities"]
    assert record["multi_label"] is True and record["threshold"] == 0.3
    assert record["predicted"] == ";".join(c for c in LEVELS if probabilities[c] >= 0.3)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())


@pytest.fixture(scope="module")
def volume_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 3-D ResNet-18 (narrow) saved as a mitk checkpoint: enough to check geometry."""
    from mitk_builtin._classify_networks import ResNetClassifier

    plugin = ResNetClassifier()
    config = plugin.resolve_config({"class_names": ["normal", "lesion"], "spatial_dims": 3,
                                    "image_size": [32, 32, 16], "network": {"widen_factor": 0.25}})
    torch.manual_seed(0)
    network = plugin.network(config)
    path = tmp_path_factory.mktemp("volume") / "resnet3d.safetensors"
    return save_checkpoint(path, network.state_dict(), task="classify", plugin="resnet", plugin_version="0",
                           config=config)


def test_grad_cam_of_a_volume_is_on_the_input_grid(volume_classifier: Path, brain_mr: Path,
                                                   photos: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["classify", str(brain_mr), str(photos[0]), "--weights", str(volume_classifier),
                                   "-d", str(out), "--explain", "--json"])
    assert code == 3, stderr  # the photograph is refused, the volume classified
    volume, picture = json.loads(stdout)["cases"]
    assert volume["status"] == "ok" and sum(volume["probabilities"].values()) == pytest.approx(1.0)
    assert picture["status"] == "failed" and str(photos[0]) in picture["error"]
    assert "2-D image but the model takes 3-D" in picture["error"]
    heat, source = load(out / "brain1_image_gradcam.nii.gz"), load(brain_mr)
    assert heat.shape == source.shape
    assert np.allclose(heat.affine, source.affine)
    assert (out / "brain1_image_gradcam.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["brain1_image_class.json", "brain1_image_gradcam.nii.gz",
                                                     "brain1_image_gradcam.png"]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_depths_in_2d_and_3d(depth: int) -> None:
    from mitk_builtin._classify_networks import ResNetClassifier

    plugin = ResNetClassifier()
    for dims, shape in ((2, (2, 3, 32, 32)), (3, (1, 1, 16, 16, 16))):
        config = plugin.resolve_config({"class_names": ["a", "b", "c"], "spatial_dims": dims,
                                        "in_channels": shape[1], "network": {"depth": depth, "widen_factor": 0.125}})
        with torch.no_grad():
            assert tuple(plugin.network(config).eval()(torch.zeros(shape)).shape) == (shape[0], 3)


def test_settings_help_names_every_setting() -> None:
    from mitk_builtin._classify_networks import DenseNet121Classifier, ResNetClassifier

    def keys(config: dict[str, Any], prefix: str = "") -> set[str]:
        found: set[str] = set()
        for key, value in config.items():
            if isinstance(value, dict):
                found |= keys(value, f"{prefix}{key}.")
            else:
                found.add(prefix + key)
        return found

    for plugin in (DenseNet121Classifier(), ResNetClassifier()):
        assert keys(plugin.resolve_config()) == set(plugin.settings_help())


def test_sample_classify_cli_is_reproducible(tmp_path: Path) -> None:
    pytest.importorskip("nilearn")
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        code, stdout, stderr = invoke(["sample", "classify", "-d", str(folder), "--dims", "3", "--size", "16",
                                       "--cases", "6", "--json"])
        assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["classes"] == ["normal", "lesion"] and summary["test"] == 1
    names = sorted(p.name for p in (first / "images").iterdir())
    assert len(names) == 6
    assert all((first / "images" / n).read_bytes() == (second / "images" / n).read_bytes() for n in names)
    rows = list(csv.DictReader((first / "train.csv").open()))
    assert {r["split"] for r in rows} == {"training", "validation"}
    assert load(first / rows[0]["image"]).shape == (16, 16, 16)


def test_grad_cam_inverts_a_centre_crop(photos: tuple[Path, Path]) -> None:
    """size_mode crop: the 102² picture is cropped/padded to 64² for the network; the map comes back 102²,
    zero outside the cropped window."""
    from mitk_builtin._classify_networks import DenseNet121Classifier

    from mitk.enums import Task
    from mitk.runner.model import LoadedModel
    from mitk.tasks.classify.runner import ClassificationRunner

    plugin = DenseNet121Classifier()
    config = plugin.resolve_config({"class_names": ["a", "b"], "image_size": [64, 64], "size_mode": "crop",
                                    "network": {"block_config": [2, 2], "init_features": 8, "growth_rate": 8}})
    torch.manual_seed(0)
    network = plugin.network(config).eval()
    model = LoadedModel(name="densenet121", task=Task.CLASSIFY, plugin=plugin, config=config, network=network,
                        device=torch.device("cpu"))
    image = load_image(photos[1])
    _, heat = ClassificationRunner(model).explain(image)
    assert heat.shape == (102, 102, 1)
    assert heat[:19].max() == 0 and heat[83:].max() == 0 and heat[19:83, 19:83].max() > 0


def test_dicom_series_volume_is_classified_and_explained(volume_classifier: Path, tmp_path: Path) -> None:
    """pydicom's real five-slice CT series (a folder) through a 3-D model; the map is on the series' grid."""
    import pydicom.data

    series = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    if not series.is_dir():
        pytest.skip("pydicom's dicomdirtests are not installed")
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["classify", str(series), "--weights", str(volume_classifier), "-d", str(out),
                                   "--explain", "--json"])
    assert code == 0, stderr
    record = json.loads(stdout)["cases"][0]
    assert sum(record["probabilities"].values()) == pytest.approx(1.0)
    image = load_image(series)
    heat = load(out / "CT5N_gradcam.nii.gz")
    assert heat.shape == image.spatial_shape == (16, 16, 5)
    assert np.allclose(heat.affine, image.affine, atol=1e-4)


def test_training_reads_radiographs_and_photographs_from_one_csv(photos: tuple[Path, Path], tmp_path: Path,
                                                                  one_thread: None) -> None:
    """A CSV mixing real MONOCHROME1 CR radiographs (DICOM) with colour and greyscale fundus photographs."""
    chest, tibia = radiographs()
    retina, microaneurysms = photos
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,split\n"
                      f"{chest},radiograph,training\n{retina},photograph,training\n"
                      f"{tibia},radiograph,validation\n{microaneurysms},photograph,validation\n", encoding="utf-8")
    run = tmp_path / "run"
    code, stdout, stderr = invoke(["train", "classify", "--plugin", "resnet", "--data", str(labels), "-d", str(run),
                                   "--epochs", "2", "--batch-size", "2", "--json", "--set", "image_size=[32,32]",
                                   "--set", "network.widen_factor=0.125"])
    assert code == 0, stderr
    config = load_checkpoint(run / "best.safetensors").config
    assert config["class_names"] == ["photograph", "radiograph"]
    assert config["in_channels"] == 1 and config["spatial_dims"] == 2  # from the chest radiograph, listed first
    assert json.loads(stdout)["best_metric"]["name"] == "mean_auc"
