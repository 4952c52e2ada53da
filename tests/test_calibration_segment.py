"""``mitk evaluate segment`` with probability maps beside the predictions: voxel ECE, entropy-vs-error AUC and the
ranking of cases by mean entropy, checked against scikit-learn and SciPy over every voxel. The references are the
real hand-drawn lesions of tests/data; the probability maps are the blurred reference masks (soft at the border,
like a network's), one of them shifted to make a worse case."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke

from mitk.evaluation.calibration import expected_calibration_error

BRAIN = (slice(38, 92), slice(24, 100), slice(9, 20))
LUNG = (slice(44, 84), slice(42, 86), slice(28, 38))
"""Boxes around the lesions (lesions kept whole), so that every voxel can be checked quickly."""


def _case(label: Path, crop: tuple[slice, ...], shift: int, sigma: float, folders: tuple[Path, Path], name: str
          ) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    pred_dir, ref_dir = folders
    source = nib.load(label)
    reference = (np.asarray(source.dataobj) > 0).astype(np.int16)[crop]
    affine = source.affine.copy()
    affine[:3, 3] = source.affine[:3, :3] @ [s.start for s in crop] + source.affine[:3, 3]
    foreground = np.clip(gaussian_filter(np.roll(reference, shift, axis=0).astype(np.float32), sigma), 0, 1)
    probabilities = np.stack([1 - foreground, foreground], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(reference, affine), ref_dir / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(probabilities.argmax(-1).astype(np.int16), affine), pred_dir / f"{name}_seg.nii.gz")
    nib.save(nib.Nifti1Image(probabilities, affine), pred_dir / f"{name}_seg_prob.nii.gz")
    return np.stack([probabilities.reshape(-1, 2).max(axis=1), (probabilities.reshape(-1, 2).argmax(axis=1)
                                                               == reference.reshape(-1))], axis=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    root = tmp_path_factory.mktemp("calseg")
    pred_dir, ref_dir = root / "pred", root / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    data = Path(__file__).parent / "data"
    voxels = [_case(data / "brain1_label.nii.gz", BRAIN, 0, 1.0, (pred_dir, ref_dir), "brain"),
              _case(data / "lung1_label.nii.gz", LUNG, 0, 1.5, (pred_dir, ref_dir), "lung"),
              _case(data / "brain1_label.nii.gz", BRAIN, 3, 2.0, (pred_dir, ref_dir), "brain_shifted")]
    return pred_dir, ref_dir, voxels


def test_voxel_calibration_over_every_voxel(folders: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.stats import entropy, spearmanr
    from sklearn.metrics import roc_auc_score

    from mitk.tasks.segment import calibration

    pred_dir, ref_dir, voxels = folders
    monkeypatch.setattr(calibration, "SAMPLE_VOXELS", 10**7)  # every voxel: the pooled values are exact
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", str(pred_dir), "--ref", str(ref_dir), "--json"])
    assert code == 0, stderr
    document = json.loads(stdout)
    assert [c["status"] for c in document["cases"]] == ["ok"] * 3  # the _prob maps are not taken as predictions
    pooled = np.concatenate(voxels)
    confidence, correct = pooled[:, 0], pooled[:, 1].astype(bool)
    summary = document["calibration"]
    assert summary["voxels"]["decisions"] == confidence.size
    assert summary["voxels"]["ece"] == pytest.approx(expected_calibration_error(confidence, correct), abs=1e-5)
    assert summary["voxels"]["ece"] > 0.001  # a blurred mask is not calibrated
    probs = np.stack([confidence, 1 - confidence], axis=1)  # two classes: entropy of (max, 1 - max)
    assert summary["voxels"]["uncertainty_auc"] == pytest.approx(
        roc_auc_score(~correct, entropy(probs, axis=1)), abs=1e-4)
    assert summary["voxels"]["uncertainty_auc"] > 0.9  # the errors sit at the soft border
    by_case = {Path(c["prediction"]).name: c for c in document["cases"]}
    dice = [np.mean([row["dice"] for row in by_case[f"{n}_seg.nii.gz"]["labels"]]) for n in
            ("brain", "lung", "brain_shifted")]
    entropies = [by_case[f"{n}_seg.nii.gz"]["mean_entropy"] for n in ("brain", "lung", "brain_shifted")]
    ranking = summary["mean_entropy_vs_1_minus_dice"]
    assert ranking["cases"] == 3
    assert ranking["spearman"] == pytest.approx(spearmanr(entropies, 1 - np.asarray(dice)).statistic)


def test_bounded_sample_and_text_output(folders: tuple) -> None:
    pred_dir, ref_dir, voxels = folders
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", str(pred_dir), "--ref", str(ref_dir), "--json"])
    assert code == 0, stderr
    summary = json.loads(stdout)["calibration"]
    assert summary["voxels"]["decisions"] == 3 * 10_000  # each case sampled, never every voxel
    assert all(v.shape[0] > 10_000 for v in voxels)
    every = np.concatenate(voxels)
    exact = expected_calibration_error(every[:, 0], every[:, 1].astype(bool))
    assert summary["voxels"]["ece"] == pytest.approx(exact, abs=0.01)  # the sample estimates the whole
    code, stdout, _ = invoke(["evaluate", "segment", "--pred", str(pred_dir), "--ref", str(ref_dir)])
    assert code == 0 and "calibration (all voxels" in stdout and "Spearman" in stdout


def test_a_probability_map_off_the_grid_is_left_out(folders: tuple, tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = folders
    bad = tmp_path / "pred"
    bad.mkdir()
    for path in pred_dir.iterdir():
        (bad / path.name).write_bytes(path.read_bytes())
    image = nib.load(bad / "lung_seg_prob.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-1], image.affine), bad / "lung_seg_prob.nii.gz")
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", str(bad), "--ref", str(ref_dir), "--json"])
    document = json.loads(stdout)
    assert code == 0 and [c["status"] for c in document["cases"]] == ["ok"] * 3  # every label map still scored
    skipped = [c for c in document["cases"] if "calibration_skipped" in c]
    assert len(skipped) == 1 and "not on the reference grid" in skipped[0]["calibration_skipped"]
    assert "not on the reference grid" in stderr and document["calibration"]["cases"] == 2
