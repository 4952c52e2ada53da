"""Ensembles and test-time augmentation from the runner (:mod:`mitk.runner.ensemble`, :mod:`mitk.runner.tta`):
one member without TTA is the single model to the byte, TTA of a flip-equivariant network is the plain output,
an ensemble is the mean of its members' probabilities, on real MR (pyradiomics brain1) and a real photograph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mitk
from mitk.errors import CheckpointError
from mitk.runner.tta import flips

pytestmark = pytest.mark.usefixtures("single_threaded_torch")

TINY_UNET = {"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0],
             "network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


def unet_checkpoint(path: Path, seed: int, **settings: object) -> Path:
    """A tiny, seeded, untrained unet checkpoint (what ``mitk train`` writes), its weights set by ``seed``."""
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(TINY_UNET, settings)
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, plugin.network(config).state_dict(), task="segment", plugin="unet",
                           plugin_version=None, config=config)


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fold run folder as ``mitk train --folds 2`` leaves it: folds.json and fold_i/best.safetensors."""
    run = tmp_path_factory.mktemp("folds") / "run"
    for fold in range(2):
        unet_checkpoint(run / f"fold_{fold}" / "best.safetensors", seed=fold)
    (run / "folds.json").write_text(json.dumps({"format": 1, "folds": 2, "seed": 0, "grouping": None,
                                                "cases": [["a"], ["b"]]}))
    return run


def test_one_member_without_tta_is_the_single_model(fold_run: Path, brain_mr: Path) -> None:
    single = mitk.load(weights=fold_run / "fold_0" / "best.safetensors", device="cpu")
    listed = mitk.load(weights=[fold_run / "fold_0" / "best.safetensors"], device="cpu")
    plain = single.segment(brain_mr, probabilities=True)
    same = listed.segment(brain_mr, probabilities=True)
    assert plain.label_map.tobytes() == same.label_map.tobytes()
    assert plain.probabilities is not None and same.probabilities is not None
    assert plain.probabilities.tobytes() == same.probabilities.tobytes()
    unsure = listed.segment(brain_mr, uncertainty=True)  # the entropy is extra: the labels do not change
    assert unsure.label_map.tobytes() == plain.label_map.tobytes()
    assert unsure.uncertainty is not None and unsure.uncertainty["passes"] == 1


def test_fold_ensemble_is_the_mean_of_its_members(fold_run: Path, brain_mr: Path) -> None:
    members = [mitk.load(weights=fold_run / f"fold_{fold}" / "best.safetensors", device="cpu")
               .segment(brain_mr, probabilities=True).probabilities for fold in range(2)]
    assert members[0] is not None and members[1] is not None
    assert np.abs(members[0] - members[1]).max() > 0.01  # two different networks: a real average
    ensemble = mitk.load(weights=fold_run, device="cpu")
    assert len(ensemble.loaded.members) == 2 and ensemble.loaded.checkpoint == fold_run
    result = ensemble.segment(brain_mr, probabilities=True)
    manual = (members[0].astype(np.float64) + members[1]) / 2
    assert result.probabilities is not None and result.passes == {"members": 2, "flips": 1, "total": 2}
    np.testing.assert_allclose(result.probabilities, manual, atol=1e-5)
    decided = np.sort(manual, axis=-1)
    clear = decided[..., -1] - decided[..., -2] > 1e-4  # voxels not on a tie
    assert (result.label_map[clear] == manual.argmax(axis=-1)[clear]).all()


def test_checkpoints_given_as_a_comma_list_are_an_ensemble(fold_run: Path) -> None:
    listed = f"{fold_run / 'fold_0' / 'best.safetensors'},{fold_run / 'fold_1' / 'best.safetensors'}"
    model = mitk.load(weights=listed, device="cpu")
    assert [p.parent.name for p in model.loaded.member_checkpoints] == ["fold_0", "fold_1"]


def test_a_run_folder_is_its_best_checkpoint(fold_run: Path) -> None:
    model = mitk.load(weights=fold_run / "fold_1", device="cpu")
    assert model.loaded.checkpoint == fold_run / "fold_1" / "best.safetensors" and not model.loaded.members


