"""Registration: a fixed and a moving image in; a transform and the moving image on the fixed grid out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitk.errors import PluginError
from mitk.image import Image
from mitk.runner.batch import CaseJob
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.runner.resample import resample_through, warp
from mitk.tasks.register.plugin import RegistrationPlugin
from mitk.tasks.register.result import RegistrationResult, write_transform, write_warped


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


def is_slice(image: Image) -> bool:
    """Whether ``image`` is a 2-D image (stored as a volume with exactly one axis of one voxel)."""
    return sum(n == 1 for n in image.spatial_shape) == 1


def refuse_constant(image: Image, role: str) -> None:
    """Refuse an image whose voxels all hold one value: it has no structure to align, and any transform
    reported for it would be invented."""
    from mitk.errors import InputError

    array = np.asarray(image.array)
    if array.size and array.min() == array.max():
        raise InputError(f"the {role} image is constant (every voxel is {array.flat[0]}): nothing to register",
                         image.path)


def refuse_degenerate_pair(fixed: Image, moving: Image) -> None:
    """Refuse a constant fixed or moving image, and a 2-D image paired with a 3-D one (no slice-to-volume
    registration: the answer would be a transform that ignores the missing axis)."""
    from mitk.errors import InputError

    refuse_constant(fixed, "fixed")
    refuse_constant(moving, "moving")
    if is_slice(fixed) != is_slice(moving):
        flat, full = (moving, fixed) if is_slice(moving) else (fixed, moving)
        raise InputError(f"a 2-D image (shape {flat.spatial_shape}) cannot be registered to a 3-D one "
                         f"(shape {full.spatial_shape}); give two volumes or two slices",
                         moving.path if moving is flat else fixed.path)


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

        refuse_degenerate_pair(fixed, moving)
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
            networks = self.model.members or (self.model.network,)
            fields = [self.learned_displacement(fixed, moving, network) for network in networks]
            matrix, displacement = None, (fields[0] if len(fields) == 1 else np.mean(fields, axis=0))
            if len(fields) > 1:  # an ensemble: the mean field, and how far the members stray from it
                report["spread"] = displacement_spread(fields)
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
    def learned_displacement(self, fixed: Image, moving: Image, network: Any = None) -> np.ndarray:
        """The network's displacement, as ``(I, J, K, 3)`` RAS millimetres on the fixed grid.

        The moving image is first sampled on the fixed grid (world coordinates unchanged), so both pass through
        the same spatial preprocessing onto one network grid; a displacement of ``d`` network voxels there is
        ``A[:3, :3] @ d`` millimetres in the world, resampled (trilinear) onto the fixed grid.
        """
        from mitk.runner.geometry import to_input_grid
        from mitk.runner.tensors import network_batch, to_meta_tensor

        network = self.model.network if network is None else network
        assert self.preprocess is not None and network is not None
        on_fixed_grid = Image(array=warp(moving, fixed, None), affine=fixed.affine)
        fixed_input = self.preprocess({"image": to_meta_tensor(fixed)})["image"]
        moving_input = self.preprocess({"image": to_meta_tensor(on_fixed_grid)})["image"]
        network_affine = np.asarray(fixed_input.affine, dtype=np.float64)
        if moving_input.shape != fixed_input.shape or not np.allclose(
                np.asarray(moving_input.affine, dtype=np.float64), network_affine, atol=1e-4):
            raise PluginError(f"plugin {self.model.name!r}: its transforms put the fixed and moving images on "
                              "different grids (use deterministic spatial transforms)")
        device = self.model.device
        ddf = self.plugin.predict_displacement(network, network_batch(fixed_input, device),
                                               network_batch(moving_input, device), self.model.config)
        spatial = tuple(int(n) for n in fixed_input.shape[1:])
        if tuple(ddf.shape) != (1, 3, *spatial):
            raise PluginError(f"plugin {self.model.name!r} gave a displacement of shape {tuple(ddf.shape)}, "
                              f"expected {(1, 3, *spatial)}")
        linear = torch.as_tensor(network_affine[:3, :3], dtype=torch.float32)
        millimetres = torch.einsum("ij,j...->i...", linear, ddf[0].float().cpu())
        field = to_input_grid(millimetres, network_affine, fixed.affine, fixed.spatial_shape)
        return np.ascontiguousarray(np.moveaxis(np.asarray(field, dtype=np.float64), 0, -1))


def masks_of(runner: RegistrationRunner, moving: Image) -> Image | None:
    """The runner's moving mask on ``moving``'s grid, or None."""
    return None if runner.moving_mask is None else mask_on(runner.moving_mask, moving, "moving")

def displacement_spread(fields: list[np.ndarray]) -> dict[str, Any]:
    """How an ensemble's displacement fields ``(I, J, K, 3)`` (RAS mm) disagree: per voxel the root mean square
    distance of the members' displacements from their mean (mm), summarised as its mean, 95th percentile and
    maximum over the fixed grid (the record's ``registration.spread``)."""
    stack = np.asarray(fields, dtype=np.float64)
    distance = np.sqrt(((stack - stack.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
    return {"members": len(fields), "mean_mm": round(float(distance.mean()), 6),
            "p95_mm": round(float(np.percentile(distance, 95)), 6), "max_mm": round(float(distance.max()), 6)}


def inverse_warped_path(target: Path) -> Path:
    """Where ``InverseWarped`` goes beside the warped image ``target``: ``ct_warped.nii.gz`` →
    ``ct_inverse_warped.nii.gz``, ``out.nii.gz`` → ``out_inverse_warped.nii.gz``."""
    from mitk.io.atomic import split_suffix

    stem, _ = split_suffix(target)
    stem = stem.removesuffix("_warped")
    return target.with_name(f"{stem}_inverse_warped.nii.gz")


def make_register_job(model: LoadedModel, policy: OutputPolicy, fixed_path: Path, *,
                      transform: Path | None = None, series: str | None = None, fixed_series: str | None = None,
                      allow_resample: bool = False, fixed_mask: Path | None = None,
                      moving_mask: Path | None = None, inverse_warped: bool = False,
                      preview: bool = False, dicom_sr: bool = False) -> CaseJob:
    """The batch job of ``mitk register``: each moving image on the fixed grid, and its transform.

    ``series`` picks the series of each DICOM input, fixed and moving alike, unless ``fixed_series`` names
    the fixed image's own; ``allow_resample`` lets irregular DICOM stacks be resampled on reading.
    ``fixed_mask`` and ``moving_mask`` are label images that restrict the metric (see
    :class:`RegistrationRunner`). With ``transform``, its inverse is written beside it
    (:func:`~mitk.io.transforms.inverse_path`); ``inverse_warped`` also writes the fixed image on the moving grid
    (``<case>_inverse_warped.nii.gz``) and ``preview`` a checkerboard/edge PNG (``<case>_warped_preview.png``);
    see :mod:`mitk.tasks.register.inverse` for the conventions. ``dicom_sr`` (a DICOM fixed image) writes the
    quality figures as a TID 1500 SR (``<case>_warped_sr.dcm``, :mod:`mitk.tasks.register.dicom_sr`).
    """
    import contextlib

    from mitk.errors import PluginError
    from mitk.io.atomic import atomic_path
    from mitk.io.nifti import write_nifti
    from mitk.io.reader import load_image, require_volume
    from mitk.io.transforms import inverse_path, is_field_path
    from mitk.runner.batch import CaseOutcome
    from mitk.runner.fit import check_fit
    from mitk.runner.outputs import sibling
    from mitk.tasks.register.inverse import inverse_displacement, inverse_warped_array, write_inverse_transform

    fixed = require_volume(load_image(fixed_path, series=fixed_series if fixed_series is not None else series,
                                      allow_resample=allow_resample))
    refuse_constant(fixed, "fixed")  # before any case runs: every case would be refused
    if dicom_sr and fixed.meta.get("dicom") is None:
        from mitk.errors import UsageError

        raise UsageError("--dicom-sr needs a DICOM fixed image", fixed_path)
    check_fit(model.expects, fixed)
    runner = RegistrationRunner(model, *(None if path is None else require_volume(load_image(path))
                                         for path in (fixed_mask, moving_mask)))
    if runner.fixed_mask is not None:  # refused if empty before any case runs; resampled once, not per case
        runner.fixed_mask = mask_on(runner.fixed_mask, fixed, "fixed")

    def process(case: Any) -> CaseOutcome:
        target = policy.target(case, "_warped", ".nii.gz")
        if policy.should_skip(target, case, inputs=(fixed_path,)):
            return CaseOutcome(output=target, skipped=True)
        companions: dict[str, Path] = {}
        if transform is not None:
            companions["transform"], companions["inverse"] = transform, inverse_path(transform)
        if inverse_warped:
            companions["inverse_warped"] = inverse_warped_path(target)
        if preview:
            companions["preview"] = sibling(target, "_preview", ".png")
        if dicom_sr:
            companions["sr"] = sibling(target, "_sr", ".dcm")
        for path in companions.values():  # refuse before any compute or write, as for the image
            policy.check_companion(path, case, inputs=(fixed_path,))
        moving = require_volume(load_image(case.path, series=series, allow_resample=allow_resample))
        fit = check_fit(model.expects, moving)  # refuse or warn before the registration runs
        result = runner(fixed, moving)
        if transform is not None and not is_field_path(transform) and (
                result.matrix is None or result.displacement is not None):
            raise PluginError(f"plugin {model.name!r} gave a displacement field; --transform needs a matrix "
                              "for .tfm/.txt/.mat/.json (write .nii.gz for the field)")
        details: dict[str, Any] = {"matrix_ras": None if result.matrix is None else result.matrix.tolist(),
                                   "registration": result.metrics, **({"fit": fit} if fit else {})}
        field = None  # the inverse displacement on the moving grid, computed once when a field needs it
        if result.displacement is not None and ("inverse_warped" in companions or (
                transform is not None and is_field_path(transform))):
            field, report = inverse_displacement(result, moving)
            details["inverse"] = report.as_dict()
        inputs = policy.inputs_for(case, fixed_path)
        # The warped image and its companions, all or none; the stack commits the warped image last, so that
        # --skip-existing redoes a case interrupted between the renames.
        with contextlib.ExitStack() as outputs:
            warped = outputs.enter_context(atomic_path(target, overwrite=policy.overwrite, inputs=inputs))
            write_warped(result, warped, like=fixed, plugin=model.name)  # as result.save()

            def temporary(key: str) -> Path:
                return outputs.enter_context(atomic_path(companions[key], overwrite=policy.companion_overwrite,
                                                         inputs=inputs))

            if transform is not None:
                write_transform(result, temporary("transform"), fixed)
                write_inverse_transform(result, temporary("inverse"), moving, field)
                details["transform"], details["inverse_transform"] = str(transform), str(companions["inverse"])
            if "inverse_warped" in companions:
                array = inverse_warped_array(result, fixed, moving, field)
                write_nifti(array, temporary("inverse_warped"), like=moving, description="mitk inverse warped")
                details["inverse_warped"] = str(companions["inverse_warped"])
            if "preview" in companions:
                from mitk.tasks.register.preview import save_registration_preview

                save_registration_preview(fixed, result.warped, temporary("preview"))
                details["preview"] = str(companions["preview"])
            if "sr" in companions:
                from mitk.tasks.register.dicom_sr import registration_figures, write_registration_sr

                figures = registration_figures(fixed, moving, result, fixed_mask=runner.fixed_mask,
                                               moving_mask=masks_of(runner, moving))
                write_registration_sr(figures, fixed, moving, temporary("sr"), plugin_name=model.name)
                details["sr"], details["sr_figures"] = str(companions["sr"]), figures
        return CaseOutcome(output=target, details=details)

    return process
