"""The optimisation loops of the classical registrations: ``affine_register`` (sampled metric, Gaussian pyramid,
Adam) and ``deformable_register`` (affine, then a dense field with MONAI's Warp), with their settings checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mitk.errors import PluginError
from mitk.image import Image
from mitk_builtin._registration_metrics import fixed_bins, masked_loss, similarity
from mitk_builtin._registration_pyramid import (
    Volume,
    inside,
    intensity_window,
    normalise,
    sample,
    shrink,
    shrink_factors,
    shrink_mask,
    to_mask,
    to_volume,
    world_to_grid,
)
from mitk_builtin._registration_transform import (
    affine_resample,
    as_volume,
    flat_axis,
    in_plane,
    initial_transform,
    keep_in_plane,
    plane_normal,
    resize_field,
)

TRANSFORMS = ("rigid", "similarity", "affine")
METRICS = ("mi", "ncc", "mse")
INITIALISATIONS = ("com", "moments", "geometry", "identity")
DEFORMABLE_LOSSES = ("lncc", "mse", "mi")
REGULARISERS = ("bending", "diffusion")


@dataclass
class Level:
    spacing_mm: float
    iterations: int


def resolve_levels(config: dict[str, Any], fixed_spacing: np.ndarray) -> list[Level]:
    shrink_list = [float(f) for f in config["levels"]]
    iterations = [int(n) for n in config["iterations"]]
    if not shrink_list or len(iterations) != len(shrink_list):
        raise PluginError("settings 'levels' and 'iterations' must be lists of the same, non-zero length")
    base = float(np.min(fixed_spacing))
    return [Level(max(base, base * f), n) for f, n in zip(shrink_list, iterations, strict=True)]


def affine_register(fixed: Image, moving: Image, config: dict[str, Any], device: torch.device,
                    fixed_mask: Image | None = None, moving_mask: Image | None = None
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """Optimise a centred rigid/similarity/affine transform; returns the matrix and a report.

    With masks (ITK's semantics), the metric is sampled only at fixed points inside ``fixed_mask``, and only
    samples whose mapped point falls inside ``moving_mask`` count; the centres of mass of the initialisation
    are taken inside the masks too (the intensity windows stay those of the whole images, so that one
    intensity keeps one normalised value in both).
    """
    started = time.perf_counter()
    kind, metric, init = config["transform"], config["metric"], config["init"]
    if kind not in TRANSFORMS:
        raise PluginError(f"setting transform must be one of {', '.join(TRANSFORMS)}, not {kind!r}")
    if metric not in METRICS:
        raise PluginError(f"setting metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if init not in INITIALISATIONS:
        raise PluginError(f"setting init must be one of {', '.join(INITIALISATIONS)}, not {init!r}")
    bins = int(config["bins"])
    generator = torch.Generator(device="cpu").manual_seed(int(config["seed"]))

    fixed_volume, moving_volume = to_volume(fixed, device), to_volume(moving, device)
    fixed_inside, moving_inside = to_mask(fixed_mask, fixed_volume), to_mask(moving_mask, moving_volume)
    fixed_window, moving_window = intensity_window(fixed_volume.tensor), intensity_window(moving_volume.tensor)
    transform = initial_transform(fixed_volume, moving_volume, fixed_window, moving_window, kind, init,
                                  fixed_inside, moving_inside).to(device)
    moving_mask_grid = None if moving_inside is None else world_to_grid(moving_volume.affine, moving_volume.shape,
                                                                        device).double()
    levels = resolve_levels(config, fixed_volume.spacing[[n > 1 for n in fixed_volume.shape]])
    normal = plane_normal(fixed_volume, device)
    report: dict[str, Any] = {"metric": metric, "transform": kind, "iterations": [], "similarity": []}
    if fixed_inside is not None or moving_inside is not None:
        report["masks"] = [name for name, mask in (("fixed", fixed_inside), ("moving", moving_inside))
                           if mask is not None]
        report["counted_share"] = []  # of the sampled points, the share the metric counted at each level's end
    for level in levels:
        fixed_factors = shrink_factors(fixed_volume.spacing, level.spacing_mm, fixed_volume.shape)
        fixed_level = shrink(fixed_volume, fixed_factors)
        moving_level = shrink(moving_volume, shrink_factors(moving_volume.spacing, level.spacing_mm,
                                                            moving_volume.shape))
        moving_values = normalise(moving_level.tensor, moving_window)
        fixed_values = normalise(fixed_level.tensor, fixed_window).flatten()
        if fixed_inside is None:
            count = fixed_values.numel()
            samples = min(count, int(config["samples"]))
            chosen = torch.randint(count, (samples,), generator=generator).to(device)
        else:  # sample only fixed points inside the fixed mask
            candidates = torch.nonzero(shrink_mask(fixed_inside, fixed_factors).flatten()).squeeze(1)
            samples = min(candidates.numel(), int(config["samples"]))
            chosen = candidates[torch.randint(candidates.numel(), (samples,), generator=generator).to(device)]
        index = torch.stack(torch.unravel_index(chosen, fixed_level.shape), dim=-1).double()
        world = index @ torch.as_tensor(fixed_level.affine[:3, :3].T, device=device) + torch.as_tensor(
            fixed_level.affine[:3, 3], device=device)
        points = torch.cat([world, torch.ones(samples, 1, dtype=torch.float64, device=device)], dim=1).float()
        reference = fixed_values[chosen]
        reference_weights = fixed_bins(reference, bins) if metric == "mi" else None
        to_grid = world_to_grid(moving_level.affine, moving_level.shape, device).double()
        step = float(config["step_voxels"]) * level.spacing_mm
        optimiser = torch.optim.Adam(transform.trainable(), lr=step)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, level.iterations),
                                                              eta_min=step * 0.01)
        value = torch.zeros(())
        valid = torch.ones(samples, dtype=torch.bool, device=device)
        done = 0
        for done in range(1, level.iterations + 1):  # noqa: B007 - the count is reported
            optimiser.zero_grad(set_to_none=True)
            grid = points @ (to_grid @ transform.matrix())[:3].T.float()
            warped = sample(moving_values, grid)[0]
            valid = inside(grid)
            if moving_inside is not None and moving_mask_grid is not None:  # only samples inside the moving mask
                with torch.no_grad():
                    mask_points = points.double() @ (moving_mask_grid @ transform.matrix())[:3].T
                    valid = valid & (sample(moving_inside.float(), mask_points.float(), mode="nearest")[0] > 0.5)
            value = similarity(metric, reference, reference_weights, warped, valid, bins)
            if "counted_share" in report and "counted_share_start" not in report:
                report["counted_share_start"] = round(float(valid.float().mean()), 4)
            (-value).backward()
            if normal is not None:
                keep_in_plane(transform, normal)
            optimiser.step()
            schedule.step()
        report["iterations"].append(done)
        report["similarity"].append(float(value.detach()))
        if "counted_share" in report:
            report["counted_share"].append(round(float(valid.float().mean()), 4))
    check_not_collapsed(report)
    report["seconds"] = time.perf_counter() - started
    return transform.matrix().detach().cpu().numpy(), report


COLLAPSE_SHARE = 0.25
"""A masked registration whose counted share of samples ends below this fraction of its share at the start has
collapsed: the transform found a region where few samples count and the metric looks good on them alone."""


def check_not_collapsed(report: dict[str, Any]) -> None:
    """Refuse a masked result that kept too few of its samples (ITK's masked metrics fail the same way, with
    "too many samples map outside moving image buffer"): a wrong transform must not be written as a result."""
    start, shares = report.get("counted_share_start"), report.get("counted_share")
    if not shares:
        return  # no masks
    final, masks = shares[-1], ", ".join(report.get("masks", []))
    if final == 0:  # masks that never met, or a transform that left them
        raise PluginError(f"the {report['transform']} registration counted no sampled fixed point at the end "
                          f"({start or 0:.1%} at the start; masks: {masks}): check that the masks cover the same "
                          "anatomy, or try --set transform=similarity (deformable: affine.transform=similarity)")
    if start and final < COLLAPSE_SHARE * start:
        raise PluginError(
            f"the {report['transform']} registration collapsed: at the end {final:.1%} of the sampled fixed "
            f"points counted against {start:.1%} at the start (masks: {masks}); try --set transform=similarity "
            "(deformable: affine.transform=similarity) or fewer degrees of freedom")


def deformable_register(fixed: Image, moving: Image, config: dict[str, Any], device: torch.device,
                        fixed_mask: Image | None = None, moving_mask: Image | None = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Affine, then a dense (optionally diffeomorphic) displacement field on a coarse-to-fine pyramid.

    The affine stage uses both masks; the dense stage's similarity is restricted to the fixed mask and to the
    moving mask as the affine places it on the fixed grid (the regulariser still covers the whole field, which
    carries the motion out of the masks smoothly). A 2-D image (one slice) gets an in-plane field: the dense
    stage runs in 2-D and the field has no out-of-plane part.

    Returns the affine matrix, the displacement ``(I, J, K, 3)`` in RAS mm on the fixed grid (added after the
    matrix, as :class:`~mitk.tasks.register.result.RegistrationResult` defines) and a report.
    """
    from monai.losses import (
        BendingEnergyLoss,
        DiffusionLoss,
        GlobalMutualInformationLoss,
        LocalNormalizedCrossCorrelationLoss,
    )
    from monai.networks.blocks import DVF2DDF, Warp

    started = time.perf_counter()
    loss_name, regulariser_name = config["loss"], config["regulariser"]
    if loss_name not in DEFORMABLE_LOSSES:
        raise PluginError(f"setting loss must be one of {', '.join(DEFORMABLE_LOSSES)}, not {loss_name!r}")
    if regulariser_name not in REGULARISERS:
        raise PluginError(f"setting regulariser must be one of {', '.join(REGULARISERS)}, "
                          f"not {regulariser_name!r}")
    levels = [float(f) for f in config["levels"]]
    iterations = [int(n) for n in config["iterations"]]
    if not levels or len(levels) != len(iterations) or any(f < 1 for f in levels):
        raise PluginError("settings 'levels' (each ≥ 1) and 'iterations' must be lists of the same length")

    matrix, affine_report = affine_register(fixed, moving, config["affine"], device, fixed_mask, moving_mask)
    fixed_volume, moving_volume = to_volume(fixed, device), to_volume(moving, device)
    fixed_inside = to_mask(fixed_mask, fixed_volume)
    fixed_window, moving_window = intensity_window(fixed_volume.tensor), intensity_window(moving_volume.tensor)
    moved = Volume(affine_resample(moving_volume, fixed_volume, matrix), fixed_volume.affine)
    moving_inside = to_mask(moving_mask, moving_volume)
    if moving_inside is not None:  # the moving mask as the affine places it on the fixed grid
        placed = affine_resample(Volume(moving_inside.float(), moving_volume.affine), fixed_volume, matrix) > 0.5
        fixed_inside = placed if fixed_inside is None else fixed_inside & placed
        if not bool(fixed_inside.any()):
            raise PluginError("after the affine stage, the fixed and moving masks do not overlap")
    flat = flat_axis(fixed_volume.shape)
    in_plane_spacing = fixed_volume.spacing[[n > 1 for n in fixed_volume.shape]]
    similarity_loss: torch.nn.Module
    if loss_name == "lncc":
        similarity_loss = LocalNormalizedCrossCorrelationLoss(spatial_dims=2 if flat is not None else 3,
                                                              kernel_size=int(config["lncc_kernel"]),
                                                              reduction="mean" if fixed_inside is None else "none")
    elif loss_name == "mi":
        similarity_loss = GlobalMutualInformationLoss(num_bins=32)
    else:
        similarity_loss = torch.nn.MSELoss()
    regulariser = BendingEnergyLoss() if regulariser_name == "bending" else DiffusionLoss()
    weight = float(config["regularisation"])
    warp = Warp(mode="bilinear", padding_mode="border")
    integrate = DVF2DDF(num_steps=int(config["integration_steps"])) if config["diffeomorphic"] else None

    report: dict[str, Any] = {"affine": affine_report, "loss": loss_name, "iterations": [], "similarity": []}
    field: torch.Tensor | None = None
    previous = 0.0
    level_shape: tuple[int, int, int] = fixed_volume.shape
    level_affine = fixed_volume.affine
    for factor, count in zip(levels, iterations, strict=True):
        factors = shrink_factors(fixed_volume.spacing, factor * float(np.min(in_plane_spacing)), fixed_volume.shape)
        fixed_level = shrink(fixed_volume, factors)
        moving_level = shrink(moved, factors)
        level_mask = None if fixed_inside is None else in_plane(shrink_mask(fixed_inside, factors), flat)
        level_shape, level_affine = fixed_level.shape, fixed_level.affine
        target = in_plane(normalise(fixed_level.tensor, fixed_window), flat)
        source = in_plane(normalise(moving_level.tensor, moving_window), flat)
        if field is None:
            start = torch.zeros(1, 3, *level_shape, device=device)
        else:
            start = resize_field(field.detach(), previous / factor, level_shape)
        parameters = torch.nn.Parameter(in_plane(start, flat, field=True).clone())
        optimiser = torch.optim.Adam([parameters], lr=float(config["step_voxels"]))
        value = torch.zeros(())
        for _ in range(count):
            optimiser.zero_grad(set_to_none=True)
            ddf = integrate(parameters) if integrate is not None else parameters
            warped = warp(source, ddf)
            value = masked_loss(loss_name, similarity_loss, warped, target, level_mask)
            (value + weight * regulariser(ddf)).backward()
            optimiser.step()
        field, previous = as_volume(parameters.detach(), flat), factor
        report["iterations"].append(count)
        report["similarity"].append(-float(value.detach()))
    assert field is not None
    velocity = in_plane(field, flat, field=True)
    ddf = as_volume((integrate(velocity) if integrate is not None else velocity).detach(), flat)
    # Level voxels → fixed-world mm, onto the fixed grid, then through the affine's linear part.
    millimetres = torch.einsum("ij,bj...->bi...", torch.as_tensor(level_affine[:3, :3], dtype=torch.float32,
                                                                     device=device), ddf)
    fine = resize_field(millimetres, previous, fixed_volume.shape) / previous  # values are mm: undo the scaling
    displacement = torch.einsum("ij,bj...->bi...", torch.as_tensor(matrix[:3, :3], dtype=torch.float32,
                                                                    device=device), fine)
    report["seconds"] = time.perf_counter() - started
    field_ras = np.ascontiguousarray(np.moveaxis(displacement[0].cpu().numpy(), 0, -1), dtype=np.float64)
    return matrix, field_ras, report
