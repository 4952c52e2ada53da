"""Grad-CAM overlays as PNG, drawn with Pillow (no plotting library needed).

A 2-D input (radiograph, photograph, single slice) gives a picture of exactly its pixel size, the right way
up: rows and columns as a DICOM viewer or image viewer shows them (the array's ``[:, :, 0].T``, with
axes flipped where the affine says the stored order runs right-to-left or inferior-to-superior in the
picture). A volume gives the axial slice where the map is largest, shown the radiological way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mitk.image import Image

HEAT_ALPHA = 0.45
"""Opacity of the heat map at its maximum (it fades to transparent where the map is 0)."""
WINDOW_PERCENTILES = (0.5, 99.5)


def photometric_interpretation(image: Image) -> str | None:
    summary = image.meta.get("dicom_summary") or {}
    value = summary.get("PhotometricInterpretation") if isinstance(summary, dict) else None
    return str(value) if value else None


def display_values(image: Image) -> np.ndarray:
    """The voxel values with MONOCHROME1 inverted (``min + max - value``), so that higher is brighter."""
    array = np.asarray(image.array)
    if photometric_interpretation(image) != "MONOCHROME1":
        return array
    values = array.astype(np.float32, copy=False)
    return np.float32(values.min()) + np.float32(values.max()) - values


def heat_colours(values: np.ndarray) -> np.ndarray:
    """A blue → cyan → yellow → red colour scale for values in ``[0, 1]`` (``(..., 3)`` uint8)."""
    stops = np.asarray([0.0, 0.35, 0.65, 1.0])
    colours = np.asarray([[0, 0, 160], [0, 200, 255], [255, 230, 0], [220, 20, 0]], dtype=np.float32)
    channels = [np.interp(values, stops, colours[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _picture(plane: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A slice ``(i, j[, channels])`` as picture rows × columns: patient right on the viewer's left, anterior
    (or superior) up, which for a DICOM image or a photograph is its stored order."""
    picture = np.swapaxes(plane, 0, 1)
    if affine[0, 0] > 0:  # i runs towards patient right: show it from right to left
        picture = picture[:, ::-1]
    if affine[1, 1] > 0:  # j runs anterior (RAS volumes): anterior at the top
        picture = picture[::-1]
    return picture


def _grey(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    low, high = np.percentile(finite, WINDOW_PERCENTILES) if finite.size else (0.0, 1.0)
    scaled = (values - low) / max(float(high - low), 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def overlay_picture(image: Image, heat: np.ndarray) -> np.ndarray:
    """The RGB picture (rows × columns × 3, uint8) of ``heat`` over ``image`` (MONOCHROME1 shown inverted)."""
    values = np.asarray(display_values(image), dtype=np.float32)
    k = 0
    if image.spatial_shape[2] > 1:
        k = int(np.argmax(heat.reshape(-1, heat.shape[2]).max(axis=0)))
    plane = values[:, :, k] if values.ndim >= 3 else values
    if plane.ndim == 3 and plane.shape[-1] == 3:
        base = np.stack([_grey(plane[..., c]) for c in range(3)], axis=-1)
    else:
        base = np.repeat(_grey(plane[..., 0] if plane.ndim == 3 else plane)[..., None], 3, axis=-1)
    weight = np.clip(heat[:, :, k], 0.0, 1.0)[..., None] * HEAT_ALPHA
    blended = base.astype(np.float32) * (1 - weight) + heat_colours(heat[:, :, k]).astype(np.float32) * weight
    return _picture(blended.round().astype(np.uint8), image.affine)


def save_heatmap_overlay(image: Image, heat: np.ndarray, path: str | Path) -> Path:
    """Write :func:`overlay_picture` as a PNG."""
    from PIL import Image as PillowImage

    PillowImage.fromarray(np.ascontiguousarray(overlay_picture(image, heat))).save(path, format="PNG")
    return Path(path)