def test_members_of_other_settings_are_refused(fold_run: Path, tmp_path: Path) -> None:
    other = unet_checkpoint(tmp_path / "other.safetensors", seed=0, spacing=[3.0, 3.0, 3.0])
    with pytest.raises(CheckpointError, match="spacing"):
        mitk.load(weights=[fold_run / "fold_0" / "best.safetensors", other], device="cpu")


def test_an_unfinished_fold_run_is_refused(fold_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "folds.json").write_text((fold_run / "folds.json").read_text())
    with pytest.raises(CheckpointError, match="fold_0, fold_1"):
        mitk.load(weights=run, device="cpu")


class Pointwise(torch.nn.Module):
    """Per voxel, two logits from the intensity alone: equivariant to every flip."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([batch, -batch], dim=1)


def test_tta_of_a_flip_equivariant_network_is_the_plain_output(fold_run: Path, brain_mr: Path) -> None:
    model = mitk.load(weights=fold_run / "fold_0" / "best.safetensors", device="cpu")
    unet = model.segment(brain_mr, probabilities=True).probabilities
    unet_tta = model.segment(brain_mr, probabilities=True, tta=True)
    assert unet_tta.passes == {"members": 1, "flips": 8, "total": 8}
    assert np.abs(unet_tta.probabilities - unet).max() > 1e-3  # the control: a real network is not equivariant
    model.loaded.network = Pointwise()
    model._runners.clear()
    plain = model.segment(brain_mr, probabilities=True)
    flipped = model.segment(brain_mr, probabilities=True, tta=True)
    np.testing.assert_allclose(flipped.probabilities, plain.probabilities, atol=1e-6)
    assert (flipped.label_map == plain.label_map).all()


def test_flip_sets_and_the_axes_kept(fold_run: Path) -> None:
    from mitk.tasks.segment.runner import SegmentationRunner

    assert flips((0, 1, 2), (8, 8, 8)) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert flips((0, 1, 2), (8, 8, 1)) == [(), (0,), (1,), (0, 1)]  # a one-slice axis is not flipped
    assert flips((), (8, 8)) == [()]
    model = mitk.load(weights=fold_run / "fold_0" / "best.safetensors", device="cpu")
    plugin, settings = model.loaded.plugin, model.settings
    assert plugin.tta_axes(settings) == (0, 1, 2)
    sided = {**settings, "labels": {"0": "background", "1": "left kidney", "2": "right_kidney"}}
    assert plugin.tta_axes(sided) == (1, 2)  # mirroring would swap the sides
    assert plugin.tta_axes({**settings, "augmentation": {**settings["augmentation"], "flip": 0.0}}) == ()
    assert plugin.tta_axes({**settings, "augmentation": {**settings["augmentation"], "flip_axes": [1]}}) == (1,)
    runner = SegmentationRunner(model.loaded, tta=True)
    assert runner.tta_axes((8, 8, 8)) == (0, 1, 2) and runner.tta_axes((8, 8, 1)) == (1, 2)  # a radiograph


class HalfMeans(torch.nn.Module):
    """Two logits: the mean of the image's first and second half along axis 0 (left-right in a radiograph)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        half = batch.shape[2] // 2
        return torch.stack([batch[:, :, :half].mean(dim=(1, 2, 3)), batch[:, :, half:].mean(dim=(1, 2, 3))], 1)


def classifier_checkpoint(path: Path, seed: int, augmentation: dict[str, object] | None = None) -> Path:
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("resnet", "classify").load()
    config = plugin.resolve_config({"class_names": ["left", "right"], "spatial_dims": 2, "in_channels": 1,
                                    "image_size": [64, 64], **({"augmentation": augmentation} if augmentation else {})})
    torch.manual_seed(seed)
    return save_checkpoint(path, plugin.network(config).state_dict(), task="classify", plugin="resnet",
                           plugin_version=None, config=config)


@pytest.fixture(scope="module")
def photograph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's real camera photograph (greyscale PNG), not symmetric left to right."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "camera.png"
    Image.fromarray(data.camera()[::4, ::4]).save(path)
    return path


