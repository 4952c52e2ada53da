"""`mitk evaluate segment`: metrics against hand and brute-force values, pairing, grids, and the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist
from typer.testing import CliRunner

from mitk.cli import app
from mitk.errors import GeometryError, UsageError
from mitk.tasks.segment.evaluation import (
    Pair,
    empty_masks,
    evaluate_files,
    evaluate_pair,
    json_number,
    pair_files,
    summarise,
)


def load_nifti(path: Path) -> Any:
    """``nibabel.load``, typed loosely (its stubs name a base class without affine or dataobj)."""
    return nib.load(path)


SPACING = (2.0, 1.0, 3.0)


def cube(shape: tuple[int, int, int], start: tuple[int, int, int], side: int = 10) -> np.ndarray:
    array = np.zeros(shape, dtype=np.int64)
    array[tuple(slice(s, s + side) for s in start)] = 1
    return array


def brute_force_surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...],
                                tolerance: float) -> dict[str, float]:
    """The documented definitions, computed directly: surface = voxels removed by a 6-connected erosion."""

    def surface_points(mask: np.ndarray) -> np.ndarray:
        return np.argwhere(mask & ~binary_erosion(mask)) * np.asarray(spacing)

    distances = cdist(surface_points(pred), surface_points(ref))
    pred_to_ref, ref_to_pred = distances.min(axis=1), distances.min(axis=0)
    pooled = np.concatenate([pred_to_ref, ref_to_pred])
    return {
        "hd95_mm": max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)),
        "asd_mm": pooled.mean(),
        "surface_dice_voxel": float(np.mean(pooled <= tolerance)),
    }


def test_offset_cubes_dice_and_iou_by_hand() -> None:
    ref = cube((20, 20, 20), (5, 5, 5))
    pred = cube((20, 20, 20), (7, 5, 5))  # shifted 2 voxels along i: overlap 8×10×10 = 800 voxels
    scores = evaluate_pair(pred, ref, SPACING, [1], tolerance=2.0)[1]
    assert scores["dice"] == pytest.approx(2 * 800 / 2000, abs=1e-6)
    assert scores["iou"] == pytest.approx(800 / 1200, abs=1e-6)
    assert scores["reference_volume_ml"] == pytest.approx(1000 * 6.0 / 1000)
    assert scores["predicted_volume_ml"] == pytest.approx(6.0)
    # The farthest any surface voxel is from the other surface: 2 voxels × 2 mm along i.
    assert 0 < scores["hd95_mm"] <= 4.0 + 1e-6


@pytest.mark.parametrize(("shift", "tolerance"), [((2, 0, 0), 2.0), ((0, 3, 1), 1.5), ((1, -2, 2), 4.0)])
def test_surface_metrics_match_brute_force_with_anisotropic_spacing(shift: tuple[int, int, int],
                                                                    tolerance: float) -> None:
    ref = cube((24, 24, 24), (6, 6, 6))
    ref[6:10, 6:16, 12:16] = 0  # a notch, so that distances are not all alike
    pred = np.roll(ref, shift, axis=(0, 1, 2))
    scores = evaluate_pair(pred, ref, SPACING, [1], tolerance=tolerance)[1]
    expected = brute_force_surface_metrics(pred == 1, ref == 1, SPACING, tolerance)
    assert scores["hd95_mm"] == pytest.approx(expected["hd95_mm"], rel=1e-5)
    assert scores["asd_mm"] == pytest.approx(expected["asd_mm"], rel=1e-5)
    assert scores["surface_dice_voxel"] == pytest.approx(expected["surface_dice_voxel"], abs=1e-6)
    overlap = np.count_nonzero((pred == 1) & (ref == 1))
    assert scores["dice"] == pytest.approx(2 * overlap / (2 * np.count_nonzero(ref)), abs=1e-6)


def test_spacing_scales_distances() -> None:
    ref = cube((20, 20, 20), (5, 5, 5))
    pred = cube((20, 20, 20), (7, 5, 5))
    unit = evaluate_pair(pred, ref, (1.0, 1.0, 1.0), [1])[1]
    doubled = evaluate_pair(pred, ref, (2.0, 2.0, 2.0), [1])[1]
    assert doubled["hd95_mm"] == pytest.approx(2 * unit["hd95_mm"], rel=1e-6)
    assert doubled["asd_mm"] == pytest.approx(2 * unit["asd_mm"], rel=1e-6)
    assert doubled["reference_volume_ml"] == pytest.approx(8 * unit["reference_volume_ml"])


def test_empty_masks_are_explicit() -> None:
    ref = cube((16, 16, 16), (3, 3, 3), side=6)
    pred = np.zeros_like(ref)
    scores = evaluate_pair(pred, ref, SPACING, [1, 2], tolerance=2.0)
    assert scores[1]["dice"] == 0.0 and scores[1]["surface_dice_voxel"] == 0.0
    assert math.isnan(scores[1]["hd95_mm"]) and math.isnan(scores[1]["asd_mm"])  # missed: undefined, not inf
    assert json_number(scores[1]["hd95_mm"]) is None
    assert empty_masks(scores[1]) == "prediction" and empty_masks(scores[2]) == "both"
    # Both empty: no metric is defined (nnU-Net's convention), only the volumes.
    assert all(math.isnan(scores[2][m]) for m in ("dice", "iou", "hd95_mm", "asd_mm", "surface_dice_voxel"))
    assert scores[2]["reference_volume_ml"] == 0.0 and scores[2]["predicted_volume_ml"] == 0.0
    # Without --labels only labels present in either map are scored.
    assert list(evaluate_pair(pred, ref, SPACING)) == [1]


SHAPE = (16, 16, 16)
DIAGONAL = math.sqrt((16 * 2.0) ** 2 + (16 * 1.0) ** 2 + (16 * 3.0) ** 2)  # field of view of SHAPE at SPACING


def four_cases(missing_distance: float | str | None = None) -> list[dict[int, dict[str, float]]]:
    """Label 1: a perfect case, a missed one, a false positive, and one with the label in neither map."""
    ref = cube(SHAPE, (3, 3, 3), side=6)
    empty = np.zeros_like(ref)
    return [evaluate_pair(a, b, SPACING, [1], missing_distance=missing_distance)  # type: ignore[arg-type]
            for a, b in ((ref, ref), (empty, ref), (ref, empty), (empty, empty))]


def test_summary_counts_cases_and_excludes_both_empty() -> None:
    summary = summarise(four_cases())[1]
    assert summary["cases"] == {"scored": 4, "empty_prediction": 1, "empty_reference": 1, "both_empty": 1}
    # Dice 1, 0, 0 enter; the both-empty case does not (it would add a flattering 1).
    assert summary["dice"] == {"mean": pytest.approx(1 / 3, abs=1e-6), "std": pytest.approx(math.sqrt(2) / 3, abs=1e-6),
                               "median": 0.0, "n": 3}
    assert summary["surface_dice_voxel"]["n"] == 3 and summary["iou"]["mean"] == pytest.approx(1 / 3)
    # Distances: only the perfect case has one; the two one-empty cases are counted as missing.
    assert summary["hd95_mm"] == {"mean": 0.0, "std": 0.0, "median": 0.0, "n": 1, "missing": 2, "penalised": 0}
    assert summary["asd_mm"]["missing"] == 2
    assert summary["reference_volume_ml"]["n"] == 4  # volumes are defined for every case


def test_missing_distance_worst_and_fixed_penalty() -> None:
    cases = four_cases("worst")
    assert cases[1][1]["hd95_mm"] == pytest.approx(DIAGONAL) and cases[2][1]["asd_mm"] == pytest.approx(DIAGONAL)
    assert math.isnan(cases[3][1]["hd95_mm"])  # both empty stays out
    hd95 = summarise(cases)[1]["hd95_mm"]
    assert hd95["n"] == 3 and hd95["missing"] == 0 and hd95["penalised"] == 2
    assert hd95["mean"] == pytest.approx(2 * DIAGONAL / 3, abs=1e-5)
    fixed = summarise(four_cases(50.0))[1]["asd_mm"]
    assert fixed["mean"] == pytest.approx(100 / 3, abs=1e-5) and fixed["median"] == 50.0
    with pytest.raises(ValueError, match="missing_distance"):
        four_cases(-1.0)


def test_surface_dice_counts_boundary_voxels_by_hand() -> None:
    """Two 4-voxel cubes one voxel apart (1 mm voxels), tolerance 0: each has 56 boundary voxels
    (64 less the 2×2×2 core), of which 12 + 12 + 12 lie on the other's boundary → 72 / 112."""
    ref = cube((8, 8, 8), (2, 2, 2), side=4)
    pred = cube((8, 8, 8), (3, 2, 2), side=4)
    scores = evaluate_pair(pred, ref, (1.0, 1.0, 1.0), [1], tolerance=0.0)[1]
    assert "surface_dice" not in scores
    assert scores["surface_dice_voxel"] == pytest.approx(72 / 112, abs=1e-6)
    assert scores["dice"] == pytest.approx(2 * 48 / 128)


