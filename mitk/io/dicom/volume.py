"""From DICOM slices to a voxel array and its affine: slice order, regularity checks, assembly, resampling.

Slices are ordered by their ImagePositionPatient projected on the slice normal (row × column direction
of ImageOrientationPatient), never by file name or InstanceNumber. The affine is built in DICOM's LPS
world from IPP/IOP/PixelSpacing, with the slice step measured from the positions (SliceThickness is
not a spacing); callers convert it to RAS. Arrays are indexed ``[column, row, slice]`` like ITK.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mitk.errors import GeometryError, InputError
from mitk.io.dicom.pixels import (
    ExplicitVRLittleEndian,
    FrameRef,
    ImplicitVRLittleEndian,
    apply_palette,
    check_decoder,
    check_layout,
    decode_into,
    load_dataset,
)
from mitk.io.limits import allocate, check_image_bytes

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

LOG = logging.getLogger("mitk.io.dicom")

DUPLICATE_TOLERANCE_MM = 0.01
"""Slices closer than this along the normal are at the same position."""
SPACING_TOLERANCE = 0.02
"""A slice may sit this fraction of the slice step (at least ``ABSOLUTE_TOLERANCE_MM``) off a regular grid."""
TILT_TOLERANCE = 0.1
"""Slice positions may drift in-plane by this fraction of the smaller pixel spacing over the stack."""
ABSOLUTE_TOLERANCE_MM = 0.01
MAX_GAP_STEPS = 8.0
"""``allow_resample`` interpolates across gaps of at most this many slice steps."""


@dataclass
class StackPlan:
    """How a stack of slices becomes a volume: its order, affine and what (if anything) is irregular."""

    order: list[int]
    """Indices into the input slices, sorted along the slice normal."""
    affine_lps: np.ndarray
    """Voxel → LPS mm of the regular grid (for an irregular stack: the grid it would be resampled onto)."""
    positions: np.ndarray
    """ImagePositionPatient of each slice, in ``order``."""
    problem: str | None = None
    """Why the stack is not a regular volume; ``None`` when it is one."""
    resamplable: bool = False
    """Whether ``allow_resample`` can fix ``problem`` (irregular spacing within limits, gantry tilt)."""
    output_slices: int = 0


def plan_stack(positions: np.ndarray, orientation: Sequence[float], pixel_spacing: Sequence[float],
               names: Sequence[str], single_slice_step: float = 1.0) -> StackPlan:
    """Sort slices along the normal and check that they form a regular grid.

    ``pixel_spacing`` is DICOM's ``(row spacing, column spacing)``; ``names`` name the slices in messages.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    row_dir, column_dir = _unit(orientation[:3]), _unit(orientation[3:6])
    normal = _unit(np.cross(row_dir, column_dir))
    distance = positions @ normal
    order = [int(i) for i in np.argsort(distance, kind="stable")]
    sorted_positions, sorted_distance = positions[order], distance[order]
    count = len(order)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * float(pixel_spacing[1])
    affine[:3, 1] = column_dir * float(pixel_spacing[0])
    affine[:3, 3] = sorted_positions[0]
    plan = StackPlan(order, affine, sorted_positions, output_slices=count)
    if abs(float(np.dot(row_dir, column_dir))) > 1e-3:
        affine[:3, 2] = normal * single_slice_step
        plan.problem = "ImageOrientationPatient row and column directions are not perpendicular"
        return plan
    if count == 1:
        affine[:3, 2] = normal * single_slice_step
        return plan
    steps = np.diff(sorted_distance)
    step = float(sorted_distance[-1] - sorted_distance[0]) / (count - 1)
    affine[:3, 2] = normal * (step if step > 0 else single_slice_step)
    duplicates = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if duplicates.size:
        a, b = order[int(duplicates[0])], order[int(duplicates[0]) + 1]
        plan.problem = (f"duplicate slice positions: {names[a]} and {names[b]} are both at "
                        f"{sorted_distance[int(duplicates[0])]:.3f} mm along the slice normal"
                        + (f" ({duplicates.size} duplicates in all)" if duplicates.size > 1 else ""))
        return plan
    residual = np.abs(sorted_distance - (sorted_distance[0] + step * np.arange(count)))
    spacing_tolerance = max(ABSOLUTE_TOLERANCE_MM, SPACING_TOLERANCE * step)
    if float(residual.max()) > spacing_tolerance:
        median = float(np.median(steps))
        worst = int(np.argmax(np.abs(steps - median)))
        slices = int(np.rint((sorted_distance[-1] - sorted_distance[0]) / median)) + 1
        plan.problem = (f"slice spacing is not uniform (steps from {steps.min():.4g} to {steps.max():.4g} mm, "
                        f"typical {median:.4g} mm; {steps[worst]:.4g} mm between {names[order[worst]]} and "
                        f"{names[order[worst + 1]]}): missing slices or an outlier")
        plan.resamplable = float(steps.max()) <= MAX_GAP_STEPS * median
        plan.output_slices = slices
        affine[:3, 2] = normal * float(sorted_distance[-1] - sorted_distance[0]) / (slices - 1)
    offsets = positions[order] - sorted_positions[0] - np.outer(sorted_distance - sorted_distance[0], normal)
    drift = np.linalg.norm(offsets, axis=1)
    if float(drift.max()) > TILT_TOLERANCE * min(float(pixel_spacing[0]), float(pixel_spacing[1])):
        span = float(sorted_distance[-1] - sorted_distance[0])
        angle = float(np.degrees(np.arctan2(float(drift[-1]), span)))
        tilt = (f"gantry tilt or sheared geometry: slice positions drift {drift.max():.3g} mm in-plane "
                f"({angle:.2f}° off the slice normal) from {names[order[0]]} to {names[order[-1]]}")
        plan.problem = tilt if plan.problem is None else f"{plan.problem}; {tilt}"
        plan.resamplable = plan.resamplable or plan.output_slices == count
    return plan


