"""Overlay previews: size, visible labels, and the same anatomical picture whatever the stored axis order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from mitk.cli import app
from mitk.io.reader import load_image
from mitk.preview import DPI, PANEL_INCHES, label_colour, save_overlay_png, save_training_preview
from mitk.types import Image

PANEL = int(PANEL_INCHES * DPI)
LEGEND = 50


def read_png(path: Path) -> np.ndarray:
    return np.asarray(PILImage.open(path).convert("RGB")).astype(int)


def label_pixels(pixels: np.ndarray, value: int = 1) -> np.ndarray:
    """Pixels tinted towards the label's colour (red for label 1) above the legend strip."""
    red, green, blue = (np.asarray(label_colour(value)) * 255).astype(int)
    assert red > green and red > blue
    panels = pixels[:-LEGEND]
    return (panels[..., 0] - panels[..., 1] > 50) & (panels[..., 0] - panels[..., 2] > 30)


def test_overlay_size_and_visible_label(brain_mr: Path, brain_mr_label: Path, tmp_path: Path) -> None:
    image, label = load_image(brain_mr), load_image(brain_mr_label).array
    written = save_overlay_png(image, label, {1: "tumour"}, tmp_path / "overlay.png")
    empty = save_overlay_png(image, np.zeros_like(label), {1: "tumour"}, tmp_path / "empty.png")
    pixels, blank = read_png(written), read_png(empty)
    assert pixels.shape == (PANEL + LEGEND, 3 * PANEL, 3)
    assert pixels[:-LEGEND].std() > 20  # the anatomy is drawn, not a flat picture
    assert np.count_nonzero(label_pixels(pixels)) > 100
    assert np.count_nonzero(label_pixels(blank)) == 0
    # The legend carries the label's colour too.
    legend = pixels[-LEGEND:]
    assert np.any(np.all(np.abs(legend - np.array(label_colour(1)) * 255) < 3, axis=-1))


def reoriented(image: Image, label: np.ndarray, permutation: tuple[int, int, int],
               flips: tuple[bool, bool, bool]) -> tuple[Image, np.ndarray]:
    """The same voxels stored with axes permuted and flipped, the affine changed to match."""
    shape = np.asarray(image.array.shape)
    index_to_old = np.zeros((4, 4))
    index_to_old[3, 3] = 1
    for new_axis, old_axis in enumerate(permutation):
        index_to_old[old_axis, new_axis] = -1 if flips[new_axis] else 1
        index_to_old[old_axis, 3] = shape[old_axis] - 1 if flips[new_axis] else 0

    def move(array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, permutation)
        return np.ascontiguousarray(np.flip(out, tuple(a for a in range(3) if flips[a])))

    return Image(move(image.array), image.affine @ index_to_old), move(label)


def rotated_about_z(affine: np.ndarray, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation @ affine


@pytest.fixture(scope="module")
def t1_with_right_anterior_blob(anatomical_t1: Path) -> tuple[Image, np.ndarray]:
    """nibabel's real T1 (LAS) with a blob on the patient's right-anterior side, placed in world mm."""
    image = load_image(anatomical_t1)
    image.array = np.asarray(image.array, dtype=np.float32)
    grid = np.indices(image.array.shape).reshape(3, -1)
    world = (image.affine @ np.vstack([grid, np.ones(grid.shape[1])]))[:3].T
    centre = world.mean(axis=0) + np.array([18.0, 20.0, 0.0])  # +x is the patient's right, +y anterior
    blob = (np.linalg.norm(world - centre, axis=1) < 9.0).reshape(image.array.shape).astype(np.uint8)
    return image, blob


def test_display_is_anatomical_for_any_stored_orientation(t1_with_right_anterior_blob: tuple[Image, np.ndarray],
                                                           tmp_path: Path) -> None:
    image, blob = t1_with_right_anterior_blob
    reference = read_png(save_overlay_png(image, blob, {1: "blob"}, tmp_path / "las.png"))
    # Radiological display: the patient's right is on the viewer's left, anterior is up (axial panel).
    rows, columns = np.nonzero(label_pixels(reference)[:, :PANEL])
    assert columns.size > 20
    assert columns.mean() < PANEL / 2 and rows.mean() < PANEL / 2
    variants = {
        "lps": reoriented(image, blob, (0, 1, 2), (False, True, False)),  # LAS → LPS
        "ras": reoriented(image, blob, (0, 1, 2), (True, False, False)),
        "permuted": reoriented(image, blob, (2, 0, 1), (True, False, True)),
    }
    oblique = Image(image.array, rotated_about_z(image.affine, 12.0))
    variants["oblique"] = (oblique, blob)
    for name, (variant, variant_blob) in variants.items():
        assert variant.orientation != image.orientation or name == "oblique"
        pixels = read_png(save_overlay_png(variant, variant_blob, {1: "blob"}, tmp_path / f"{name}.png"))
        assert np.array_equal(pixels, reference), name


def test_training_preview_has_one_row_per_case(t1_with_right_anterior_blob: tuple[Image, np.ndarray],
                                               tmp_path: Path) -> None:
    image, blob = t1_with_right_anterior_blob
    path = save_training_preview([(image, blob), (image, np.zeros_like(blob))], {1: "blob"},
                                 tmp_path / "train.png", names=["a", "b"])
    pixels = read_png(path)
    assert pixels.shape == (2 * PANEL + LEGEND, 3 * PANEL, 3)
    tinted = label_pixels(pixels)
    assert np.count_nonzero(tinted[:PANEL]) > 20 and np.count_nonzero(tinted[PANEL:]) == 0


def test_shape_mismatch_is_refused(t1_with_right_anterior_blob: tuple[Image, np.ndarray], tmp_path: Path) -> None:
    image, blob = t1_with_right_anterior_blob
    with pytest.raises(ValueError, match="does not match"):
        save_overlay_png(image, blob[:-1], {1: "blob"}, tmp_path / "bad.png")


def test_segment_cli_writes_preview(brain_mr: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["segment", str(brain_mr), "--plugin", "threshold", "--output-dir",
                                      str(tmp_path), "--preview"])
    assert result.exit_code == 0, result.output
    pixels = read_png(tmp_path / "brain1_image_seg_preview.png")
    assert pixels.shape == (PANEL + LEGEND, 3 * PANEL, 3)
    assert np.count_nonzero(label_pixels(pixels)) > 100