def test_labels_scored_separately() -> None:
    ref = cube((20, 20, 20), (2, 2, 2), side=6) + 2 * cube((20, 20, 20), (11, 11, 11), side=6)
    pred = ref.copy()
    pred[pred == 2] = 0
    scores = evaluate_pair(pred, ref, SPACING)
    assert scores[1]["dice"] == pytest.approx(1.0) and scores[1]["hd95_mm"] == 0.0
    assert scores[2]["dice"] == 0.0


def test_pairing_rule(tmp_path: Path) -> None:
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for name in ("a_seg.nii.gz", "a_seg_prob.nii.gz", "b.nii.gz", "c_seg.nii.gz", "notes.txt"):
        (pred_dir / name).touch()
    for name in ("a.nii.gz", "a_label.nii.gz", "b.nii.gz", "d_label.nii"):
        (ref_dir / name).touch()
    pairing = pair_files(pred_dir, ref_dir)
    assert [(p.case, p.prediction.name, p.reference.name) for p in pairing.pairs] == [
        ("a", "a_seg.nii.gz", "a_label.nii.gz"), ("b", "b.nii.gz", "b.nii.gz")]
    assert [p.name for p in pairing.unpaired_predictions] == ["c_seg.nii.gz"]
    assert sorted(p.name for p in pairing.unpaired_references) == ["a.nii.gz", "d_label.nii"]
    with pytest.raises(UsageError, match="both"):
        pair_files(pred_dir / "a_seg.nii.gz", ref_dir)


