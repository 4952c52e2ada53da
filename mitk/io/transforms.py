"""Spatial transforms on disk, in formats other tools read.

A transform maps fixed-image (reference) world points to moving-image world points, as ITK's do. mitk works in
RAS millimetres; ITK files are in LPS, so matrices are conjugated by ``diag(-1, -1, 1)`` and displacement
vectors have their first two components negated.

* ``.tfm`` / ``.txt``: ITK transform file (``AffineTransform_double_3_3``; reading also accepts
  ``MatrixOffsetTransformBase``, ``TranslationTransform``, ``Euler3DTransform``, ``VersorRigid3DTransform``,
  ``Similarity3DTransform``, and a ``CompositeTransform`` of these, composed in ITK's order).
* ``.mat``: ITK's MATLAB (v4) transform file, as ANTs writes ``0GenericAffine.mat`` (one affine-family
  transform and its ``fixed`` centre).
* ``.json``: mitk's record, with the matrix in RAS and in LPS.
* ``.nii`` / ``.nii.gz``: a displacement field, ITK's convention (a 5-D vector NIfTI, LPS vectors in mm,
  ``x ↦ x + u(x)``), readable by SimpleITK as a ``DisplacementFieldTransform``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mitk.errors import InputError
from mitk.image import Image

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
"""RAS ↔ LPS (its own inverse)."""


def is_field_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def write_matrix(matrix_ras: np.ndarray, path: Path) -> None:
    """Write a 4×4 fixed-world → moving-world RAS matrix as ``.tfm``/``.txt`` (ITK, LPS) or ``.json``."""
    lps = FLIP @ np.asarray(matrix_ras, float) @ FLIP
    if path.suffix.lower() == ".mat":
        from scipy.io import savemat

        parameters = np.concatenate([lps[:3, :3].ravel(), lps[:3, 3]])[:, None]
        with path.open("wb") as handle:
            savemat(handle, {"AffineTransform_double_3_3": parameters, "fixed": np.zeros((3, 1))}, format="4")
    elif path.suffix.lower() in (".tfm", ".txt"):
        linear = " ".join(f"{v:.17g}" for v in lps[:3, :3].ravel())
        translation = " ".join(f"{v:.17g}" for v in lps[:3, 3])
        path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                        f"Parameters: {linear} {translation}\nFixedParameters: 0 0 0\n")
    else:
        path.write_text(json.dumps({
            "description": "maps fixed-image world points to moving-image world points (mm)",
            "matrix_ras": np.asarray(matrix_ras, float).tolist(), "matrix_lps": lps.tolist()}, indent=2))


def inverse_path(path: Path) -> Path:
    """Where the inverse of the transform at ``path`` goes: beside it, ``<stem>_inverse`` with the same
    extension (``t.tfm`` → ``t_inverse.tfm``, ``warp.nii.gz`` → ``warp_inverse.nii.gz``)."""
    name = path.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix
    return path.with_name(f"{name[:len(name) - len(suffix)]}_inverse{suffix}")


def write_displacement_field(field_ras: np.ndarray, fixed: Image, path: Path) -> None:
    """Write ``(I, J, K, 3)`` RAS displacements on the grid of ``fixed`` (the fixed image for a forward
    transform, the moving image for an inverse) as an ITK displacement field."""
    from mitk.io.nifti import write_nifti

    lps = np.asarray(field_ras, np.float32) * np.array([-1.0, -1.0, 1.0], np.float32)
    write_nifti(lps[:, :, :, None, :], path, like=fixed, intent="vector", description="mitk displacement (LPS)")


@dataclass
class Transform:
    """A matrix or a displacement field (on its own grid), both fixed-world → moving-world in RAS mm."""

    matrix: np.ndarray | None = None
    field: np.ndarray | None = None
    """``(I, J, K, 3)`` RAS displacement in mm, on the grid of ``field_affine``."""
    field_affine: np.ndarray | None = None
    _sampler: FieldSampler | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` RAS points."""
        if self.matrix is not None:
            return points @ self.matrix[:3, :3].T + self.matrix[:3, 3]
        assert self.field is not None and self.field_affine is not None
        if self._sampler is None:
            self._sampler = FieldSampler(self.field, self.field_affine)
        return points + self._sampler(points)

    def fitted_matrix(self, points: int = 20_000) -> np.ndarray:
        """The matrix itself, or the affine closest (least squares) to a field's map ``x ↦ x + u(x)`` over a
        regular subsample of its grid: the linear part that inverting the field starts from."""
        if self.matrix is not None:
            return self.matrix
        assert self.field is not None and self.field_affine is not None
        shape = self.field.shape[:3]
        stride = max(1, round((int(np.prod(shape)) / points) ** (1 / 3)))
        voxels = np.indices([len(range(0, n, stride)) for n in shape]).reshape(3, -1) * stride
        world = (self.field_affine[:3, :3] @ voxels + self.field_affine[:3, 3:]).T
        moved = world + self.field[tuple(voxels)]
        design = np.c_[world, np.ones(len(world))]
        solution, *_ = np.linalg.lstsq(design, moved, rcond=None)
        matrix = np.eye(4)
        matrix[:3] = solution.T
        return matrix