def _unit(vector: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array))
    if norm == 0:
        raise GeometryError("ImageOrientationPatient has a zero direction")
    return array / norm


# ---------------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------------
def assemble(refs: Sequence[FrameRef], workers: int | None = None) -> np.ndarray:
    """Decode ``refs`` (in slice order) into one array ``[slice, row, column(, sample)]`` of real values.

    Real values are the stored values (bits above BitsStored masked, MONOCHROME1 not inverted; see
    :func:`~mitk.io.dicom.pixels.decode_into`) through each slice's RescaleSlope/RescaleIntercept.

    Integer results keep an integer dtype (the stored one where the rescaled values fit, else the signed
    type of the same size, else int32); a non-integral RescaleSlope/Intercept gives float32. PALETTE COLOR
    indices go through the file's colour tables instead (``[slice, row, column, 3]``, no rescale). A header
    that :func:`~mitk.io.dicom.pixels.check_layout` refuses raises an InputError naming the file.
    """
    first = refs[0]
    shape, dtype = first.layout.shape, first.layout.dtype
    for ref in refs[1:]:
        if ref.layout.shape != shape or ref.layout.dtype != dtype:
            raise GeometryError(f"mixed image sizes or pixel types: {first.name} is {first.layout.describe()}, "
                                f"{ref.name} is {ref.layout.describe()}")
    check_layout(first)
    for syntax_ref in {ref.transfer_syntax: ref for ref in refs}.values():
        check_decoder(syntax_ref)
    if first.layout.photometric == "PALETTE COLOR" and first.layout.samples == 1:
        # The RGB result (up to 16 bits a colour) is bounded like any image before the indices are decoded.
        check_image_bytes(len(refs) * int(np.prod(shape)) * 3 * 2, first.path,
                          f"RGB of {len(refs)} palette colour frame(s) of {first.layout.describe()}")
        return apply_palette(first, _decode(refs, shape, dtype, workers))
    integral = all(float(r.slope).is_integer() and float(r.intercept).is_integer() for r in refs)
    volume = allocate((len(refs), *shape), dtype if integral else np.float32, first.path,
                      f"a volume of {len(refs)} slice{'s' if len(refs) != 1 else ''} of {first.layout.describe()}")
    ranges = np.zeros((len(refs), 2), dtype=np.float64)
    sources = _multiframe_sources(refs)

    def decode(k: int) -> None:
        ref = refs[k]
        source = sources.get((ref.path, ref.member))
        if integral:
            decode_into(ref, volume[k], source)
            ranges[k] = (volume[k].min(), volume[k].max()) if volume[k].size else (0, 0)
        else:
            stored = np.empty(shape, dtype=dtype)
            decode_into(ref, stored, source)
            # Computed in float64 and rounded once to float32.
            volume[k] = stored * np.float64(ref.slope) + np.float64(ref.intercept)

    _run(decode, len(refs), workers)
    return _rescale_integers(volume, refs, ranges) if integral else volume


def _decode(refs: Sequence[FrameRef], shape: tuple[int, ...], dtype: np.dtype, workers: int | None) -> np.ndarray:
    """The stored values of ``refs``, undecorated (palette indices)."""
    volume = allocate((len(refs), *shape), dtype, refs[0].path, f"{len(refs)} frame(s) of {refs[0].layout.describe()}")
    sources = _multiframe_sources(refs)

    def decode(k: int) -> None:
        decode_into(refs[k], volume[k], sources.get((refs[k].path, refs[k].member)))

    _run(decode, len(refs), workers)
    return volume


def _multiframe_sources(refs: Sequence[FrameRef]) -> dict[tuple[Path, str | None], Dataset]:
    """Load each compressed multi-frame file once (native multi-frame data is read by offset)."""
    sources: dict[tuple[Path, str | None], Dataset] = {}
    for ref in refs:
        key = (ref.path, ref.member)
        if ref.frame is None or key in sources:
            continue
        native = ref.pixel_offset is not None and ref.member is None \
            and ref.transfer_syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
        if not native:
            dataset = load_dataset(ref)
            _ = dataset.PixelData  # convert the raw element once, before threads share the dataset
            sources[key] = dataset
    return sources


