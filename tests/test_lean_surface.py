"""The NumPy/SciPy segmentation metrics equal MONAI's own functions, and `mitk evaluate segment` needs no torch.

MONAI is the reference here: each value of :mod:`mitk.evaluation.surface` (through
:func:`mitk.tasks.segment.evaluation.evaluate_pair`) is compared with ``compute_dice``, ``compute_iou``,
``compute_hausdorff_distance``, ``compute_average_surface_distance`` and ``compute_surface_dice`` on real
labels and masks: the lesion labels of tests/data, the body of the CT (which touches the grid's border), and
real variations of them (shifted, eroded, dilated, mirrored), at the files' anisotropic spacing and at an odd
one, with tolerances that fall exactly on a distance.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from test_startup import imported_heavy_modules

from mitk.evaluation.surface import surface_scores
from mitk.tasks.segment.evaluation import evaluate_pair


def monai_scores(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> dict[str, float]:
    """MONAI's metrics for two boolean masks, as a (batch 1, channel 1) one-hot pair on CPU."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    y_pred = torch.from_numpy(np.ascontiguousarray(pred)[None, None]).float()
    y = torch.from_numpy(np.ascontiguousarray(ref)[None, None]).float()
    space = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(y_pred, y, include_background=True)[0, 0]),
            "iou": float(compute_iou(y_pred, y, include_background=True)[0, 0]),
            "hd95_mm": float(compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95,
                                                        spacing=space)[0, 0]),
            "asd_mm": float(compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True,
                                                             spacing=space)[0, 0]),
            "surface_dice_voxel": float(compute_surface_dice(y_pred, y, class_thresholds=[tolerance],
                                                             include_background=True, spacing=space,
                                                             use_subvoxels=False)[0, 0]),
        }


def variations(mask: np.ndarray) -> dict[str, np.ndarray]:
    return {"same": mask.copy(), "shifted": np.roll(mask, (2, -1, 1), axis=(0, 1, 2)),
            "eroded": ndimage.binary_erosion(mask), "dilated": ndimage.binary_dilation(mask, iterations=3),
            "mirrored": mask[::-1]}


@pytest.fixture(scope="module")
def real_masks(lung_ct: Path, lung_ct_label: Path, brain_mr_label: Path) -> list[tuple[str, np.ndarray, tuple]]:
    masks = []
    for name, path in (("lung-lesion", lung_ct_label), ("brain-tumour", brain_mr_label)):
        image = nib.load(path)
        masks.append((name, np.asarray(image.dataobj) > 0, tuple(float(z) for z in image.header.get_zooms())))
    ct = nib.load(lung_ct)  # a corner of the body, which runs into the grid's border
    masks.append(("ct-body", np.asarray(ct.dataobj)[:48, :48, :12] > -300,
                  tuple(float(z) for z in ct.header.get_zooms())))
    return masks


def test_every_metric_equals_monai_on_real_masks(real_masks: list[tuple[str, np.ndarray, tuple]]) -> None:
    compared = 0
    for name, ref, file_spacing in real_masks:
        for variation, pred in variations(ref).items():
            assert pred.any()
            # the file's spacing with a tolerance equal to a distance that occurs (two in-plane steps), and an
            # odd spacing whose distances are not exact in binary, at 2 mm
            for spacing, tolerance in ((file_spacing, 2 * file_spacing[0]), ((0.7, 1.3, 2.9), 2.0)):
                label_map, reference = pred.astype(np.int16), ref.astype(np.int16)
                ours = evaluate_pair(label_map, reference, spacing, labels=[1], tolerance=tolerance)[1]
                theirs = monai_scores(pred, ref, spacing, tolerance)
                for metric, value in theirs.items():
                    assert ours[metric] == pytest.approx(value, rel=1e-6, abs=1e-6), (name, variation, spacing,
                                                                                     metric)
                compared += 1
    assert compared == 3 * 5 * 2


