"""The segmentation result: a label map on the input's exact grid, and its files."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.errors import UsageError
from mitk.image import FloatArray, Image, IntArray
from mitk.results import PathLike, ResultFiles, atomic_output, description

if TYPE_CHECKING:
    import nibabel as nib


def write_label_map(result: SegmentationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write the label map on ``like``'s grid in the format ``path`` names (``path`` is usually a temporary):
    NIfTI with ``like``'s header, NRRD/MetaImage with its origin, spacing and direction, or PNG (one slice)."""
    from mitk.io.writer import write_image

    write_image(result.label_map, path, like=like, intent="label", description=description(plugin, "labels"))


def write_probabilities(result: SegmentationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write the per-label probabilities (float32, channel last) on ``like``'s grid (NIfTI or an ITK format)."""
    from mitk.io.writer import write_image

    if result.probabilities is None:
        raise UsageError("this result has no probabilities (run with probabilities=True)")
    write_image(result.probabilities.astype(np.float32), path, like=like,
                description=description(plugin, "probabilities"))


def write_entropy(result: SegmentationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write the per-voxel entropy (float32 NIfTI) on ``like``'s exact grid."""
    from mitk.io.writer import write_image

    if result.entropy is None:
        raise UsageError("this result has no entropy map (run with uncertainty=True)")
    write_image(result.entropy.astype(np.float32), path, like=like, description=description(plugin, "entropy"))


@dataclass
class SegmentationResult(ResultFiles):
    """An integer label map on the input's exact voxel grid, with label names."""

    label_map: IntArray
    affine: FloatArray
    labels: dict[int, str]
    probabilities: FloatArray | None = None
    """Optional per-class probabilities, channel last, on the same grid."""
    entropy: FloatArray | None = None
    """With ``uncertainty=True``: the per-voxel entropy (nats, float32) of the averaged probabilities, same grid."""
    uncertainty: dict[str, Any] | None = None
    """With ``uncertainty=True``: ``{"mean_entropy", "passes", "entropy_map", "region"}`` (the record's)."""
    passes: dict[str, int] | None = None
    """Network passes averaged: ``{"members", "flips", "total"}`` (an ensemble's members × TTA flips)."""

    def statistics(self, image: Image | None = None) -> list[dict[str, Any]]:
        """Per-label voxel count, volume in mL and (given the image) mean intensity (of an RGB image: its
        luminance). A one-slice map (picture, radiograph, single slice) counts pixels and areas in mm² instead,
        with the pixel spacing and where it came from (``unknown (1 mm assumed)`` when the file has none)."""
        matrix = np.asarray(self.affine, dtype=np.float64)[:3, :3]
        voxel_ml = abs(float(np.linalg.det(matrix))) / 1000.0
        labels = self.label_map
        planar = labels.ndim == 3 and labels.shape[2] == 1
        pixel_mm2 = float(np.linalg.norm(np.cross(matrix[:, 0], matrix[:, 1])))
        values = None
        if image is not None and image.array.shape[:3] == labels.shape:
            values = np.asarray(image.array)
            if values.ndim > 3:
                from mitk.io.photo import luminance

                values = luminance(values) if values.shape[-1] in (3, 4) else values[..., 0]
            if values.flags.f_contiguous and not labels.flags.f_contiguous:
                labels = np.asfortranarray(labels)  # same memory order, so ravel(order="K") pairs voxels
            elif values.flags.c_contiguous and not labels.flags.c_contiguous:
                labels = np.ascontiguousarray(labels)
            elif not (values.flags.c_contiguous or values.flags.f_contiguous):
                values, labels = np.ascontiguousarray(values), np.ascontiguousarray(labels)
        flat = labels.ravel(order="K")
        foreground = np.flatnonzero(flat)  # label volumes are mostly background: work on the rest only
        length = max(max(self.labels, default=0) + 1, 1)
        counts = np.bincount(flat[foreground], minlength=length)
        intensity = None
        if values is not None:
            weights = values.ravel(order="K")[foreground]
            intensity = np.bincount(flat[foreground], weights=weights, minlength=counts.size)
        rows = []
        if planar:
            from mitk.io.reader import spacing_source

            spacing = "×".join(f"{v:g}" for v in np.linalg.norm(matrix[:, :2], axis=0))
            source = spacing_source(image) if image is not None else "the affine"
        for value, name in sorted(self.labels.items()):
            if value == 0:
                continue
            count = int(counts[value]) if value < counts.size else 0
            row: dict[str, Any] = {"label": value, "name": name}
            if planar:
                row.update(pixels=count, area_mm2=round(count * pixel_mm2, 4))
            else:
                row.update(voxels=count, volume_ml=round(count * voxel_ml, 4))
            if intensity is not None:
                row["mean_intensity"] = round(float(intensity[value] / count), 4) if count else None
            if planar:
                row.update(pixel_spacing_mm=spacing, spacing_source=source)
            rows.append(row)
        return rows


    def _grid(self) -> Image:
        grid = self.grid
        if grid is not None and tuple(grid.spatial_shape) == tuple(self.label_map.shape[:3]):
            return grid
        return Image(array=self.label_map, affine=self.affine)

    def to_numpy(self) -> np.ndarray:
        """The label map, ``(I, J, K)`` integers on the input's voxel grid."""
        return self.label_map

    def to_nifti(self) -> nib.Nifti1Image:
        """The label map as the nibabel image :meth:`save` writes (the input's header, intent ``label``)."""
        from mitk.io.nifti import nifti_image

        return nifti_image(self.label_map, self._grid(), intent="label",
                           description=description(self.plugin, "labels"))

    def to_sitk(self) -> Any:
        """The label map as a ``SimpleITK.Image`` with the input's origin, spacing and direction (LPS)."""
        from mitk.io.memory import to_sitk

        return to_sitk(self.label_map, self.affine)

    def save(self, path: PathLike, *, overwrite: bool = False,
             probabilities: PathLike | None = None) -> Path:
        """Write the label map as ``mitk segment`` does, in the format the name asks for: NIfTI (``.nii.gz``,
        ``.nii``), NRRD/MetaImage (``.nrrd``, ``.mha``) or PNG (one slice); with ``probabilities=PATH`` also the
        probability maps (NIfTI or an ITK format; both files, or neither). Returns ``path``."""
        from mitk.io.writer import check_target

        like, target = self._grid(), check_target(Path(path), "label map")
        if probabilities is not None and check_target(Path(probabilities)).name.lower().endswith(".png"):
            raise UsageError("probabilities are fractions: name them .nii.gz, .nrrd or .mha, not .png",
                             Path(probabilities))
        with contextlib.ExitStack() as outputs:  # the label map is entered first, so committed last
            label_file = outputs.enter_context(atomic_output(target, overwrite, self.inputs))
            write_label_map(self, label_file, like, self.plugin)
            if probabilities is not None:
                prob_file = outputs.enter_context(atomic_output(probabilities, overwrite, self.inputs))
                write_probabilities(self, prob_file, like, self.plugin)
        return target