def test_classification_tta_flips_only_what_training_flipped(photograph: Path, tmp_path: Path) -> None:
    """A classifier trained without flips gets the plain pass only (a flip it never saw changes its answer)."""
    untrained = mitk.load(weights=classifier_checkpoint(tmp_path / "plain.safetensors", 0), device="cpu")
    assert untrained.loaded.plugin.tta_axes(untrained.settings) == ()
    assert untrained.classify(photograph, tta=True).probabilities == untrained.classify(photograph).probabilities
    left_right = mitk.load(weights=classifier_checkpoint(tmp_path / "lr.safetensors", 0, {"flip": 0.5}),
                           device="cpu")  # 2-D default: trained to flip left-right, which TTA must not
    assert left_right.loaded.plugin.tta_axes(left_right.settings) == ()


def test_2d_classification_tta_never_flips_left_right(photograph: Path, tmp_path: Path) -> None:
    both = {"flip": 0.5, "flip_axes": [0, 1]}
    model = mitk.load(weights=classifier_checkpoint(tmp_path / "c.safetensors", 0, both), device="cpu")
    assert model.loaded.plugin.tta_axes(model.settings) == (1,)  # up-down only, although trained on both
    model.loaded.network = HalfMeans()
    plain = model.classify(photograph)
    flipped = model.classify(photograph, tta=True)
    assert flipped.passes == {"members": 1, "flips": 2, "total": 2}
    np.testing.assert_allclose(flipped.probabilities, plain.probabilities, atol=1e-6)
    assert abs(plain.probabilities[0] - 0.5) > 1e-3  # the halves differ: a left-right flip would change this


def test_classification_ensemble_and_uncertainty(photograph: Path, tmp_path: Path) -> None:
    from scipy.stats import entropy

    paths = [classifier_checkpoint(tmp_path / f"m{seed}.safetensors", seed) for seed in range(3)]
    rows = np.array([mitk.load(weights=p, device="cpu").classify(photograph).probabilities for p in paths])
    result = mitk.load(weights=paths, device="cpu").classify(photograph, uncertainty=True)
    mean = rows.mean(axis=0)
    np.testing.assert_allclose(result.probabilities, mean, atol=1e-6)
    record = result.record()["uncertainty"]
    assert set(record) == {"predictive_entropy", "mutual_information", "passes"} and record["passes"] == 3
    assert record["predictive_entropy"] == pytest.approx(entropy(mean), abs=1e-6)
    bald = entropy(mean) - np.mean([entropy(row) for row in rows])
    assert record["mutual_information"] == pytest.approx(bald, abs=1e-6) and bald > 0
    one = mitk.load(weights=paths[0], device="cpu").classify(photograph, uncertainty=True).record()["uncertainty"]
    assert one["mutual_information"] is None and one["passes"] == 1
    assert one["predictive_entropy"] == pytest.approx(entropy(rows[0]), abs=1e-6)


def test_registration_ensemble_averages_fields_and_reports_their_spread(anatomical_t1: Path) -> None:
    """Two members predicting constant fields: the mean field, and a spread of half their distance."""
    from test_register_learned import ConstantDisplacement, Learned

    from mitk.enums import Task
    from mitk.io.nifti import read_nifti
    from mitk.runner.model import LoadedModel
    from mitk.tasks.register.runner import RegistrationRunner

    class Shifted(ConstantDisplacement):
        def forward(self, pair: torch.Tensor) -> torch.Tensor:
            return super().forward(pair) + torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1, 1)

    fixed = read_nifti(anatomical_t1)
    plugin = Learned()
    members = (ConstantDisplacement().eval(), Shifted().eval())
    single = [RegistrationRunner(LoadedModel(name="learned", task=Task.REGISTER, plugin=plugin, config={},
                                             network=m, device=torch.device("cpu")))(fixed, fixed).displacement
              for m in members]
    model = LoadedModel(name="learned", task=Task.REGISTER, plugin=plugin, config={}, network=members[0],
                        device=torch.device("cpu"), members=members)
    result = RegistrationRunner(model)(fixed, fixed)
    assert single[0] is not None and single[1] is not None and result.displacement is not None
    np.testing.assert_allclose(result.displacement, (single[0] + single[1]) / 2, atol=1e-9)
    half = np.linalg.norm(single[1] - single[0], axis=-1) / 2  # each member is half the gap from the mean
    spread = result.metrics["spread"]
    assert spread["members"] == 2 and spread["mean_mm"] == pytest.approx(float(half.mean()), abs=1e-5)
    assert spread["max_mm"] == pytest.approx(float(half.max()), abs=1e-5) and spread["mean_mm"] > 1.0