def test_two_labels_score_as_monai_scores_each(lung_ct_label: Path) -> None:
    image = nib.load(lung_ct_label)
    spacing = tuple(float(z) for z in image.header.get_zooms())
    lesion = np.asarray(image.dataobj) > 0
    ref = lesion.astype(np.int64) + ndimage.binary_erosion(lesion)  # 2 = the core, 1 = the rim
    pred = np.roll(ref, 1, axis=0)
    ours = evaluate_pair(pred, ref, spacing, tolerance=0.5)
    assert sorted(ours) == [1, 2]
    for label in (1, 2):
        theirs = monai_scores(pred == label, ref == label, spacing, 0.5)
        assert {m: ours[label][m] for m in theirs} == pytest.approx(theirs, rel=1e-6, abs=1e-6)
    assert 0 < ours[1]["surface_dice_voxel"] < 1


def test_surface_scores_refuse_empty_masks_and_wrong_spacing() -> None:
    """Empty masks are the caller's decision (NaN or a penalty), never a distance made up here."""
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    with pytest.raises(ValueError, match="non-empty"):
        surface_scores(mask, np.zeros_like(mask), (1.0, 1.0, 1.0), 2.0)
    with pytest.raises(ValueError, match="spacing"):
        surface_scores(mask, mask, (1.0, 1.0), 2.0)


def test_evaluate_segment_imports_neither_torch_nor_monai(tmp_path: Path, lung_ct_label: Path,
                                                          brain_mr_label: Path) -> None:
    """A file pair and a folder pair, with the CSV tables, the summary and a missed case."""
    preds, refs = tmp_path / "pred", tmp_path / "ref"
    preds.mkdir()
    refs.mkdir()
    for source, case in ((lung_ct_label, "lung"), (brain_mr_label, "brain")):
        image = nib.load(source)
        label = np.asarray(image.dataobj)
        nib.save(nib.Nifti1Image(label, image.affine), refs / f"{case}_label.nii.gz")
        nib.save(nib.Nifti1Image(np.roll(label, 1, axis=0) if case == "lung" else np.zeros_like(label),
                                 image.affine), preds / f"{case}_seg.nii.gz")
    assert imported_heavy_modules(tmp_path, "evaluate", "segment", "--pred", str(preds / "lung_seg.nii.gz"),
                                  "--ref", str(refs / "lung_label.nii.gz"), "--json") == []
    assert imported_heavy_modules(tmp_path, "evaluate", "segment", "--pred", str(preds), "--ref", str(refs),
                                  "--csv", str(tmp_path / "cases.csv"), "--summary-csv",
                                  str(tmp_path / "summary.csv"), "--missing-distance", "worst") == []
    rows = (tmp_path / "cases.csv").read_text().splitlines()
    assert len(rows) == 3 and (tmp_path / "summary.csv").is_file()


def test_report_and_evaluate_classify_import_neither_torch_nor_monai(tmp_path: Path, lung_ct: Path) -> None:
    """`mitk report` over a classical batch (its folder and its manifest), `mitk evaluate classify` on a table."""
    assert imported_heavy_modules(tmp_path, "segment", str(lung_ct), "--plugin", "threshold", "-d",
                                  str(tmp_path / "seg"), "--manifest", str(tmp_path / "m.jsonl")) == []
    assert imported_heavy_modules(tmp_path, "report", str(tmp_path / "seg"), "-o", str(tmp_path / "a.html")) == []
    assert imported_heavy_modules(tmp_path, "report", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "b.html")) == []
    assert (tmp_path / "a.html").is_file() and (tmp_path / "b.html").is_file()
    (tmp_path / "pred.csv").write_text("input,predicted,prob_a,prob_b\nx1.nii.gz,a,0.8,0.2\nx2.nii.gz,b,0.3,0.7\n"
                                       "x3.nii.gz,a,0.6,0.4\n")
    (tmp_path / "ref.csv").write_text("image,label\nx1.nii.gz,a\nx2.nii.gz,b\nx3.nii.gz,b\n")
    assert imported_heavy_modules(tmp_path, "evaluate", "classify", "--pred", str(tmp_path / "pred.csv"), "--ref",
                                  str(tmp_path / "ref.csv"), "--csv", str(tmp_path / "classes.csv")) == []
    assert (tmp_path / "classes.csv").is_file()
