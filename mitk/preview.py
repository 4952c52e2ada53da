"""Overlay previews: label maps drawn over axial, coronal and sagittal slices, as a PNG.

Views are shown the radiological way whatever the stored axis order: the array is first turned to the
closest RAS axis order using its affine (an oblique volume is shown along its nearest anatomical axes,
not resampled); then the patient's right is on the viewer's left (axial, coronal), anterior is on the
left (sagittal), superior and anterior are up. Pixels keep their physical aspect ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitk.extras import require_module
from mitk.image import Image

LABEL_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
)
"""The first twelve label colours (label 1 is the first); later labels get :func:`label_colour`'s extra hues."""
LEGEND_COLUMNS = 6
LEGEND_ROW_INCHES = 0.2
FILL_ALPHA = 0.4
PANEL_INCHES = 4.0
DPI = 100
VIEWS = ("axial", "coronal", "sagittal")
# Letters at the (left, right, top, bottom) edges of each view.
EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


def require_preview(feature: str = "--preview") -> None:
    """Fail with a one-line usage error naming the ``preview`` extra when matplotlib is not installed."""
    require_module("matplotlib", feature)


def label_colour(value: int) -> tuple[float, float, float]:
    """The display colour of a label value, as RGB in [0, 1]: the twelve colours of :data:`LABEL_COLOURS`, then
    hues a golden angle apart in three bands of lightness, so that an atlas of a hundred labels (AAL has 116)
    has no two neighbouring values alike."""
    import colorsys

    index = int(value) - 1
    if 0 <= index < len(LABEL_COLOURS):
        red, green, blue = LABEL_COLOURS[index]
        return red / 255.0, green / 255.0, blue / 255.0
    hue = (index * 0.381966) % 1.0
    lightness, saturation = ((0.55, 0.85), (0.4, 0.9), (0.7, 0.75))[index % 3]
    return colorsys.hls_to_rgb(hue, lightness, saturation)


