"""``mitk train segment``: datalists, the training loop, checkpoints, resume, and inference with the result.

The cases are real anatomy: nilearn's MNI152 T1 at 4 mm with grey/white matter labels from its tissue
templates, cropped differently per case and given a different voxel layout (axes permuted and flipped)
and a different oblique placement in the world.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mitk.checkpoint import load_checkpoint, training_state_load
from mitk.errors import CheckpointError, GeometryError, InputError, OutputExistsError, UsageError
from mitk.training.data import LoadCased, case_name, read_case_image, read_datalist
from mitk.training.train import train as train_task

LABELS = ["background", "grey matter", "white matter"]
TINY = {"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0], "samples_per_case": 2,
        "network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
        "optimizer": {"lr": 0.01}}


def rotation(degrees: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    return matrix


def flip_axis(array: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy in the same place, stored with voxel ``axis`` reversed."""
    shift = np.eye(4)
    shift[axis, axis], shift[axis, 3] = -1, array.shape[axis] - 1
    return np.flip(array, axis), affine @ shift


def build_cases(root: Path, count: int, seed: int = 0) -> list[tuple[Path, Path]]:
    """``count`` (image, label) NIfTI pairs in ``root/imagesTr`` and ``root/labelsTr``."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    grey = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    white = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    tissue = np.zeros(grey.shape, np.uint8)
    tissue[(grey > 0.5) & (grey >= white)] = 1
    tissue[(white > 0.5) & (white > grey)] = 2
    image_4mm = np.asarray(template.get_fdata(), np.float32)[::2, ::2, ::2]
    label_4mm, affine_4mm = tissue[::2, ::2, ::2], template.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    pairs = []
    for n in range(count):
        corner = rng.integers(0, 6, 3)
        crop = tuple(slice(int(c), int(c) + side) for c, side in zip(corner, (40, 48, 40), strict=True))
        image, label = image_4mm[crop], label_4mm[crop]
        affine = affine_4mm.copy()
        affine[:3, 3] += affine[:3, :3] @ corner
        order = rng.permutation(3)
        image, label, affine = image.transpose(order), label.transpose(order), affine[:, [*order, 3]]
        for axis in np.flatnonzero(rng.integers(0, 2, 3)):
            image, _ = flip_axis(image, affine, axis)
            label, affine = flip_axis(label, affine, axis)
        placement = rotation(rng.uniform(-10, 10, 3))
        placement[:3, 3] = rng.uniform(-20, 20, 3)
        affine = placement @ affine
        pair = (root / "imagesTr" / f"mni{n}_0000.nii.gz", root / "labelsTr" / f"mni{n}.nii.gz")
        nib.Nifti1Image(np.ascontiguousarray(image), affine).to_filename(pair[0])
        nib.Nifti1Image(np.ascontiguousarray(label), affine).to_filename(pair[1])
        pairs.append(pair)
    return pairs


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """Five cases as an nnU-Net-style folder, plus a Decathlon datalist (4 training, 1 validation)."""
    root = tmp_path_factory.mktemp("mni_cases")
    pairs = build_cases(root, 5)
    listed = [{"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{label.name}"} for image, label in pairs]
    datalist = {"name": "mni tissue", "labels": {str(i): name for i, name in enumerate(LABELS)},
                "training": listed[:4], "validation": listed[4:]}
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root


def train(data: Path, output_dir: Path, **options):
    overrides = options.pop("overrides", TINY)
    defaults = {"epochs": 2, "batch_size": 2, "seed": 0, "device": "cpu"}
    return train_task("segment", plugin=options.pop("plugin", "unet"), data=data, output_dir=output_dir,
                              options={**defaults, **options}, overrides=overrides)


@pytest.fixture(scope="module")
def trained(cases, tmp_path_factory):
    return train(cases / "datalist.json", tmp_path_factory.mktemp("runs") / "run")


# -------------------------------------------------------------------------------------------------
# Datalists
# -------------------------------------------------------------------------------------------------


def test_decathlon_datalist_resolves_paths_and_label_names(cases):
    datalist = read_datalist(cases / "datalist.json")
    assert len(datalist.training) == 4 and len(datalist.validation) == 1 and not datalist.held_out
    assert Path(datalist.training[0]["image"]) == cases / "imagesTr" / "mni0_0000.nii.gz"
    assert datalist.training[0]["name"] == "mni0"
    assert datalist.labels == dict(enumerate(LABELS))


def test_folder_datalist_pairs_by_name_and_holds_out_a_seeded_fifth(cases):
    first = read_datalist(cases, seed=3)
    assert first.held_out and len(first.training) == 4 and len(first.validation) == 1
    assert all(Path(c["label"]).name == f"{c['name']}.nii.gz" for c in first.training + first.validation)
    assert [c["name"] for c in read_datalist(cases, seed=3).validation] == [c["name"] for c in first.validation]
    held = {tuple(c["name"] for c in read_datalist(cases, seed=s).validation) for s in range(6)}
    assert len(held) > 1  # the seed picks the case


def test_folder_with_channels_stacks_them(cases, tmp_path):
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    image = nib.load(cases / "imagesTr" / "mni0_0000.nii.gz")
    nib.save(image, tmp_path / "imagesTr" / "case_0000.nii.gz")
    nib.Nifti1Image(np.asarray(image.dataobj) * 2, image.affine).to_filename(tmp_path / "imagesTr" / "case_0001.nii.gz")
    nib.save(nib.load(cases / "labelsTr" / "mni0.nii.gz"), tmp_path / "labelsTr" / "case.nii.gz")
    nib.save(nib.load(cases / "labelsTr" / "mni1.nii.gz"), tmp_path / "labelsTr" / "other.nii.gz")
    nib.save(image, tmp_path / "imagesTr" / "other_0000.nii.gz")
    datalist = read_datalist(tmp_path)
    case = next(c for c in datalist.training + datalist.validation if c["name"] == "case")
    stacked = read_case_image(case["image"])
    assert stacked.array.shape == (*image.shape, 2)
    assert np.allclose(stacked.array[..., 1], 2 * stacked.array[..., 0])
    assert case_name("x/abc_0003.nii.gz") == "abc" and case_name("abc.nii") == "abc"
    with pytest.raises(InputError, match="has 2 channel"):
        LoadCased(num_labels=3, in_channels=1)(case)


def test_bad_datalists_are_one_line_errors(cases, tmp_path):
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"training": [{"image": "nope.nii.gz", "label": "nope_seg.nii.gz"}]}))
    with pytest.raises(InputError, match="missing") as error:
        read_datalist(missing)
    assert "nope.nii.gz" in str(error.value)
    lonely = tmp_path / "lonely"
    (lonely / "imagesTr").mkdir(parents=True)
    (lonely / "labelsTr").mkdir()
    nib.save(nib.load(cases / "imagesTr" / "mni0_0000.nii.gz"), lonely / "imagesTr" / "a_0000.nii.gz")
    with pytest.raises(InputError, match="no label in labelsTr/ for 1 image"):
        read_datalist(lonely)
    nib.save(nib.load(cases / "labelsTr" / "mni0.nii.gz"), lonely / "labelsTr" / "a.nii.gz")
    with pytest.raises(InputError, match="need at least 2"):
        read_datalist(lonely)


def test_labels_must_share_the_image_grid_and_names(cases, tmp_path):
    image_path = cases / "imagesTr" / "mni0_0000.nii.gz"
    label = nib.load(cases / "labelsTr" / "mni0.nii.gz")
    moved = tmp_path / "moved_label.nii.gz"
    shifted = label.affine.copy()
    shifted[0, 3] += 2.0
    nib.Nifti1Image(np.asarray(label.dataobj), shifted).to_filename(moved)
    loader = LoadCased(num_labels=3, in_channels=1)
    with pytest.raises(GeometryError, match="not on the image's grid") as error:
        loader({"image": str(image_path), "label": str(moved)})
    assert "moved_label.nii.gz" in str(error.value) and "mni0_0000.nii.gz" in str(error.value)
    with pytest.raises(InputError, match=r"outside the 2 labels.*--labels"):
        LoadCased(num_labels=2, in_channels=1)({"image": str(image_path), "label": str(label.get_filename())})
    smooth = tmp_path / "smooth.nii.gz"
    nib.Nifti1Image(np.asarray(label.dataobj) * 0.5, label.affine).to_filename(smooth)
    with pytest.raises(InputError, match="non-integer"):
        loader({"image": str(image_path), "label": str(smooth)})


# -------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_writes_the_run(trained):
    losses = [row["loss"] for row in trained.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    run = trained.output_dir
    for name in ("best.safetensors", "last.safetensors", "training_state.pt", "log.csv", "log.json",
                 "training_curve.png"):
        assert (run / name).is_file(), name
    assert (run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "loss", "lr", "seconds"]
    assert {"val_mean_dice", "val_dice/grey matter", "val_hd95/white matter",
            "val_surface_dice/grey matter"} <= set(header)
    assert [row["epoch"] for row in json.loads((run / "log.json").read_text())["epochs"]] == [1, 2]
    checkpoint = load_checkpoint(trained.best_checkpoint)
    assert (checkpoint.task, checkpoint.plugin) == ("segment", "unet")
    assert checkpoint.config["labels"] == {"0": "background", "1": "grey matter", "2": "white matter"}
    assert checkpoint.config["spacing"] == [4.0, 4.0, 4.0] and checkpoint.config["orientation"] == "RAS"
    assert checkpoint.config["intensity"]["mode"] == "mr" and checkpoint.config["patch_size"] == [32, 32, 32]
    assert checkpoint.metrics["epoch"] == trained.best_epoch
    assert checkpoint.metrics["mean_dice"] == pytest.approx(trained.best_score)
    assert 0 < trained.best_score <= 1
    best_row = trained.history[trained.best_epoch - 1]
    assert trained.best_score == max(row["val_mean_dice"] for row in trained.history) == best_row["val_mean_dice"]
    state = training_state_load(run / "training_state.pt")
    assert state["epoch"] == 2 and state["best_epoch"] == trained.best_epoch


def test_checkpoint_round_trips_through_load_model(trained, monkeypatch):
    from mitk.runner.model import load_model

    model = load_model("segment", None, trained.output_dir / "last.safetensors", device="cpu")
    assert model.name == "unet" and model.config["labels"]["2"] == "white matter"
    probe = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    trained.network.eval()
    with torch.no_grad():
        expected = trained.network(probe)
        torch.testing.assert_close(model.network(probe), expected, rtol=1e-5, atol=1e-5)  # CPU kernel rewrites
        monkeypatch.setenv("MITK_CPU_KERNELS", "0")
        exact = load_model("segment", None, trained.output_dir / "last.safetensors", device="cpu")
        assert torch.equal(exact.network(probe), expected)  # the untouched network: bit for bit
    best = load_model("segment", "unet", trained.best_checkpoint, device="cpu")
    assert best.metrics["epoch"] == trained.best_epoch


def test_same_seed_same_losses_and_resume_continues_exactly(cases, trained, tmp_path):
    run = tmp_path / "run"
    first = train(cases / "datalist.json", run, epochs=1)
    assert [row["loss"] for row in first.history] == [trained.history[0]["loss"]]
    other_seed = train(cases / "datalist.json", tmp_path / "seed1", epochs=1, seed=1)
    assert other_seed.history[0]["loss"] != trained.history[0]["loss"]
    resumed = train_task("segment", plugin=None, data=None, output_dir=run, options={"epochs": 2},
                                 resume=True)
    assert resumed.epochs_run == 1 and [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[1]["loss"] == trained.history[1]["loss"]
    assert training_state_load(run / "training_state.pt")["epoch"] == 2
    assert [r["epoch"] for r in json.loads((run / "log.json").read_text())["epochs"]] == [1, 2]


def test_run_folder_rules(cases, trained, tmp_path):
    data = cases / "datalist.json"
    with pytest.raises(OutputExistsError, match=r"--resume .* or --overwrite"):
        train(data, trained.output_dir)
    with pytest.raises(UsageError, match=r"cannot resume: no last\.safetensors"):
        train_task("segment", plugin="unet", data=data, output_dir=tmp_path, options={}, resume=True)
    with pytest.raises(UsageError, match="finished 2 epochs"):
        train_task("segment", plugin=None, data=None, output_dir=trained.output_dir, options={}, resume=True)
    with pytest.raises(UsageError, match="keeps its settings"):
        train_task("segment", plugin=None, data=None, output_dir=trained.output_dir, options={"epochs": 3},
                           overrides={"patch_size": [64, 64, 64]}, resume=True)
    with pytest.raises(CheckpointError, match="trained with plugin 'unet', not 'segresnet'"):
        train_task("segment", plugin="segresnet", data=None, output_dir=trained.output_dir,
                           options={"epochs": 3}, resume=True)
    with pytest.raises(InputError, match="outside the 2 labels"):
        train(data, tmp_path / "two_labels", overrides={**TINY, "labels": ["background", "brain"]})
    assert not (tmp_path / "two_labels" / "best.safetensors").exists()


# -------------------------------------------------------------------------------------------------
# Using the trained checkpoint
# -------------------------------------------------------------------------------------------------


def test_segment_with_the_checkpoint_keeps_the_input_grid(cases, trained, tmp_path, capsys):
    import SimpleITK as sitk

    from mitk.cli import main

    source = nib.load(cases / "imagesTr" / "mni4_0000.nii.gz")
    array = np.asarray(source.dataobj)
    flipped, flipped_affine = flip_axis(array, source.affine, 1)
    variants = {"as_is": (array, source.affine), "flipped": (flipped, flipped_affine),
                "oblique": (array, rotation(np.array([25.0, -15.0, 5.0])) @ source.affine)}
    results = {}
    for name, (voxels, affine) in variants.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.Nifti1Image(np.ascontiguousarray(voxels), affine).to_filename(path)
        out = tmp_path / f"{name}_seg.nii.gz"
        with pytest.raises(SystemExit) as done:
            main(["segment", str(path), "--weights", str(trained.best_checkpoint), "-o", str(out), "--json"])
        assert done.value.code == 0, capsys.readouterr().err
        document = json.loads(capsys.readouterr().out)
        assert document["plugin"] == "unet" and document["summary"]["ok"] == 1
        given, written = sitk.ReadImage(str(path)), sitk.ReadImage(str(out))
        assert written.GetSize() == given.GetSize()
        assert np.allclose(written.GetOrigin(), given.GetOrigin(), atol=1e-4)
        assert np.allclose(written.GetDirection(), given.GetDirection(), atol=1e-6)
        assert np.allclose(written.GetSpacing(), given.GetSpacing(), atol=1e-6)
        results[name] = np.asarray(nib.load(out).dataobj)
    assert set(np.unique(results["as_is"])) <= {0, 1, 2} and (results["as_is"] > 0).any()
    # the same anatomy stored the other way round gets the same labels, voxel for voxel
    assert np.array_equal(np.flip(results["flipped"], 1), results["as_is"])
    # placed obliquely in the world, the voxels (and so the labels) are unchanged
    assert np.mean(results["oblique"] == results["as_is"]) > 0.999


def test_cli_trains_and_reports_json(cases, tmp_path, mitk_cli):
    run = tmp_path / "cli_run"
    args = ["train", "segment", "--plugin", "unet", "--data", str(cases), "--output-dir", str(run),
            "--epochs", "1", "--patch-size", "32", "--labels", ",".join(LABELS), "--lr", "0.01",
            "--set", "spacing=[4,4,4]", "--set", "network.channels=[4,8,16]", "--set", "network.strides=[2,2]",
            "--set", "network.num_res_units=1", "--device", "cpu", "--no-cache", "--json"]
    done = mitk_cli(*args)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["task"] == "segment" and document["epochs_run"] == 1
    assert Path(document["checkpoint"]) == run / "best.safetensors" and (run / "best.safetensors").is_file()
    assert document["best_metric"]["name"] == "mean_dice" and document["best_metric"]["epoch"] == 1
    assert math.isfinite(document["best_metric"]["value"]) and document["seconds"] > 0
    assert "Traceback" not in done.stderr
    again = mitk_cli(*args)
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr


# Losses and validation Dice of this exact run (4 cases, seed 3, 2 epochs, one torch thread) as the
# segmentation-only trainer of mitk 0.1 (before the task-neutral engine) computed them.
PRE_ENGINE_HISTORY = [(1.892552137374878, 0.4225332736968994), (1.3646681904792786, 0.46351273357868195)]


def test_task_neutral_engine_reproduces_the_segmentation_trainer(tmp_path, single_threaded_torch):
    root = tmp_path / "cases"
    build_cases(root, 4)
    labels = {str(i): name for i, name in enumerate(LABELS)}
    run = train_task("segment", plugin="unet", data=root, output_dir=tmp_path / "run",
                     options={"epochs": 2, "batch_size": 2, "seed": 3, "device": "cpu"},
                     overrides={**TINY, "labels": labels})
    history = [(row["loss"], row["val_mean_dice"]) for row in run.history]
    # Flat, so that approx compares numbers (on a list of tuples it compared the tuples exactly). rel=1e-3: the
    # second epoch's Dice moves in the 5th digit between CPUs (oneDNN/OpenBLAS kernels): 0.46349 against 0.46351
    # on a machine of 2026-12, with the code from before the task packages as well.
    flat = [value for row in history for value in row]
    assert flat == pytest.approx([value for row in PRE_ENGINE_HISTORY for value in row], rel=1e-3)
    assert run.mode == "max" and run.monitor == "mean_dice"


def test_cli_resume_keeps_seed_options_and_split(cases, tmp_path, single_threaded_torch):
    """`--resume` restores every option and the held-out split; flags that contradict the run are refused."""
    from helpers import invoke

    folder = tmp_path / "folder"
    folder.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).symlink_to(cases / sub)
    run = tmp_path / "run"
    tiny = ["--set", 'network={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}',
            "--set", "spacing=[4,4,4]", "--set", "samples_per_case=1", "--labels", ",".join(LABELS)]
    code, _, err = invoke(["train", "segment", "--plugin", "unet", "--data", str(folder), "-d", str(run),
                           "--epochs", "1", "--seed", "7", "--batch-size", "1", "--val-every", "2",
                           "--val-fraction", "0.4", "--patch-size", "32", "--device", "cpu", "--no-amp", *tiny])
    assert code == 0, err
    split = json.loads((run / "split.json").read_text())
    assert len(split["validation"]) == 2 and len(split["training"]) == 3 and split["held_out"]

    code, _, err = invoke(["train", "segment", "-d", str(run), "--resume", "--epochs", "3", "--seed", "0"])
    assert code == 2 and "started with --seed 7" in err and "\n" not in err.strip()
    code, _, err = invoke(["train", "segment", "-d", str(run), "--resume", "--epochs", "3", "--batch-size", "2"])
    assert code == 2 and "--batch-size 1" in err

    code, _, err = invoke(["train", "segment", "-d", str(run), "--resume", "--epochs", "2", "--seed", "7"])
    assert code == 0, err
    options = json.loads(training_state_load(run / "training_state.pt")["options"])
    assert (options["seed"], options["batch_size"], options["val_every"], options["epochs"]) == (7, 1, 2, 2)
    assert options["validation_fraction"] == pytest.approx(0.4)
    assert json.loads((run / "split.json").read_text()) == split
    rows = json.loads((run / "log.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(row["val_mean_dice"] is not None for row in rows)  # epoch 1 ended its run; 2 is on the cadence


def test_schedules_by_hand() -> None:
    from mitk.training.loop import scheduled_learning_rate

    assert scheduled_learning_rate({}, 1.0, 1, 4) == 1.0  # cosine starts at the peak
    assert scheduled_learning_rate({}, 1.0, 3, 4) == pytest.approx(0.5)
    assert scheduled_learning_rate({"name": "poly", "power": 2}, 1.0, 3, 4) == pytest.approx(0.25)
    assert scheduled_learning_rate({"name": "constant"}, 0.1, 4, 4) == 0.1
    warm = {"name": "cosine", "warmup_epochs": 1}
    assert scheduled_learning_rate(warm, 1.0, 1, 5) == pytest.approx(0.5)
    assert scheduled_learning_rate(warm, 1.0, 2, 5) == pytest.approx(1.0)


def test_best_follows_the_monitor_direction() -> None:
    from mitk.training.loop import is_better

    assert is_better(0.5, None, "max") and is_better(0.6, 0.5, "max") and not is_better(0.4, 0.5, "max")
    assert is_better(2.0, 3.0, "min") and not is_better(4.0, 3.0, "min")
    assert not is_better(math.nan, 3.0, "min") and is_better(1.0, math.nan, "min")


def test_sgd_and_poly_come_from_the_plugin_config(cases, tmp_path, single_threaded_torch):
    run = train(cases / "datalist.json", tmp_path / "sgd", epochs=2,
                overrides={**TINY, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
                           "schedule": {"name": "poly"}})
    state = training_state_load(run.output_dir / "training_state.pt")
    group = state["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and group["nesterov"] is True  # SGD's, absent from AdamW's groups
    assert [row["lr"] for row in run.history] == pytest.approx([0.01, 0.01 * 0.5 ** 0.9])
    with pytest.raises(UsageError, match=r"optimizer\.name must be one of"):
        train(cases / "datalist.json", tmp_path / "bad", overrides={**TINY, "optimizer": {"name": "lbfgs"}})
    assert not (tmp_path / "bad").exists()


def test_a_plugins_own_step_and_a_minimised_monitor(cases, tmp_path, single_threaded_torch):
    """A plugin's ``training_step`` replaces the recipe's; best.safetensors follows a monitor to minimise."""
    from mitk_builtin._segment_networks import UNetSegmenter

    from mitk import hookimpl
    from mitk.plugin_manager import use_plugins
    from mitk.tasks.segment.recipe import SegmentationStep

    calls = {"loss": 0}

    class SmallestHD95(SegmentationStep):
        monitor = "mean_hd95"
        mode = "min"

        def loss(self, network, batch, device):
            calls["loss"] += 1
            return super().loss(network, batch, device)

    class OwnStep(UNetSegmenter):
        def training_step(self, config):
            return SmallestHD95(self, config)

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register):
            register("own-step-unet", task="segment", factory=OwnStep)

    with use_plugins(Plugin()):
        run = train(cases / "datalist.json", tmp_path / "own", plugin="own-step-unet", epochs=3)
    assert calls["loss"] == 3 * 2  # 4 training cases in batches of 2, for 3 epochs
    assert (run.monitor, run.mode) == ("mean_hd95", "min")
    distances = {row["epoch"]: row["val_mean_hd95"] for row in run.history}
    assert run.best_epoch == min(distances, key=lambda epoch: distances[epoch])
    assert load_checkpoint(run.best_checkpoint).metrics["epoch"] == run.best_epoch


@pytest.mark.parametrize(("tie_break", "expected_epoch"), [("loss", 2), (None, 1)])
def test_equal_monitors_are_decided_by_the_tie_break(cases, tmp_path, single_threaded_torch, tie_break,
                                                    expected_epoch):
    """A saturated monitor (AUC 1.0 from epoch 1) keeps the epoch with the lowest validation loss, when the step
    names ``tie_break``; without one, the first epoch that reached it."""
    from mitk_builtin._segment_networks import UNetSegmenter

    from mitk import hookimpl
    from mitk.plugin_manager import use_plugins
    from mitk.tasks.segment.recipe import SegmentationStep

    losses = iter([0.5, 0.2, 0.3])

    class Saturated(SegmentationStep):
        monitor = "score"
        mode = "max"

        def validate(self, network, loader, device, autocast):
            for _ in loader:
                pass
            return {"score": 1.0, "loss": next(losses)}

    if tie_break is not None:
        Saturated.tie_break = tie_break

    class OwnStep(UNetSegmenter):
        def training_step(self, config):
            return Saturated(self, config)

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register):
            register("saturated-unet", task="segment", factory=OwnStep)

    with use_plugins(Plugin()):
        run = train(cases / "datalist.json", tmp_path / "tie", plugin="saturated-unet", epochs=3)
    assert run.best_epoch == expected_epoch
    assert load_checkpoint(run.best_checkpoint).metrics["epoch"] == expected_epoch


def test_train_refuses_a_misspelt_setting_before_reading_data(tmp_path):
    from helpers import invoke

    code, _, err = invoke(["train", "segment", "--plugin", "unet", "--data", str(tmp_path / "nowhere"),
                           "-d", str(tmp_path / "run"), "--set", "network.chanels=[4,8]"])
    assert code == 2 and "did you mean 'network.channels'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_run_folder_never_writes_over_the_data(cases, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    datalist = json.loads((cases / "datalist.json").read_text())
    for entry in datalist["training"] + datalist["validation"]:
        entry["image"], entry["label"] = (str(cases / entry[key].lstrip("./")) for key in ("image", "label"))
    (run / "log.json").write_text(json.dumps(datalist))  # the datalist sits where the run log would go
    with pytest.raises(UsageError, match="refusing to write over the input"):
        train_task("segment", plugin="unet", data=run / "log.json", output_dir=run, overwrite=True,
                   options={"epochs": 1, "device": "cpu"}, overrides=TINY)
    assert json.loads((run / "log.json").read_text()) == datalist
