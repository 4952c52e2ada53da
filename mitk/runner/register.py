"""Registration: a fixed and a moving image in; a transform and the moving image on the fixed grid out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitk.errors import PluginError
from mitk.runner.batch import CaseJob
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.tasks import RegistrationPlugin
from mitk.types import Image, RegistrationResult


def warp(moving: Image, fixed: Image, matrix: np.ndarray | None, displacement: np.ndarray | None = None,
         mode: str = "bilinear", slab_voxels: int = 4_000_000) -> np.ndarray:
    """Sample ``moving`` at ``matrix @ x + displacement`` for every fixed-grid world point ``x``.

    Works slab by slab along the first fixed axis so that the sampling grid never holds more than about
    ``slab_voxels`` points (a whole-volume float64 grid of a 512×512×300 CT would take gigabytes).
    """
    shape = fixed.spatial_shape
    world_matrix = np.asarray(matrix if matrix is not None else np.eye(4), float) @ fixed.affine
    to_moving_voxels = torch.as_tensor(np.linalg.inv(moving.affine))
    field = None
    if displacement is not None:
        field = np.asarray(displacement, dtype=float)
        if field.shape != (*shape, 3):
            raise PluginError(f"displacement field has shape {field.shape}, expected {(*shape, 3)} (fixed grid, mm)")
    size = torch.tensor(moving.spatial_shape, dtype=torch.float64)
    source = torch.from_numpy(np.array(moving.array, dtype=np.float32))[None, None]  # a copy: inputs may be read-only
    out = np.empty(shape, dtype=np.float32)
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    j, k = torch.meshgrid(torch.arange(shape[1], dtype=torch.float64), torch.arange(shape[2], dtype=torch.float64),
                          indexing="ij")
    for start in range(0, shape[0], step):
        i = torch.arange(start, min(start + step, shape[0]), dtype=torch.float64)
        voxels = torch.stack([i[:, None, None].expand(-1, *j.shape), j.expand(len(i), -1, -1),
                              k.expand(len(i), -1, -1), torch.ones(len(i), *j.shape, dtype=torch.float64)], dim=-1)
        points = voxels.reshape(-1, 4) @ torch.as_tensor(world_matrix.T)
        if field is not None:
            points[:, :3] += torch.from_numpy(np.ascontiguousarray(field[start:start + len(i)]).reshape(-1, 3))
        moving_voxels = (points @ to_moving_voxels.T)[:, :3]
        normalised = 2 * moving_voxels / (size - 1).clamp(min=1) - 1  # align_corners=True convention
        grid = normalised.flip(-1).reshape(1, len(i), *j.shape, 3).float()  # grid_sample wants (k, j, i) order
        sampled = torch.nn.functional.grid_sample(source, grid, mode=mode, padding_mode="zeros", align_corners=True)
        out[start:start + len(i)] = sampled[0, 0].numpy()
    return out


def resample_through(moving: Image, reference: Image, mapping: Callable[[np.ndarray], np.ndarray],
                     mode: str = "bilinear", slab_voxels: int = 2_000_000) -> np.ndarray:
    """Sample ``moving`` at ``mapping(x)`` for every reference-grid world point ``x`` (RAS mm, ``(N, 3)``).

    ``mode`` is ``bilinear`` (trilinear), ``nearest`` or ``labels`` (label-wise linear: each label's indicator
    is interpolated and the largest wins, which keeps label boundaries smooth without inventing values).
    """
    shape = reference.spatial_shape
    source_array = np.asarray(moving.array)
    values = np.unique(source_array) if mode == "labels" else None
    to_moving_voxels = np.linalg.inv(moving.affine)
    size = np.array(moving.spatial_shape, dtype=float)
    if mode == "labels":
        assert values is not None
        out = np.zeros(shape, dtype=source_array.dtype)
        best = np.full(shape, -1.0, dtype=np.float32)
    else:
        out = np.empty(shape, dtype=np.float32)
    source = torch.from_numpy(np.array(source_array, dtype=np.float32))[None, None]
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        voxels = np.indices((stop - start, shape[1], shape[2]), dtype=np.float64).reshape(3, -1)
        voxels[0] += start
        world = (reference.affine[:3, :3] @ voxels + reference.affine[:3, 3:]).T
        moved = mapping(world)
        index = moved @ to_moving_voxels[:3, :3].T + to_moving_voxels[:3, 3]
        normalised = 2 * index / np.maximum(size - 1, 1) - 1
        grid = torch.from_numpy(normalised[:, ::-1].copy()).float().reshape(1, stop - start, shape[1], shape[2], 3)
        if mode == "labels":
            assert values is not None
            for value in values:
                indicator = (source == float(value)).float()
                weight = torch.nn.functional.grid_sample(indicator, grid, mode="bilinear", padding_mode="zeros",
                                                         align_corners=True)[0, 0].numpy()
                if value == 0:  # outside the moving image is background
                    inside = np.all(np.abs(normalised) <= 1, axis=1).reshape(weight.shape)
                    weight = np.where(inside, weight, 1.0)
                better = weight > best[start:stop]
                best[start:stop][better] = weight[better]
                out[start:stop][better] = value
        else:
            sampled = torch.nn.functional.grid_sample(source, grid, mode="nearest" if mode == "nearest" else "bilinear",
                                                      padding_mode="zeros", align_corners=True)
            out[start:stop] = sampled[0, 0].numpy()
    return out


def takes_masks(plugin: RegistrationPlugin) -> bool:
    """Whether the plugin's ``register`` accepts the ``fixed_mask=`` and ``moving_mask=`` keywords (plugins
    written before masks existed do not, and keep working without them)."""
    import inspect

    if plugin.is_learned():
        return False
    parameters = inspect.signature(plugin.register).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    return all(name in parameters and parameters[name].kind is not inspect.Parameter.POSITIONAL_ONLY
               for name in ("fixed_mask", "moving_mask"))


def mask_on(mask: Image, image: Image, role: str) -> Image:
    """``mask`` on ``image``'s grid as a 0/1 ``uint8`` label image: as it is when it shares the grid, else
    resampled nearest-neighbour by world position. An empty mask, or one that misses the image, is refused."""
    from mitk.errors import InputError
    from mitk.io.reader import as_volume_array

    array = as_volume_array(np.asarray(mask.array))
    if array.ndim != 3:
        raise InputError(f"{role} mask must be a 3-D label image, got shape {array.shape}", mask.path)
    if not np.any(array):
        raise InputError(f"{role} mask is empty (no non-zero voxel)", mask.path)
    if array.shape == image.spatial_shape and np.allclose(mask.affine, image.affine, atol=1e-4):
        inside = array != 0
    else:
        indicator = Image(array=(array != 0).astype(np.float32), affine=mask.affine, path=mask.path)
        inside = resample_through(indicator, image, lambda world: world, mode="nearest") > 0.5
        if not inside.any():
            raise InputError(f"{role} mask does not overlap the {role} image", mask.path)
    return Image(array=inside.astype(np.uint8), affine=image.affine, path=mask.path)


class RegistrationRunner:
    """Aligns moving images to fixed ones with a loaded registration model (classical or learned).

    ``fixed_mask`` and ``moving_mask`` (label images or paths; any non-zero voxel is inside) restrict the
    plugin's metric, for plugins whose ``register`` takes them; a mask on another grid than its image is
    resampled onto it (nearest neighbour, by world position).
    """

    def __init__(self, model: LoadedModel, fixed_mask: Any = None, moving_mask: Any = None) -> None:
        if not isinstance(model.plugin, RegistrationPlugin):
            raise TypeError("RegistrationRunner needs a registration plugin")
        self.model = model
        self.plugin: RegistrationPlugin = model.plugin
        self.learned = self.plugin.is_learned()
        if self.learned and model.network is None:
            raise PluginError(f"plugin {model.name!r} neither overrides register() nor has a network")
        if (fixed_mask is not None or moving_mask is not None) and not takes_masks(self.plugin):
            raise PluginError(f"plugin {model.name!r} does not take masks (its register() has no fixed_mask= "
                              "and moving_mask= keywords)")
        from mitk.io.memory import as_image

        self.fixed_mask = None if fixed_mask is None else as_image(fixed_mask)
        self.moving_mask = None if moving_mask is None else as_image(moving_mask)
        self.preprocess = self.plugin.inference_transforms(model.config) if self.learned else None

    def __call__(self, fixed: Image, moving: Image) -> RegistrationResult:
        """Register ``moving`` to ``fixed``; ``metrics`` holds the plugin's report (final similarity, iterations
        per level …) and the seconds the registration took."""
        import time

        masks: dict[str, Image] = {}
        if self.fixed_mask is not None:
            masks["fixed_mask"] = mask_on(self.fixed_mask, fixed, "fixed")
        if self.moving_mask is not None:
            masks["moving_mask"] = mask_on(self.moving_mask, moving, "moving")
        started = time.perf_counter()
        matrix: np.ndarray | None
        displacement: np.ndarray | None
        report: dict[str, Any] = {}
        if self.learned:
            matrix, displacement = None, self.learned_displacement(fixed, moving)
        else:
            outcome = self.plugin.register(fixed, moving, self.model.network, self.model.config, **masks)
            matrix, displacement = outcome[0], outcome[1]
            if len(outcome) > 2:
                report = dict(outcome[2])
        report["seconds"] = round(time.perf_counter() - started, 3)
        array = warp(moving, fixed, matrix, displacement)
        if moving.array.dtype.kind in "iu":
            array = np.rint(array).astype(moving.array.dtype)
        warped = Image(array=array, affine=fixed.affine, path=None, meta=dict(fixed.meta))
        return RegistrationResult(warped=warped, matrix=matrix, displacement=displacement, metrics=report)

    @torch.inference_mode()
    def learned_displacement(self, fixed: Image, moving: Image) -> np.ndarray:
        """The network's displacement, as ``(I, J, K, 3)`` RAS millimetres on the fixed grid.

        The moving image is first sampled on the fixed grid (world coordinates unchanged), so both pass through
        the same spatial preprocessing onto one network grid; a displacement of ``d`` network voxels there is
        ``A[:3, :3] @ d`` millimetres in the world, resampled (trilinear) onto the fixed grid.
        """
        from mitk.runner.geometry import to_input_grid
        from mitk.runner.tensors import network_batch, to_meta_tensor

        assert self.preprocess is not None and self.model.network is not None
        on_fixed_grid = Image(array=warp(moving, fixed, None), affine=fixed.affine)
        fixed_input = self.preprocess({"image": to_meta_tensor(fixed)})["image"]
        moving_input = self.preprocess({"image": to_meta_tensor(on_fixed_grid)})["image"]
        network_affine = np.asarray(fixed_input.affine, dtype=np.float64)
        if moving_input.shape != fixed_input.shape or not np.allclose(
                np.asarray(moving_input.affine, dtype=np.float64), network_affine, atol=1e-4):
            raise PluginError(f"plugin {self.model.name!r}: its transforms put the fixed and moving images on "
                              "different grids (use deterministic spatial transforms)")
        device = self.model.device
        ddf = self.plugin.predict_displacement(self.model.network, network_batch(fixed_input, device),
                                               network_batch(moving_input, device), self.model.config)
        spatial = tuple(int(n) for n in fixed_input.shape[1:])
        if tuple(ddf.shape) != (1, 3, *spatial):
            raise PluginError(f"plugin {self.model.name!r} gave a displacement of shape {tuple(ddf.shape)}, "
                              f"expected {(1, 3, *spatial)}")
        linear = torch.as_tensor(network_affine[:3, :3], dtype=torch.float32)
        millimetres = torch.einsum("ij,j...->i...", linear, ddf[0].float().cpu())
        field = to_input_grid(millimetres, network_affine, fixed.affine, fixed.spatial_shape)
        return np.ascontiguousarray(np.moveaxis(np.asarray(field, dtype=np.float64), 0, -1))


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


def make_register_job(model: LoadedModel, policy: OutputPolicy, fixed_path: Path, *,
                      transform: Path | None = None, series: str | None = None, fixed_series: str | None = None,
                      allow_resample: bool = False, fixed_mask: Path | None = None,
                      moving_mask: Path | None = None) -> CaseJob:
    """The batch job of ``mitk register``: each moving image on the fixed grid, and its transform.

    ``series`` picks the series of each DICOM input, fixed and moving alike, unless ``fixed_series`` names
    the fixed image's own; ``allow_resample`` lets irregular DICOM stacks be resampled on reading.
    ``fixed_mask`` and ``moving_mask`` are label images that restrict the metric (see
    :class:`RegistrationRunner`).
    """
    import contextlib

    from mitk.errors import PluginError
    from mitk.io.atomic import atomic_path
    from mitk.io.reader import load_image, require_volume
    from mitk.io.results import write_warped
    from mitk.io.transforms import is_field_path
    from mitk.runner.batch import CaseOutcome

    fixed = require_volume(load_image(fixed_path, series=fixed_series if fixed_series is not None else series,
                                      allow_resample=allow_resample))
    runner = RegistrationRunner(model, *(None if path is None else require_volume(load_image(path))
                                         for path in (fixed_mask, moving_mask)))
    if runner.fixed_mask is not None:  # refused if empty before any case runs; resampled once, not per case
        runner.fixed_mask = mask_on(runner.fixed_mask, fixed, "fixed")

    def process(case: Any) -> CaseOutcome:
        target = policy.target(case, "_warped", ".nii.gz")
        if policy.should_skip(target, case, inputs=(fixed_path,)):
            return CaseOutcome(output=target, skipped=True)
        if transform is not None:  # refuse before any compute or write, as for the image
            policy.check_companion(transform, case, inputs=(fixed_path,))
        moving = require_volume(load_image(case.path, series=series, allow_resample=allow_resample))
        result = runner(fixed, moving)
        if transform is not None and not is_field_path(transform) and (
                result.matrix is None or result.displacement is not None):
            raise PluginError(f"plugin {model.name!r} gave a displacement field; --transform needs a matrix "
                              "for .tfm/.txt/.json (write .nii.gz for the field)")
        details: dict[str, Any] = {"matrix_ras": None if result.matrix is None else result.matrix.tolist(),
                                   "registration": result.metrics}
        inputs = policy.inputs_for(case, fixed_path)
        # The warped image and the transform, both or neither; the stack commits the warped image last, so that
        # --skip-existing redoes a case interrupted between the two renames.
        with contextlib.ExitStack() as outputs:
            warped = outputs.enter_context(atomic_path(target, overwrite=policy.overwrite, inputs=inputs))
            write_warped(result, warped, like=fixed, plugin=model.name)  # as result.save()
            if transform is not None:
                temporary = outputs.enter_context(atomic_path(transform, overwrite=policy.companion_overwrite,
                                                              inputs=inputs))
                write_transform(result, temporary, fixed)
                details["transform"] = str(transform)
        return CaseOutcome(output=target, details=details)

    return process