def to_ras_order(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Permute and flip the first three axes so that they point R, A, S; return the array and its spacing."""
    from nibabel.orientations import apply_orientation, io_orientation

    from mitk.image import voxel_spacing

    orientation = io_orientation(affine)
    spacing = voxel_spacing(affine)
    ras_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(orientation):
        ras_spacing[int(target)] = spacing[axis]
    return apply_orientation(array, orientation), (ras_spacing[0], ras_spacing[1], ras_spacing[2])


def slice_views(volume: np.ndarray, label_map: np.ndarray, spacing: Sequence[float],
                centre: Sequence[int]) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """The three views through ``centre`` of RAS-ordered arrays: (name, image, labels, row/column aspect).

    Each 2-D view is rows × columns ready for ``imshow`` with the origin at the top left.
    """
    x, y, z = (int(c) for c in centre)
    sx, sy, sz = spacing
    cuts = {
        "axial": (volume[:, :, z], label_map[:, :, z], sy / sx),  # (x, y) → rows A..P, columns R..L
        "coronal": (volume[:, y, :], label_map[:, y, :], sz / sx),  # (x, z) → rows S..I, columns R..L
        "sagittal": (volume[x, :, :], label_map[x, :, :], sz / sy),  # (y, z) → rows S..I, columns A..P
    }
    return [(name, image.T[::-1, ::-1], labels.T[::-1, ::-1], aspect)
            for name, (image, labels, aspect) in cuts.items()]


def _prepare(image: Image, label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float],
                                                            tuple[int, int, int]]:
    volume = np.asarray(image.array)
    if volume.ndim == 4 and volume.shape[-1] in (3, 4):
        from mitk.io.photo import luminance

        volume = luminance(volume)  # a colour picture is shown by its grey value
    while volume.ndim > 3:
        volume = volume[..., 0]
    if volume.ndim == 2:
        volume = volume[..., None]
    labels = np.asarray(label_map)
    if labels.shape != volume.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the image grid {volume.shape}")
    volume, spacing = to_ras_order(volume.astype(np.float32), image.affine)
    labels, _ = to_ras_order(labels.astype(np.int64), image.affine)
    return volume, labels, spacing, foreground_centre(labels)


def foreground_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """The voxel nearest the centre of mass of all non-zero labels, or the volume centre when there are none."""
    foreground = labels > 0
    total = int(np.count_nonzero(foreground))
    centre = []
    for axis, n in enumerate(labels.shape):
        if total == 0:
            centre.append((n - 1) // 2)
            continue
        counts = foreground.sum(axis=tuple(a for a in range(3) if a != axis))
        centre.append(int(min(max(round(float(np.dot(np.arange(n), counts)) / total), 0), n - 1)))
    return centre[0], centre[1], centre[2]


def _window(volume: np.ndarray) -> tuple[float, float]:
    step = max(1, volume.size // 4_000_000)  # a regular subsample keeps big volumes quick
    sample = volume.ravel()[::step]
    finite = sample[np.isfinite(sample)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.percentile(finite, [1, 99])
    return float(low), float(high) if high > low else float(low) + 1.0


def name_edges(ax: Any, view: str) -> None:
    """Write the patient directions at the four edges of a view (``axial``, ``coronal`` or ``sagittal``)."""
    left, right, top, bottom = EDGE_LETTERS[view]
    style = {"color": "yellow", "fontsize": 9, "transform": ax.transAxes}
    ax.text(0.01, 0.5, left, ha="left", va="center", **style)
    ax.text(0.99, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.99, top, ha="center", va="top", **style)
    ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **style)


def _overlay(labels: np.ndarray) -> np.ndarray:
    """An RGBA layer: each label's colour, translucent, transparent on background."""
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value in np.unique(labels):
        if value == 0:
            continue
        rgba[labels == value] = (*label_colour(int(value)), FILL_ALPHA)
    return rgba


def _draw_row(axes: Sequence[Any], image: Image, label_map: np.ndarray) -> set[int]:
    """Draw the three views of one image into ``axes`` (one axis: its only slice, for a picture, radiograph or
    single slice); return the label values shown."""
    volume, labels, spacing, centre = _prepare(image, label_map)
    low, high = _window(volume)
    views = slice_views(volume, labels, spacing, centre)[: len(axes)]
    for ax, (name, view, view_labels, aspect) in zip(axes, views, strict=True):
        ax.imshow(view, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        ax.imshow(_overlay(view_labels), aspect=aspect, interpolation="nearest")
        for value in np.unique(view_labels):
            if value > 0 and min(view_labels.shape) >= 2:  # a one-slice volume's side views are 1 pixel thin
                ax.contour(view_labels == value, levels=[0.5], colors=[label_colour(int(value))], linewidths=1.0)
        ax.set_axis_off()
        if image.meta.get("format") == "photo":
            continue  # a photograph has no patient directions to name
        ax.set_title(name if len(axes) > 1 else "slice", color="white", fontsize=10)
        name_edges(ax, name)
    return {int(v) for v in np.unique(labels) if v > 0}


def _render(rows: Sequence[tuple[Image, np.ndarray]], labels: dict[int, str], path: str | Path,
            row_titles: Sequence[str] | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    values = sorted(v for v in set(labels) | {int(v) for _, m in rows for v in np.unique(m) if v > 0} if v > 0)
    legend_rows = max(1, -(-len(values) // LEGEND_COLUMNS))
    legend_inches = 0.5 if legend_rows == 1 else 0.2 + legend_rows * LEGEND_ROW_INCHES
    columns = 1 if all(_one_slice(image) for image, _ in rows) else 3  # a picture has no side views
    figure = Figure(figsize=(columns * PANEL_INCHES, len(rows) * PANEL_INCHES + legend_inches), dpi=DPI,
                    facecolor="black")
    FigureCanvasAgg(figure)  # the Agg backend for this figure only; the global backend is left alone
    bottom = legend_inches / (len(rows) * PANEL_INCHES + legend_inches)
    grid = figure.add_gridspec(len(rows), columns, left=0.01, right=0.99, top=0.97 - 0.03 / len(rows), bottom=bottom,
                               wspace=0.02, hspace=0.08)
    shown: set[int] = set()
    for row, (image, label_map) in enumerate(rows):
        axes = [figure.add_subplot(grid[row, column]) for column in range(columns)]
        shown |= _draw_row(axes, image, label_map)
        if row_titles is not None:
            axes[0].text(-0.02, 0.5, row_titles[row], color="white", fontsize=9, rotation=90, ha="right",
                         va="center", transform=axes[0].transAxes)
    values = sorted(set(values) | shown)
    if values:
        handles = [Patch(facecolor=label_colour(v), edgecolor="none", label=_legend_text(v, labels))
                   for v in values]
        ncol = min(len(handles), LEGEND_COLUMNS if columns == 3 else 2)
        figure.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, labelcolor="white",
                      fontsize=9 if len(values) <= 2 * LEGEND_COLUMNS else 7,
                      handlelength=1.0, columnspacing=1.0, labelspacing=0.25)
    path = Path(path)
    figure.savefig(path, format="png", dpi=DPI, facecolor="black")
    return path


def _legend_text(value: int, labels: dict[int, str], width: int = 24) -> str:
    """``value: name``, a long name cut to ``width`` characters so that the legend's columns stay aligned."""
    name = labels.get(value, str(value))
    return f"{value}: {name if len(name) <= width else name[:width - 1] + '…'}"


def _one_slice(image: Image) -> bool:
    """True for a picture, a radiograph or a single slice: its only view is the slice itself."""
    return image.array.ndim == 2 or (image.array.ndim >= 3 and image.array.shape[2] == 1)


def save_overlay_png(image: Image, label_map: np.ndarray, labels: dict[int, str], path: str | Path) -> Path:
    """Write a three-view overlay of ``label_map`` on ``image`` through the foreground's centre of mass.

    The views cross at the centre of mass of all non-zero labels (the volume centre when there are none);
    intensities are windowed to the 1st–99th percentile; each label has a fixed colour and a legend entry.
    The PNG is ``3 × 400`` by ``400 + 50`` pixels; for a one-slice image (a picture, a radiograph) one panel,
    ``400`` by ``400 + 50``, of the slice as stored (a colour picture by its luminance).
    """
    return _render([(image, label_map)], labels, path)


def save_training_preview(cases: Sequence[tuple[Image, np.ndarray]], labels: dict[int, str], path: str | Path,
                          names: Sequence[str] | None = None) -> Path:
    """One row of three views per (image, label map) pair, e.g. to check a training set at a glance."""
    if not cases:
        raise ValueError("no cases to preview")
    if names is not None and len(names) != len(cases):
        raise ValueError("names and cases differ in length")
    return _render(cases, labels, path, row_titles=names)