class FieldSampler:
    """Trilinear interpolation (float64) of a ``(I, J, K, 3)`` field at world points; zero displacement outside
    the grid's voxel centres (``scipy.ndimage.map_coordinates(order=1, mode="constant")``'s answer, three
    components in one ``grid_sample`` pass). The field is prepared once, for the many calls of an inversion."""

    def __init__(self, field: np.ndarray, affine: np.ndarray) -> None:
        import torch

        self.to_index = np.linalg.inv(np.asarray(affine, float))
        self.extent = np.array(field.shape[:3], dtype=np.float64) - 1
        self.source = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(field, np.float64), -1, 0)))[None]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        import torch

        index = points @ self.to_index[:3, :3].T + self.to_index[:3, 3]
        normalised = 2 * index / np.maximum(self.extent, 1) - 1
        grid = torch.from_numpy(np.ascontiguousarray(normalised[:, ::-1]))[None, None, None]
        sampled = torch.nn.functional.grid_sample(self.source, grid, mode="bilinear", padding_mode="zeros",
                                                  align_corners=True)[0, :, 0, 0].T.numpy()
        sampled[np.any((index < 0) | (index > self.extent), axis=1)] = 0.0
        return np.asarray(sampled)


def sample_field(field: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """:class:`FieldSampler` for one call."""
    return FieldSampler(field, affine)(points)


def read_transform(path: Path) -> Transform:
    """Read a transform written by mitk, ITK/SimpleITK/ANTs (affine ``.tfm``/``.txt``/``.mat``-free text) or
    a displacement field NIfTI; bad content is an :class:`InputError` naming the file."""
    if not path.is_file():
        raise InputError("no such transform file", path)
    if is_field_path(path):
        return _read_field(path)
    if path.suffix.lower() == ".json":
        try:
            matrix = np.asarray(json.loads(path.read_text())["matrix_ras"], float)
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"not a mitk transform record ({error})", path) from None
        except RecursionError:
            raise InputError("not a mitk transform record (JSON nested too deeply)", path) from None
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise InputError("matrix_ras must be a finite 4×4 matrix", path)
        if not np.array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0]):
            raise InputError(f"matrix_ras is not affine: its bottom row is {matrix[3].tolist()}, not [0, 0, 0, 1]",
                             path)
        return Transform(matrix=require_invertible(matrix, path))
    if path.suffix.lower() in (".tfm", ".txt"):
        return Transform(matrix=require_invertible(FLIP @ _read_itk_text(path) @ FLIP, path))
    if path.suffix.lower() == ".mat":
        return Transform(matrix=require_invertible(FLIP @ _read_itk_mat(path) @ FLIP, path))
    raise InputError("unknown transform format (use .tfm, .txt, .mat, .json, .nii or .nii.gz)", path)