# ---------------------------------------------------------------------------------------------------
# Real data: the pyradiomics brain tumour label as reference
# ---------------------------------------------------------------------------------------------------


def write_like(array: np.ndarray, reference: Path, path: Path, affine: np.ndarray | None = None) -> Path:
    source = load_nifti(reference)
    image = nib.Nifti1Image(array.astype(np.uint8), source.affine if affine is None else affine)
    nib.save(image, path)
    return path


def shrunk_and_shifted(label: np.ndarray) -> np.ndarray:
    """The reference eroded by one voxel in-plane (slices are 6.5 mm thick) and shifted 2 voxels along i."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    return np.roll(binary_erosion(label > 0, structure=in_plane), 2, axis=0).astype(np.uint8)


@pytest.fixture(scope="module")
def tumour_case(brain_mr_label: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    pred_dir, ref_dir = root / "pred", root / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    reference = shutil.copy(brain_mr_label, ref_dir / "brain1_label.nii.gz")
    label = np.asanyarray(load_nifti(brain_mr_label).dataobj)
    prediction = write_like(shrunk_and_shifted(label), brain_mr_label, pred_dir / "brain1_seg.nii.gz")
    return {"root": root, "pred_dir": pred_dir, "ref_dir": ref_dir, "reference": Path(reference),
            "prediction": prediction}


def test_cli_end_to_end_on_real_label(tumour_case: dict[str, Path], mitk_cli) -> None:
    csv_path = tumour_case["root"] / "scores.csv"
    done = mitk_cli("evaluate", "segment", "--pred", str(tumour_case["pred_dir"]), "--ref",
                    str(tumour_case["ref_dir"]), "--json", "--csv", str(csv_path), "--tolerance", "1.5")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    (case,) = document["cases"]
    assert case["status"] == "ok" and case["case"] == "brain1" and case["resampled"] is False
    (row,) = case["labels"]

    reference = load_nifti(tumour_case["reference"])
    ref = np.asanyarray(reference.dataobj) > 0
    pred = np.asanyarray(load_nifti(tumour_case["prediction"]).dataobj) > 0
    spacing = tuple(float(s) for s in np.linalg.norm(reference.affine[:3, :3], axis=0))
    overlap = np.count_nonzero(pred & ref)
    dice = 2 * overlap / (np.count_nonzero(pred) + np.count_nonzero(ref))
    assert 0.3 < dice < 0.95
    assert row["dice"] == pytest.approx(dice, abs=1e-5)
    assert row["iou"] == pytest.approx(overlap / np.count_nonzero(pred | ref), abs=1e-5)
    expected = brute_force_surface_metrics(pred, ref, spacing, 1.5)
    assert row["hd95_mm"] == pytest.approx(expected["hd95_mm"], rel=1e-4)
    assert row["asd_mm"] == pytest.approx(expected["asd_mm"], rel=1e-4)
    assert row["surface_dice_voxel"] == pytest.approx(expected["surface_dice_voxel"], abs=1e-5)
    voxel_ml = abs(np.linalg.det(reference.affine[:3, :3])) / 1000
    assert row["reference_volume_ml"] == pytest.approx(np.count_nonzero(ref) * voxel_ml, rel=1e-5)
    assert document["summary"]["1"]["dice"]["mean"] == pytest.approx(dice, abs=1e-5)
    assert document["exit_code"] == 0

    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["case"] == "brain1"
    assert float(rows[0]["dice"]) == pytest.approx(dice, abs=1e-5)


def test_cli_table_csv_refusal_and_partial_failure(tumour_case: dict[str, Path], tmp_path: Path) -> None:
    pred_dir = tmp_path / "pred"
    shutil.copytree(tumour_case["pred_dir"], pred_dir)
    shutil.copy(tumour_case["prediction"], pred_dir / "other_seg.nii.gz")  # no reference for this one
    csv_path = tmp_path / "scores.csv"
    csv_path.write_text("keep me")
    runner = CliRunner()
    args = ["evaluate", "segment", "--pred", str(pred_dir), "--ref", str(tumour_case["ref_dir"])]
    refused = runner.invoke(app, [*args, "--csv", str(csv_path)])
    assert refused.exit_code != 0 and csv_path.read_text() == "keep me"

    result = runner.invoke(app, [*args, "--csv", str(csv_path), "--overwrite"])
    assert result.exit_code == 3, result.output  # one pair scored, one prediction unpaired
    assert "brain1" in result.stdout and "mean" in result.stdout
    assert "other_seg.nii.gz" in result.stderr and "no reference" in result.stderr
    assert csv_path.read_text().startswith("case,prediction,reference,label,empty,dice")


def test_mismatched_grid_is_refused_or_resampled(tumour_case: dict[str, Path], tmp_path: Path) -> None:
    reference = load_nifti(tumour_case["reference"])
    label = np.asanyarray(reference.dataobj).astype(np.uint8)
    # The same labels stored in RAS order (axis 0 flipped), cropped in-plane so the grids differ in
    # shape and origin; the crop cuts through nothing but background.
    found = np.argwhere(label > 0)
    lo, hi = found.min(axis=0)[:2] - 5, found.max(axis=0)[:2] + 6
    flipped = label[::-1, :, :]
    start_i = label.shape[0] - hi[0]
    cropped = flipped[start_i: label.shape[0] - lo[0], lo[1]:hi[1], :]
    to_flipped = np.eye(4)
    to_flipped[0, 0], to_flipped[0, 3] = -1, label.shape[0] - 1
    shift = np.eye(4)
    shift[:3, 3] = [start_i, lo[1], 0]
    affine = reference.affine @ to_flipped @ shift
    prediction = write_like(cropped, tumour_case["reference"], tmp_path / "brain1_seg.nii.gz", affine=affine)
    pair = Pair("brain1", prediction, tumour_case["reference"])

    with pytest.raises(GeometryError) as error:
        evaluate_files(pair)
    assert str(prediction) in str(error.value) and str(tumour_case["reference"]) in str(error.value)
    assert "--resample-pred" in str(error.value)

    scores = evaluate_files(pair, resample_pred=True)
    assert scores["resampled"] is True
    assert scores["scores"][1]["dice"] == pytest.approx(1.0) and scores["scores"][1]["hd95_mm"] == 0.0

    # A crop that cuts the lesion: outside the prediction's field of view reads background.
    half = cropped.copy()
    half[: half.shape[0] // 2] = 0
    partial = write_like(half[half.shape[0] // 2:], tumour_case["reference"], tmp_path / "half_seg.nii.gz",
                         affine=affine @ np.array([[1, 0, 0, half.shape[0] // 2], [0, 1, 0, 0], [0, 0, 1, 0],
                                                   [0, 0, 0, 1]]))
    scores = evaluate_files(Pair("half", partial, tumour_case["reference"]), resample_pred=True)["scores"][1]
    kept = np.count_nonzero(half)
    assert scores["predicted_volume_ml"] == pytest.approx(kept * abs(np.linalg.det(reference.affine[:3, :3])) / 1000)

    result = CliRunner().invoke(app, ["evaluate", "segment", "--pred", str(prediction), "--ref",
                                      str(tumour_case["reference"])])
    assert result.exit_code == 1
    assert "not on one grid" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------------
# The CLI: what the summary says, and never writing over an input
# ---------------------------------------------------------------------------------------------------


def save_label(array: np.ndarray, path: Path, spacing: tuple[float, float, float] = SPACING) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*spacing, 1.0])), path)
    return path


@pytest.fixture
def four_case_folders(tmp_path: Path) -> tuple[Path, Path]:
    """The cases of :func:`four_cases` as files: perfect, missed, false positive, both empty (label 1)."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    ref = cube(SHAPE, (3, 3, 3), side=6)
    empty = np.zeros_like(ref)
    for name, pred, reference in (("a", ref, ref), ("b", empty, ref), ("c", ref, empty), ("d", empty, empty)):
        save_label(pred, pred_dir / f"{name}_seg.nii.gz")
        save_label(reference, ref_dir / f"{name}_label.nii.gz")
    return pred_dir, ref_dir


