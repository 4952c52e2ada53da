"""The registration result: the fixed←moving transform and the warped moving image, and their files."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.errors import PluginError
from mitk.image import FloatArray, Image
from mitk.results import PathLike, ResultFiles, atomic_output, description, nifti_target

if TYPE_CHECKING:
    import nibabel as nib


def write_warped(result: RegistrationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write a registration's moving image on the fixed grid as NIfTI, with ``like``'s (the fixed image's) header."""
    from mitk.io.nifti import write_nifti

    write_nifti(result.warped.array, path, like=like, description=description(plugin, "warped"))


def total_displacement(result_matrix: np.ndarray | None, displacement: np.ndarray | None, fixed: Image
                       ) -> np.ndarray:
    """The whole transform as one displacement ``u(x) = M x + d(x) − x`` (RAS mm) on the fixed grid."""
    shape = fixed.spatial_shape
    matrix = np.asarray(result_matrix if result_matrix is not None else np.eye(4), float)
    voxels = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = fixed.affine[:3, :3] @ voxels + fixed.affine[:3, 3:]
    moved = matrix[:3, :3] @ world + matrix[:3, 3:]
    field = (moved - world).T.reshape(*shape, 3)
    if displacement is not None:
        field = field + np.asarray(displacement, float)
    return field


def write_transform(result: RegistrationResult, path: Path, fixed: Image | None = None) -> None:
    """``.tfm``/``.txt`` (ITK AffineTransform, LPS), ``.json`` (RAS and LPS matrices), or ``.nii``/``.nii.gz``
    (the whole transform as an ITK displacement field on the fixed grid: LPS vectors in mm)."""
    from mitk.io.transforms import is_field_path, write_displacement_field, write_matrix

    if is_field_path(path):
        if fixed is None:
            raise ValueError("a displacement field needs the fixed grid")
        write_displacement_field(total_displacement(result.matrix, result.displacement, fixed), fixed, path)
        return
    if result.matrix is None or result.displacement is not None:
        raise ValueError("this registration produced no single matrix")
    write_matrix(np.asarray(result.matrix, float), path)


@dataclass
class RegistrationResult(ResultFiles):
    """A fixed←moving transform and the moving image resampled onto the fixed grid.

    ``matrix`` maps fixed-image world points (RAS mm) to moving-image world points, so that
    ``warped(x) = moving(matrix @ x)``. ``displacement`` (optional, shape ``(I, J, K, 3)``, RAS mm) is
    added after the matrix, per fixed voxel.
    """

    warped: Image
    matrix: FloatArray | None = None
    displacement: FloatArray | None = None
    metrics: dict[str, float] = field(default_factory=dict)


    def to_numpy(self) -> np.ndarray:
        """The moving image resampled on the fixed grid."""
        return np.asarray(self.warped.array)

    def to_nifti(self) -> nib.Nifti1Image:
        """The warped image as the nibabel image :meth:`save` writes (the fixed image's header)."""
        from mitk.io.nifti import nifti_image

        return nifti_image(self.warped.array, self.warped, description=description(self.plugin, "warped"))

    def to_sitk(self) -> Any:
        """The warped image as a ``SimpleITK.Image`` on the fixed grid (LPS)."""
        from mitk.io.memory import to_sitk

        return to_sitk(self.warped.array, self.warped.affine)

    def save(self, path: PathLike, *, overwrite: bool = False,
             transform: PathLike | None = None) -> Path:
        """Write the warped image as NIfTI on the fixed grid, as ``mitk register`` does; with
        ``transform=PATH`` (``.json``, or ``.tfm`` for ITK) also the matrix (both files, or neither)."""
        if transform is not None and self.matrix is None:
            raise PluginError(f"plugin {self.plugin!r} gave a displacement field only; transform= needs a matrix")
        target = nifti_target(path)
        inputs = self.inputs
        with contextlib.ExitStack() as outputs:
            warped = outputs.enter_context(atomic_output(target, overwrite, inputs))
            write_warped(self, warped, like=self.warped, plugin=self.plugin)  # the fixed grid and header
            if transform is not None:
                temporary = outputs.enter_context(atomic_output(transform, overwrite, inputs))
                write_transform(self, temporary)
        return target