def _read_itk_mat(path: Path) -> np.ndarray:
    """The LPS 4×4 matrix of an ITK MATLAB transform file (ANTs' ``*GenericAffine.mat``): a variable named
    after the transform type (``AffineTransform_double_3_3``, ``MatrixOffsetTransformBase_double_3_3`` …)
    holding its parameters, and ``fixed`` holding its centre. Read with scipy's MATLAB reader (no pickle)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        variables = loadmat(str(path))
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as error:
        raise InputError(f"not an ITK MATLAB transform file ({error})", path) from None
    kinds = [name for name in variables if not name.startswith("__") and name != "fixed"]
    if len(kinds) != 1:
        raise InputError(f"expected one transform variable beside 'fixed', found {kinds}", path)
    try:
        parameters = np.asarray(variables[kinds[0]], float).ravel()
        centre = np.asarray(variables.get("fixed", np.zeros(3)), float).ravel()
    except (TypeError, ValueError):
        raise InputError("the transform's parameters are not numbers", path) from None
    fields = {"Parameters": " ".join(repr(float(v)) for v in parameters),
              "FixedParameters": " ".join(repr(float(v)) for v in centre)}
    with np.errstate(over="ignore", invalid="ignore"):
        return _itk_matrix(kinds[0], fields, path)


def _read_itk_text(path: Path) -> np.ndarray:
    """The LPS 4×4 matrix of an ITK text file: one transform, or an ITK ``CompositeTransform`` of several (as
    SimpleITK's ``WriteTransform`` writes it) composed in ITK's order, the last listed applied first."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise InputError(f"cannot read ({error.strerror})", path) from None
    blocks: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        if key.strip() == "Transform":
            blocks.append((value.strip(), {}))
        elif blocks:
            blocks[-1][1][key.strip()] = value
    if not blocks:
        raise InputError("no transform in the file (expected an ITK 'Transform:' line)", path)
    kinds = [kind for kind, _ in blocks]
    if kinds[0].startswith("CompositeTransform_"):
        blocks = blocks[1:]
        if not blocks:
            raise InputError("an empty CompositeTransform", path)
        if any(kind.startswith("CompositeTransform_") for kind, _ in blocks):
            raise InputError("nested CompositeTransforms are not supported", path)
    elif len(blocks) > 1:
        raise InputError(f"{len(blocks)} transforms but no CompositeTransform header: ITK readers disagree on "
                         "how to chain them (write a CompositeTransform, or one file per transform)", path)
    matrix = np.eye(4)
    with np.errstate(over="ignore", invalid="ignore"):
        for kind, fields in blocks:  # T(x) = T1(T2(…Tn(x))): each later transform is applied before this one
            matrix = matrix @ _itk_matrix(kind, fields, path)
    if not np.isfinite(matrix).all():
        raise InputError(f"the {len(blocks)} transforms compose to a matrix that overflows (not finite)", path)
    return matrix


def require_invertible(matrix: np.ndarray, path: Path) -> np.ndarray:
    """``matrix`` if its linear part maps 3-D onto 3-D with room to spare in float64; a collapsing or
    overflowing transform would sample nothing and write an invented (all-zero) image."""
    with np.errstate(over="ignore", invalid="ignore"):
        condition = np.linalg.cond(matrix[:3, :3])
    if not np.isfinite(condition) or condition > 1e12:
        raise InputError("the transform's linear part is singular or too ill-conditioned to apply", path)
    return matrix


def check_chain(chain: list[Transform], paths: list[Path]) -> None:
    """Refuse a chain of matrices (points go through the first, then the next) whose product overflows: each
    file finite, their product not. The error names the file where it first does."""
    matrix = np.eye(4)
    with np.errstate(over="ignore", invalid="ignore"):
        for step, path in zip(chain, paths, strict=True):
            if step.matrix is None:
                continue
            matrix = step.matrix @ matrix
            if not np.isfinite(matrix).all() or not np.isfinite(np.linalg.cond(matrix[:3, :3])):
                raise InputError("the chain of transforms up to this one overflows (not finite)", path)


def _itk_matrix(kind: str, fields: dict[str, str], path: Path) -> np.ndarray:
    """The LPS 4×4 matrix of one ITK transform block (its ``Parameters`` and ``FixedParameters``)."""
    try:
        parameters = [float(v) for v in fields.get("Parameters", "").split()]
        fixed = [float(v) for v in fields.get("FixedParameters", "").split()]
    except ValueError:
        raise InputError(f"unreadable {kind} parameters", path) from None
    centre = np.array(fixed[:3]) if len(fixed) >= 3 else np.zeros(3)
    linear = np.eye(3)
    expected = {"AffineTransform_": 12, "MatrixOffsetTransformBase_": 12, "TranslationTransform_": 3,
                "Euler3DTransform_": 6, "VersorRigid3DTransform_": 6, "Similarity3DTransform_": 7}
    family = next((name for name in expected if kind.startswith(name)), None)
    if family is None or not kind.endswith("_3_3"):  # 3-D transforms only
        raise InputError(f"unsupported transform type {kind}", path)
    if len(parameters) != expected[family]:
        raise InputError(f"{kind} needs {expected[family]} parameters, found {len(parameters)}", path)
    if family in ("AffineTransform_", "MatrixOffsetTransformBase_"):
        linear, translation = np.array(parameters[:9]).reshape(3, 3), np.array(parameters[9:])
    elif family == "TranslationTransform_":
        translation = np.array(parameters)
    elif family == "Euler3DTransform_":
        zyx = len(fixed) >= 4 and fixed[3] != 0  # ITK's ComputeZYX flag
        linear = _euler(parameters[0], parameters[1], parameters[2], zyx=zyx)
        translation = np.array(parameters[3:6])
    else:  # a versor (unit quaternion's vector part), a translation and, for a similarity, a scale
        linear = _versor(np.array(parameters[:3]), path) * (parameters[6] if family == "Similarity3DTransform_"
                                                             else 1.0)
        translation = np.array(parameters[3:6])
    if not (np.isfinite(linear).all() and np.isfinite(translation).all() and np.isfinite(centre).all()):
        raise InputError("transform parameters are not finite", path)
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation + centre - linear @ centre  # ITK: A (x − c) + c + t
    return matrix


def _versor(vector: np.ndarray, path: Path) -> np.ndarray:
    """The rotation of an ITK versor ``(x, y, z)``, its scalar part ``√(1 − |v|²)``."""
    norm = float(vector @ vector)
    if norm > 1.0 + 1e-9:
        raise InputError("a versor's vector part must have a norm of at most 1", path)
    x, y, z = vector
    w = math.sqrt(max(0.0, 1.0 - norm))
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _euler(angle_x: float, angle_y: float, angle_z: float, zyx: bool) -> np.ndarray:
    """ITK Euler3DTransform's rotation: R = Rz · Ry · Rx with ComputeZYX, else (its default) R = Rz · Rx · Ry."""
    cx, sx, cy, sy, cz, sz = (math.cos(angle_x), math.sin(angle_x), math.cos(angle_y), math.sin(angle_y),
                              math.cos(angle_z), math.sin(angle_z))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx if zyx else rz @ rx @ ry


def _read_field(path: Path) -> Transform:
    import nibabel as nib

    from mitk.io.nifti import read_nifti

    image = read_nifti(path)
    array = np.asarray(image.array)
    if array.ndim == 5 and array.shape[3] == 1:
        array = array[:, :, :, 0, :]
    if array.ndim != 4 or array.shape[3] != 3:
        raise InputError(f"a displacement field needs 3 vector components, got shape {array.shape}", path)
    header = nib.load(path).header
    intent = header.get_intent()[0] if isinstance(header, nib.Nifti1Header) else "none"
    if intent not in ("vector", "displacement vector"):
        raise InputError(f"a displacement field needs the NIfTI vector intent, not {intent!r}", path)
    field = np.asarray(array, np.float64) * np.array([-1.0, -1.0, 1.0])  # ITK's LPS vectors → RAS
    if not np.isfinite(field).all():
        raise InputError("the displacement field has NaN or infinite values", path)
    return Transform(field=field, field_affine=np.asarray(image.affine, float))
