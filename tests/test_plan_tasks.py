"""``mitk plan`` for classification (resnet, densenet121) and detection (retinanet) on the real sample data: the plan
follows the data (class counts give the weights, bigger boxes bigger anchors and patches, the budget the network
size), `mitk train` uses it (``--no-plan`` does not), a plan of another task is refused, and training from it
learns."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mitk.errors import UsageError
from mitk.training.plan_data import plan_data
from mitk.training.planning import Budget, read_plan

CPU = Budget("cpu", 4.0, 50.0)


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mitk sample classify`: 24 axial MNI152 slices of 32², labelled by level."""
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    folder = tmp_path_factory.mktemp("plan_classify")
    make_classification_sample(folder, cases=24, size=32, seed=0, dims=2)
    return folder


@pytest.fixture(scope="module")
def spheres(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mitk sample detect`: 6 MNI152 volumes of 32³ with planted spheres (boxes in world mm)."""
    pytest.importorskip("nilearn")
    from mitk.sample import make_detection_sample

    return make_detection_sample(tmp_path_factory.mktemp("plan_detect"), cases=6, size=32, seed=0).parent


def labelled_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_classify_plan_follows_the_data(slices: Path, tmp_path: Path) -> None:
    plan = plan_data(slices / "train.csv", "resnet", CPU)
    settings, fingerprint = plan["settings"], plan["fingerprint"]
    assert (plan["task"], plan["plugin"], settings["spatial_dims"]) == ("classify", "resnet", 2)
    assert settings["image_size"] == [32, 32]  # the slices' own 32² (the plugin's default would be 224²)
    assert fingerprint["median_shape"][:2] == [32.0, 32.0] and fingerprint["spatial_dims"] == 2
    rows = labelled_rows(slices / "train.csv")
    counts = Counter(row["label"] for row in rows)
    assert fingerprint["class_counts"] == {name: counts[name] for name in settings["class_names"]}
    inverse = np.array([1.0 / counts[name] for name in settings["class_names"]])
    np.testing.assert_allclose(settings["class_weights"], inverse / inverse.mean(), rtol=1e-5)
    # 2-D: flips on the axes test-time augmentation flips (up-down), never left-right; no MRI bias field
    assert settings["augmentation"] == {"flip": 0.5, "flip_axes": [1], "bias_field": 0.0}
    assert settings["intensity"] == {"mode": "zscore"} and plan["modality"] == ["planar"]
    assert 2 <= plan["training"]["batch_size"] <= max(2, len([r for r in rows if r["split"] == "training"]) // 5)
    assert plan["estimate"]["gflop_per_step"] <= CPU.gflop_per_step

    # a rare class weighs more, in proportion to its count
    rare = [r for r in rows if r["label"] != "vertex"] + [r for r in rows if r["label"] == "vertex"][:3]
    for row in rare:
        row["image"] = str(slices / row["image"])
    unbalanced = tmp_path / "unbalanced.csv"
    with unbalanced.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rare[0]))
        writer.writeheader()
        writer.writerows(rare)
    weights = dict(zip(settings["class_names"], plan_data(unbalanced, "resnet", CPU)["settings"]["class_weights"],
                       strict=True))
    assert weights["vertex"] == pytest.approx(weights["cerebellum"] * counts["cerebellum"] / 3, rel=1e-4)

    # a tight compute budget narrows the network instead of giving up
    from mitk_builtin._classify_networks import ResNetClassifier

    from mitk.training.planning_classify import plan_network

    base = {key: settings[key] for key in ("class_names", "in_channels", "spatial_dims")}
    tight = plan_network(ResNetClassifier(), "resnet", base, [32.0, 32.0], Budget("cpu", 4.0, 1.0), 20)
    assert tight["network"]["widen_factor"] < 1.0 and settings["network"]["widen_factor"] == 1.0
    assert tight["estimate"]["gflop_per_step"] <= 1.0


def _scaled_boxes(source: Path, target: Path, factor: float) -> Path:
    """The same images, every box scaled by ``factor`` about its centre (a data set of bigger lesions)."""
    document = json.loads((source / "dataset.json").read_text())
    for case in document["training"] + document["validation"]:
        boxes = np.asarray(case["box"], dtype=float).reshape(-1, 6)
        centre, half = (boxes[:, :3] + boxes[:, 3:]) / 2, (boxes[:, 3:] - boxes[:, :3]) / 2 * factor
        case["box"] = np.concatenate([centre - half, centre + half], axis=1).round(4).tolist()
        case["image"] = str((source / case["image"]).resolve())
    target.mkdir()
    (target / "dataset.json").write_text(json.dumps(document))
    return target / "dataset.json"


def test_detect_plan_follows_the_boxes(spheres: Path, tmp_path: Path) -> None:
    small = plan_data(spheres, "retinanet", CPU)
    big = plan_data(_scaled_boxes(spheres, tmp_path / "big", 2.5), "retinanet", CPU)
    for plan in (small, big):
        settings, boxes = plan["settings"], plan["fingerprint"]["boxes"]
        spacing = np.asarray(settings["spacing"])
        np.testing.assert_allclose(spacing, min(boxes["p5_mm"]) / 4, rtol=1e-3)  # small lesions 4 voxels across
        # the patch holds the largest box with context, and divides by the network's stride
        patch = np.asarray(settings["sampling"]["patch_size"])
        assert np.all(patch * spacing >= 1.5 * np.asarray(boxes["max_mm"]) - spacing)
        assert np.all(patch % 2 ** len(settings["backbone"]["returned_layers"]) == 0)
        assert settings["augment_flip"] is True  # volumes, no side in the labels
        assert plan["estimate"]["gflop_per_step"] <= CPU.gflop_per_step
    anchors = [np.asarray(p["settings"]["anchors"]["base_shapes"]) * np.asarray(p["settings"]["spacing"])
               for p in (small, big)]
    assert np.all(anchors[1] > 1.8 * anchors[0])  # 2.5× the boxes: anchors in mm grow with them
    patches = [np.prod(np.asarray(p["settings"]["sampling"]["patch_size"]) * np.asarray(p["settings"]["spacing"]))
               for p in (small, big)]
    assert patches[1] > patches[0]
    assert big["fingerprint"]["boxes"]["p50_mm"] == pytest.approx(
        2.5 * np.asarray(small["fingerprint"]["boxes"]["p50_mm"]), rel=1e-3)


def test_train_uses_the_plan_and_no_plan_ignores_it(slices: Path, spheres: Path, tmp_path: Path, run_inprocess,
                                                    single_threaded_torch) -> None:
    from mitk.checkpoint import load_checkpoint
    from mitk.training.train import train

    code, out, err = run_inprocess("plan", slices / "train.csv", "--plugin", "resnet", "--device", "cpu",
                                   "--gflop", "50", "--json")
    assert code == 0, err
    plan = read_plan(slices / "mitk-plan.json")
    assert json.loads(out)["task"] == "classify"
    plan["settings"]["optimizer"] = {"lr": 3e-3}  # the plan is the user's to edit
    (slices / "mitk-plan.json").write_text(json.dumps(plan))
    run = train("classify", plugin="resnet", data=slices / "train.csv", output_dir=tmp_path / "planned",
                options={"epochs": 3, "device": "cpu", "seed": 0})
    config = load_checkpoint(tmp_path / "planned" / "last.safetensors").config
    assert config["plan"]["file"] == str((slices / "mitk-plan.json").resolve())
    assert config["image_size"] == [32, 32] and config["optimizer"]["lr"] == 3e-3
    assert config["training"]["batch_size"] == plan["training"]["batch_size"]
    assert config["augmentation"]["flip_axes"] == [1] and config["class_weights"] == plan["settings"]["class_weights"]
    losses = [row["loss"] for row in run.history]
    assert losses[-1] < 0.7 * losses[0] and run.best_score is not None and run.best_score > 0.7  # it learns
    train("classify", plugin="resnet", data=slices / "train.csv", output_dir=tmp_path / "plain", plan=False,
          options={"epochs": 1, "device": "cpu", "seed": 0}, overrides={"image_size": [32, 32]})
    plain = load_checkpoint(tmp_path / "plain" / "last.safetensors").config
    assert "plan" not in plain and plain["optimizer"]["lr"] == 1e-3 and plain["training"]["batch_size"] == 2

    # a plan for classification given to a detector: one line, no traceback
    code, _, err = run_inprocess("train", "detect", "--plugin", "retinanet", "--data", spheres, "-d",
                                 tmp_path / "wrong", "--plan", slices / "mitk-plan.json", "--epochs", "1")
    assert code != 0 and "is for classify (plugin 'resnet'), not detect" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_detect_train_reads_the_plan(spheres: Path, tmp_path: Path, run_inprocess, single_threaded_torch) -> None:
    from mitk.checkpoint import load_checkpoint

    code, _, err = run_inprocess("plan", spheres, "--plugin", "retinanet", "--device", "cpu", "--gflop", "8",
                                 "--overwrite")  # a small budget: a narrow network, a quick epoch
    assert code == 0 and "anchors" in err
    plan = read_plan(spheres / "mitk-plan.json")
    code, _, err = run_inprocess("train", "detect", "--plugin", "retinanet", "--data", spheres, "-d",
                                 tmp_path / "run", "--epochs", "1", "--val-every", "2")
    assert code == 0, err
    assert "using the plan" in err
    config = load_checkpoint(tmp_path / "run" / "last.safetensors").config
    for key in ("spacing", "anchors", "sampling", "patch_size"):
        expected = plan["settings"][key]
        assert (config[key] if not isinstance(expected, dict) else {k: config[key][k] for k in expected}) == expected
    assert config["backbone"]["returned_layers"] == plan["settings"]["backbone"]["returned_layers"]
    with pytest.raises(UsageError, match="configures the plugins"):
        plan_data(spheres, "blob", CPU)


def test_no_left_right_flips_for_radiograph_like_slices_or_sided_labels(tmp_path: Path) -> None:
    pytest.importorskip("nilearn")
    from mitk.sample import make_detection_sample
    from mitk.training.planning_detect import sided

    plan = plan_data(make_detection_sample(tmp_path, cases=4, size=32, seed=1, dims=2), "retinanet", CPU)
    settings = plan["settings"]
    assert settings["spatial_dims"] == 2 and settings["augment_flip"] is False  # one-slice images: never mirrored
    assert settings["sampling"]["patch_size"][2] == 1 and all(s[2] == 1.0 for s in settings["anchors"]["base_shapes"])
    assert sided({"1": "left_kidney", "2": "right kidney"}) and not sided({"1": "lesion", "2": "cleft"})