def _run(task: Callable[[int], None], count: int, workers: int | None) -> None:
    workers = workers or min(16, (os.cpu_count() or 1) + 2)
    if workers <= 1 or count <= 2:
        for k in range(count):
            task(k)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(task, range(count)):
            pass


def _rescale_integers(volume: np.ndarray, refs: Sequence[FrameRef], ranges: np.ndarray) -> np.ndarray:
    """Apply integral slope/intercept in place when the result fits a type of the same size."""
    slopes = np.array([r.slope for r in refs], dtype=np.float64)
    intercepts = np.array([r.intercept for r in refs], dtype=np.float64)
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return volume
    ends = ranges * slopes[:, None] + intercepts[:, None]
    low, high = float(ends.min()), float(ends.max())
    target = _fitting_dtype(volume.dtype, low, high)
    # Modular arithmetic in the storage type gives the exact result whenever that result fits.
    result = volume.view(target) if target.itemsize == volume.dtype.itemsize else volume.astype(target)
    groups: dict[tuple[float, float], list[int]] = {}
    for k, pair in enumerate(zip(slopes, intercepts, strict=True)):
        groups.setdefault((float(pair[0]), float(pair[1])), []).append(k)
    with np.errstate(over="ignore"):
        for (slope, intercept), members in groups.items():
            part = result if len(members) == len(refs) else result[members]
            if slope != 1:
                part *= _modular(slope, target)
            if intercept != 0:
                part += _modular(intercept, target)
            if len(members) != len(refs):
                result[members] = part
    return result


def _modular(value: float, dtype: np.dtype) -> Any:
    """``value`` as a ``dtype`` scalar, wrapped modulo 2**bits (exact under modular arithmetic)."""
    bits = dtype.itemsize * 8
    wrapped = np.array(int(value) % (1 << bits), dtype=np.uint64).astype(np.dtype(f"u{dtype.itemsize}"))
    return wrapped.view(dtype)[()]


def _fitting_dtype(stored: np.dtype, low: float, high: float) -> np.dtype:
    candidates = [stored, np.dtype(f"i{stored.itemsize}"), np.dtype(np.int32), np.dtype(np.int64)]
    for candidate in candidates:
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return candidate
    raise InputError(f"rescaled values {low:g}..{high:g} do not fit a 64-bit integer")


# ---------------------------------------------------------------------------------------------------
# Resampling of irregular or tilted stacks
# ---------------------------------------------------------------------------------------------------
def resample_stack(volume: np.ndarray, plan: StackPlan, pixel_spacing: Sequence[float]) -> np.ndarray:
    """Interpolate ``volume`` (``[slice, row, column]``, slices in ``plan.order``) onto ``plan``'s grid.

    Each output slice lies on the regular grid along the normal; the two input slices around it are
    shifted in-plane to undo any tilt (bilinear) and blended linearly along the normal. Integer input
    is rounded back to its dtype; voxels outside every input slice get the volume's minimum.
    """
    from scipy import ndimage

    affine = plan.affine_lps
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    row_dir = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    column_dir = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    origin = affine[:3, 3]
    relative = plan.positions - origin
    distance = relative @ normal
    shift_i = (relative @ row_dir) / float(pixel_spacing[1])
    shift_j = (relative @ column_dir) / float(pixel_spacing[0])
    step = float(np.linalg.norm(affine[:3, 2]))
    fill = float(volume.min()) if volume.size else 0.0
    out = allocate((plan.output_slices, *volume.shape[1:]), volume.dtype, None,
                   f"a resampled volume of {plan.output_slices} slices")
    cache: dict[int, np.ndarray] = {}

    def shifted(k: int) -> np.ndarray:
        """Input slice ``k`` moved in-plane onto the output grid (kept for the next output slice)."""
        if k not in cache:
            data = volume[k].astype(np.float32)
            if abs(shift_i[k]) > 1e-6 or abs(shift_j[k]) > 1e-6:
                data = ndimage.shift(data, (shift_j[k], shift_i[k]) + (0,) * (data.ndim - 2), order=1,
                                     mode="constant", cval=fill)
            for old in [key for key in cache if key < k - 1]:
                del cache[old]
            cache[k] = data
        return cache[k]

    for m in range(plan.output_slices):
        target = m * step
        upper = int(np.clip(np.searchsorted(distance, target), 1, len(distance) - 1))
        lower = upper - 1
        span = distance[upper] - distance[lower]
        weight = float(np.clip((target - distance[lower]) / span, 0.0, 1.0)) if span > 0 else 0.0
        blended = shifted(lower) * (1 - weight) + shifted(upper) * weight if weight > 0 else shifted(lower)
        out[m] = np.rint(blended) if out.dtype.kind in "iu" else blended
    return out