def test_cli_summary_reports_counts_missing_and_penalties(four_case_folders: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    pred_dir, ref_dir = four_case_folders
    args = ["evaluate", "segment", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", "1"]
    code, stdout, stderr = invoke([*args, "--json", "--summary-csv", str(tmp_path / "summary.csv"),
                                   "--csv", str(tmp_path / "cases.csv")])
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["missing_distance"] == "nan" and "both_empty" in document["conventions"]
    summary = document["summary"]["1"]
    assert summary["cases"] == {"scored": 4, "empty_prediction": 1, "empty_reference": 1, "both_empty": 1}
    assert summary["dice"]["n"] == 3 and summary["dice"]["mean"] == pytest.approx(1 / 3, abs=1e-6)
    assert summary["hd95_mm"] == {"mean": 0.0, "std": 0.0, "median": 0.0, "n": 1, "missing": 2, "penalised": 0}
    rows = {row["case"]: row for case in document["cases"] for row in case["labels"]}
    assert [rows[c]["empty"] for c in "abcd"] == ["none", "prediction", "reference", "both"]
    assert rows["b"]["hd95_mm"] is None and rows["d"]["dice"] is None and rows["b"]["dice"] == 0.0

    with (tmp_path / "summary.csv").open(newline="") as handle:
        by_metric = {row["metric"]: row for row in csv.DictReader(handle)}
    assert by_metric["hd95_mm"]["n"] == "1" and by_metric["hd95_mm"]["missing"] == "2"
    assert by_metric["dice"]["both_empty"] == "1" and by_metric["dice"]["cases"] == "4"
    assert by_metric["dice"]["missing_distance"] == "nan"
    with (tmp_path / "cases.csv").open(newline="") as handle:
        assert [row["empty"] for row in csv.DictReader(handle)] == ["none", "prediction", "reference", "both"]

    # The table says what each mean rests on.
    code, stdout, _ = invoke(args)
    assert code == 0
    assert "4 cases, 1 empty prediction, 1 empty reference, 1 both empty" in " ".join(stdout.split())
    assert "2 with one mask empty left out" in " ".join(stdout.split())

    code, stdout, _ = invoke([*args, "--json", "--missing-distance", "worst"])
    document = json.loads(stdout)
    hd95 = document["summary"]["1"]["hd95_mm"]
    assert hd95["n"] == 3 and hd95["penalised"] == 2 and hd95["mean"] == pytest.approx(2 * DIAGONAL / 3, abs=1e-5)
    assert document["cases"][1]["field_of_view_diagonal_mm"] == pytest.approx(DIAGONAL, abs=1e-5)
    code, stdout, _ = invoke([*args, "--missing-distance", "40"])
    assert "2 with one mask empty counted as 40 mm" in " ".join(stdout.split())

    code, _, stderr = invoke([*args, "--missing-distance", "far"])
    assert code == 2 and "--missing-distance" in stderr and len(stderr.strip().splitlines()) == 1


def test_cli_real_label_missed_case_with_worst_penalty(brain_mr_label: Path, tmp_path: Path) -> None:
    reference = load_nifti(brain_mr_label)
    prediction = write_like(np.zeros(reference.shape, dtype=np.uint8), brain_mr_label, tmp_path / "brain1_seg.nii.gz")
    args = ["evaluate", "segment", "--pred", str(prediction), "--ref", str(brain_mr_label), "--json"]
    code, stdout, stderr = invoke(args)
    assert code == 0, stderr
    (row,) = json.loads(stdout)["cases"][0]["labels"]
    assert row["empty"] == "prediction" and row["dice"] == 0.0 and row["hd95_mm"] is None

    code, stdout, _ = invoke([*args, "--missing-distance", "worst"])
    document = json.loads(stdout)
    spacing = np.linalg.norm(reference.affine[:3, :3], axis=0)
    diagonal = float(np.linalg.norm(np.asarray(reference.shape) * spacing))  # 256×256×25 voxels
    assert document["cases"][0]["labels"][0]["hd95_mm"] == pytest.approx(diagonal, abs=1e-4)
    assert document["summary"]["1"]["asd_mm"]["penalised"] == 1


def test_cli_refuses_to_write_over_any_input(four_case_folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, ref_dir = four_case_folders
    prediction, reference = pred_dir / "a_seg.nii.gz", ref_dir / "b_label.nii.gz"
    symlink = tmp_path / "link.csv"
    symlink.symlink_to(reference)
    hard_link = tmp_path / "hard.csv"
    hard_link.hardlink_to(prediction)
    before = {path: path.read_bytes() for path in (prediction, reference)}
    folders = ["--pred", str(pred_dir), "--ref", str(ref_dir)]
    files = ["--pred", str(prediction), "--ref", str(ref_dir / "a_label.nii.gz")]
    attempts = [
        [*folders, "--csv", str(prediction), "--overwrite"],
        [*folders, "--csv", str(reference)],
        [*folders, "--csv", str(pred_dir / ".." / "ref" / "b_label.nii.gz"), "--overwrite"],
        [*folders, "--csv", str(symlink), "--overwrite"],
        [*folders, "--csv", str(hard_link), "--overwrite"],
        [*folders, "--summary-csv", str(reference), "--overwrite"],
        [*files, "--csv", str(ref_dir / "a_label.nii.gz"), "--overwrite"],
        [*files, "--summary-csv", str(prediction), "--overwrite", "--json"],
    ]
    for attempt in attempts:
        code, stdout, stderr = invoke(["evaluate", "segment", *attempt])
        assert code == 2, (attempt, stderr)
        assert "is an input of this command" in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert stdout == ""
    assert all(path.read_bytes() == data for path, data in before.items())
    assert symlink.is_symlink() and hard_link.stat().st_nlink == 2

    same = tmp_path / "scores.csv"
    code, _, stderr = invoke(["evaluate", "segment", *files, "--csv", str(same), "--summary-csv", str(same)])
    assert code == 2 and not same.exists()
    # A fresh file next to the inputs is fine.
    code, _, stderr = invoke(["evaluate", "segment", *folders, "--labels", "1", "--csv", str(pred_dir / "s.csv")])
    assert code == 0, stderr
    assert (pred_dir / "s.csv").read_text().startswith("case,")


def test_files_inside_an_image_folder_are_inputs(tmp_path: Path) -> None:
    """A DICOM series given as a folder: every file in it is an input, however it is reached."""
    from mitk.evaluation.outputs import input_files, refuse_overwriting_inputs

    series = tmp_path / "series" / "sub"
    series.mkdir(parents=True)
    (series / "IM0001").write_bytes(b"dicom")
    (tmp_path / "alias").symlink_to(tmp_path / "series")
    inputs = input_files([tmp_path / "series"])
    with pytest.raises(UsageError, match="is an input"):
        refuse_overwriting_inputs(tmp_path / "alias" / "sub" / "IM0001", "--csv", inputs)
    refuse_overwriting_inputs(tmp_path / "series" / "scores.csv", "--csv", inputs)  # a new file is fine


def test_the_overlay_pictures_beside_the_predictions_are_not_predictions(lung_ct: Path, lung_ct_label: Path,
                                                                         tmp_path: Path) -> None:
    """`mitk segment --preview -d pred` writes `<case>_seg_preview.png` beside `<case>_seg.nii.gz`: evaluating
    that folder (the README's main command) scores the label maps only."""
    code, _, err = invoke(["segment", str(lung_ct), "--plugin", "threshold", "-d", str(tmp_path / "pred"),
                           "--preview"])
    assert code == 0, err
    assert (tmp_path / "pred" / "lung1_image_seg_preview.png").is_file()
    (tmp_path / "ref").mkdir()
    shutil.copy(lung_ct_label, tmp_path / "ref" / "lung1_image.nii.gz")
    code, out, err = invoke(["evaluate", "segment", "--pred", str(tmp_path / "pred"), "--ref",
                             str(tmp_path / "ref"), "--json"])
    assert code == 0, err
    assert [case["case"] for case in json.loads(out)["cases"]] == ["lung1_image"]
