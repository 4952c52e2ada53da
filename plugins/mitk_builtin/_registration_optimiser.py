"""The optimisation loops of the classical registrations: ``affine_register`` (sampled metric, Gaussian pyramid,
Adam) and ``deformable_register`` (affine, then a dense field with MONAI's Warp), with their settings checks."""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mitk.errors import MitkWarning, PluginError
from mitk.image import Image
from mitk_builtin._registration_metrics import fixed_bins, similarity
from mitk_builtin._registration_pyramid import (
    Volume,
    foreground,
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
    CentredTransform,
    affine_resample,
    flat_axis,
    from_matrix,
    initial_transform,
    keep_in_plane,
    plane_normal,
)

TRANSFORMS = ("rigid", "similarity", "affine")
METRICS = ("mi", "ncc", "mse")
INITIALISATIONS = ("auto", "com", "moments", "geometry", "identity")
STARTS = ("identity", "geometry", "com")
"""The starts ``init=auto`` compares by the metric at the coarsest level."""


class Adam:
    """Adam (β = 0.9, 0.999; ε = 1e-8), as ``torch.optim.Adam`` computes it, with the learning rate given at each
    step: ``torch.optim`` imports ``torch._dynamo`` on first use, about 5 s of a few-second registration."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self.parameters, self.count = parameters, 0
        self.first = [torch.zeros_like(p) for p in parameters]
        self.second = [torch.zeros_like(p) for p in parameters]

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self, rate: float) -> None:
        self.count += 1
        first_bias, second_bias = 1 - 0.9**self.count, 1 - 0.999**self.count
        for parameter, first, second in zip(self.parameters, self.first, self.second, strict=True):
            if parameter.grad is None:
                continue
            first.lerp_(parameter.grad, 0.1)
            second.mul_(0.999).addcmul_(parameter.grad, parameter.grad, value=0.001)
            denominator = (second.sqrt() / math.sqrt(second_bias)).add_(1e-8)
            parameter.addcdiv_(first, denominator, value=-rate / first_bias)


class RegistrationQualityWarning(MitkWarning):
    """A registration result worse than where it started, or with implausible scales."""


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


class AffineProblem:
    """The fixed and moving volumes, masks and metric of one affine registration, and its sampled levels."""

    def __init__(self, fixed: Image, moving: Image, config: dict[str, Any], device: torch.device,
                 fixed_mask: Image | None, moving_mask: Image | None) -> None:
        self.metric, self.bins, self.device = config["metric"], int(config["bins"]), device
        self.samples = int(config["samples"])
        self.generator = torch.Generator(device="cpu").manual_seed(int(config["seed"]))
        self.fixed, self.moving = to_volume(fixed, device), to_volume(moving, device)
        self.fixed_inside, self.moving_inside = to_mask(fixed_mask, self.fixed), to_mask(moving_mask, self.moving)
        self.fixed_window, self.moving_window = intensity_window(self.fixed.tensor), intensity_window(
            self.moving.tensor)
        # Without a moving mask, only points landing on the moving image's signal count: a skull-stripped
        # template's brain then matches the brain of a whole head, not the head (the scalp against its edge).
        self.auto_foreground = self.moving_inside is None and bool(config.get("foreground", True))
        if self.auto_foreground:
            self.moving_inside = foreground(self.moving, self.moving_window, 0.0)
        self.moving_mask_grid = None if self.moving_inside is None else world_to_grid(
            self.moving.affine, self.moving.shape, device).double()

    def level(self, spacing_mm: float) -> LevelSamples:
        """The fixed points sampled at one pyramid level, their intensities, and the moving level."""
        device = self.device
        fixed_factors = shrink_factors(self.fixed.spacing, spacing_mm, self.fixed.shape)
        fixed_level = shrink(self.fixed, fixed_factors)
        moving_level = shrink(self.moving, shrink_factors(self.moving.spacing, spacing_mm, self.moving.shape))
        fixed_values = normalise(fixed_level.tensor, self.fixed_window).flatten()
        if self.fixed_inside is None:
            count = fixed_values.numel()
            samples = min(count, self.samples)
            chosen = torch.randint(count, (samples,), generator=self.generator).to(device)
        else:  # sample only fixed points inside the fixed mask
            candidates = torch.nonzero(shrink_mask(self.fixed_inside, fixed_factors).flatten()).squeeze(1)
            samples = min(candidates.numel(), self.samples)
            chosen = candidates[torch.randint(candidates.numel(), (samples,), generator=self.generator).to(device)]
        _, columns, slices = fixed_level.shape  # not torch.unravel_index: it imports sympy (2-3 s)
        index = torch.stack([chosen // (columns * slices), (chosen // slices) % columns, chosen % slices],
                            dim=-1).double()
        world = index @ torch.as_tensor(fixed_level.affine[:3, :3].T, device=device) + torch.as_tensor(
            fixed_level.affine[:3, 3], device=device)
        points = torch.cat([world, torch.ones(samples, 1, dtype=torch.float64, device=device)], dim=1).float()
        reference = fixed_values[chosen]
        return LevelSamples(points, reference, fixed_bins(reference, self.bins) if self.metric == "mi" else None,
                            normalise(moving_level.tensor, self.moving_window),
                            world_to_grid(moving_level.affine, moving_level.shape, device).double())

    def similarity(self, matrix: torch.Tensor, level: LevelSamples) -> tuple[torch.Tensor, torch.Tensor]:
        """The metric of the fixed → moving ``matrix`` on a level's samples, and which samples counted."""
        grid = level.points @ (level.to_grid @ matrix)[:3].T.float()
        warped = sample(level.moving_values, grid)[0]
        valid = inside(grid)
        if self.moving_inside is not None and self.moving_mask_grid is not None:  # only inside the moving mask
            with torch.no_grad():
                mask_points = level.points.double() @ (self.moving_mask_grid @ matrix)[:3].T
                valid = valid & (sample(self.moving_inside.float(), mask_points.float(), mode="nearest")[0] > 0.5)
        return similarity(self.metric, level.reference, level.reference_weights, warped, valid, self.bins), valid


@dataclass
class LevelSamples:
    points: torch.Tensor
    reference: torch.Tensor
    reference_weights: torch.Tensor | None
    moving_values: torch.Tensor
    to_grid: torch.Tensor


def choose_start(problem: AffineProblem, kind: str, init: str, level: LevelSamples
                 ) -> tuple[CentredTransform, dict[str, float]]:
    """The initial transform; ``auto`` tries identity, grid centres and centres of mass, keeping the one with
    the best metric at the coarsest level (a whole head against a brain-only template, or two fields of view,
    put the centres of mass centimetres apart while the scanner frames already agree, or the reverse)."""
    candidates = STARTS if init == "auto" else (init,)
    scored: dict[str, float] = {}
    best: CentredTransform | None = None
    for name in candidates:
        transform = initial_transform(problem.fixed, problem.moving, problem.fixed_window, problem.moving_window,
                                      kind, name, problem.fixed_inside, problem.moving_inside).to(problem.device)
        if len(candidates) == 1:
            return transform, scored
        with torch.no_grad():
            scored[name] = round(float(problem.similarity(transform.matrix(), level)[0]), 6)
        if best is None or scored[name] > max(value for key, value in scored.items() if key != name):
            best = transform
    assert best is not None
    return best, scored


def optimise(problem: AffineProblem, transform: CentredTransform, levels: list[tuple[Level, LevelSamples]],
             config: dict[str, Any], normal: torch.Tensor | None, report: dict[str, Any]) -> None:
    """Adam on the transform's parameters through the pyramid, coarse to fine (cosine-decayed steps).

    A finer level whose metric is better at the start transform than where the coarser levels left it starts
    again from there (``report["restarted"]`` lists those levels): the optimum of a blurred, coarse level can
    lie far from the fine one (a brain-only template against a whole head: the coarse fit shrinks the brain).
    """
    start = copy.deepcopy(transform.state_dict())
    for number, (level, samples) in enumerate(levels):
        if number > 0:
            with torch.no_grad():
                current = float(problem.similarity(transform.matrix(), samples)[0])
                keep = copy.deepcopy(transform.state_dict())
                transform.load_state_dict(start)
                restart = float(problem.similarity(transform.matrix(), samples)[0])
                if restart <= current:
                    transform.load_state_dict(keep)
                else:
                    report.setdefault("restarted", []).append(number)
        step = float(config["step_voxels"]) * level.spacing_mm
        optimiser = Adam(list(transform.trainable()))
        value = torch.zeros(())
        valid = torch.ones(1, dtype=torch.bool)
        done = 0
        for done in range(1, level.iterations + 1):
            optimiser.zero_grad()
            value, valid = problem.similarity(transform.matrix(), samples)
            if "counted_share" in report and "counted_share_start" not in report:
                report["counted_share_start"] = round(float(valid.float().mean()), 4)
            (-value).backward()
            if normal is not None:
                keep_in_plane(transform, normal)
            fraction = (done - 1) / max(1, level.iterations)  # cosine decay to 1 % of the step
            optimiser.step(step * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * fraction))))
        report["iterations"].append(done)
        report["similarity"].append(float(value.detach()))
        if "counted_share" in report:
            report["counted_share"].append(round(float(valid.float().mean()), 4))


def affine_register(fixed: Image, moving: Image, config: dict[str, Any], device: torch.device,
                    fixed_mask: Image | None = None, moving_mask: Image | None = None
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """Optimise a centred rigid/similarity/affine transform; returns the matrix and a report.

    With masks (ITK's semantics), the metric is sampled only at fixed points inside ``fixed_mask``, and only
    samples whose mapped point falls inside ``moving_mask`` count; the centres of mass of the initialisation
    are taken inside the masks too (the intensity windows stay those of the whole images, so that one
    intensity keeps one normalised value in both). With ``rigid_first``, a similarity or affine transform is
    preceded by a rigid stage through the same pyramid, and starts where it ended (ANTs' staged schedule).
    Without a moving mask and with ``foreground`` (the default), the moving image's own signal is the moving
    mask (``report["moving_foreground"]``); a fit that slides off it is done again on all points.
    The report carries the quality checks of :func:`check_quality`.
    """
    started = time.perf_counter()
    kind, metric, init = config["transform"], config["metric"], config["init"]
    if kind not in TRANSFORMS:
        raise PluginError(f"setting transform must be one of {', '.join(TRANSFORMS)}, not {kind!r}")
    if metric not in METRICS:
        raise PluginError(f"setting metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if init not in INITIALISATIONS:
        raise PluginError(f"setting init must be one of {', '.join(INITIALISATIONS)}, not {init!r}")
    matrix, report = None, None
    if moving_mask is None and bool(config.get("foreground", True)):
        try:
            matrix, report = fit(fixed, moving, config, device, fixed_mask, None)
        except PluginError:  # the foreground-restricted fit collapsed: fall back to all points
            report = None
        else:
            start, shares = report.get("counted_share_start"), report.get("counted_share") or [0.0]
            if not start or shares[-1] < FOREGROUND_SHARE * start:
                report = None
    if matrix is None or report is None:
        matrix, report = fit(fixed, moving, {**config, "foreground": False}, device, fixed_mask, moving_mask)
        if moving_mask is None and bool(config.get("foreground", True)):
            report["moving_foreground"] = False  # tried, and left: the fit moved off the moving image's signal
    check_quality(report, strict=bool(config.get("strict", False)))
    if "warnings" in report:
        warnings.warn(RegistrationQualityWarning(f"registration result is suspect: {'; '.join(report['warnings'])}"),
                      stacklevel=2)
    report["seconds"] = time.perf_counter() - started
    return matrix, report


FOREGROUND_SHARE = 0.5
"""A fit on the moving image's foreground that ends counting less than this fraction of the sampled points it
counted at the start has slid off the moving image's signal (masked MI's collapse) and is done again on all
points."""


def fit(fixed: Image, moving: Image, config: dict[str, Any], device: torch.device, fixed_mask: Image | None,
        moving_mask: Image | None) -> tuple[np.ndarray, dict[str, Any]]:
    """One affine fit (see :func:`affine_register`), without the quality verdict."""
    kind, init = config["transform"], config["init"]
    problem = AffineProblem(fixed, moving, config, device, fixed_mask, moving_mask)
    levels = resolve_levels(config, problem.fixed.spacing[[n > 1 for n in problem.fixed.shape]])
    sampled = [(level, problem.level(level.spacing_mm)) for level in levels]
    normal = plane_normal(problem.fixed, device)
    report: dict[str, Any] = {"metric": config["metric"], "transform": kind, "iterations": [], "similarity": []}
    if problem.fixed_inside is not None or problem.moving_inside is not None:
        report["masks"] = [name for name, mask in (("fixed", problem.fixed_inside), ("moving", problem.moving_inside))
                           if mask is not None and not (name == "moving" and problem.auto_foreground)]
        if problem.auto_foreground:
            report["moving_foreground"] = True
        report["counted_share"] = []  # of the sampled points, the share the metric counted at each level's end
    staged = bool(config.get("rigid_first", False)) and kind != "rigid"
    transform, scored = choose_start(problem, "rigid" if staged else kind, init, sampled[0][1])
    if scored:
        report["init"] = max(scored, key=lambda name: scored[name])
        report["init_similarity"] = scored
    with torch.no_grad():
        initial = transform.matrix().detach().clone()
    if staged:
        rigid_report: dict[str, Any] = {"iterations": [], "similarity": []}
        optimise(problem, transform, sampled, config, normal, rigid_report)
        report["rigid"] = rigid_report
        transform = from_matrix(kind, transform.matrix().detach(), transform).to(device)
    optimise(problem, transform, sampled, config, normal, report)
    check_not_collapsed(report)
    matrix = transform.matrix().detach()
    report.update(quality(problem, sampled[-1][1], initial, matrix, kind))
    return matrix.cpu().numpy(), report


def quality(problem: AffineProblem, level: LevelSamples, initial: torch.Tensor, final: torch.Tensor,
            kind: str) -> dict[str, Any]:
    """The metric at identity, at the start and at the end on the finest level's samples, and the final
    transform's scales (singular values of its linear part) and determinant."""
    with torch.no_grad():
        values = {name: round(float(problem.similarity(matrix, level)[0]), 6) for name, matrix in (
            ("identity", torch.eye(4, dtype=torch.float64, device=problem.device)), ("initial", initial),
            ("final", final))}
    linear = final[:3, :3].cpu().numpy()
    return {"similarity_identity": values["identity"], "similarity_initial": values["initial"],
            "similarity_final": values["final"],
            "scales": [round(float(s), 4) for s in np.linalg.svd(linear, compute_uv=False)],
            "determinant": round(float(np.linalg.det(linear)), 4)}


PLAUSIBLE_SCALES = (0.7, 1.4)
"""The per-axis scales of a same-anatomy pair; outside them an affine result is reported as implausible."""


def check_quality(report: dict[str, Any], strict: bool = False) -> None:
    """Warn (one line on stderr, and ``report["warnings"]``) when the result is worse than the identity or than
    its start, scales an axis outside :data:`PLAUSIBLE_SCALES` or mirrors; with ``strict``, refuse it instead."""
    problems = []
    final = report["similarity_final"]
    for name in ("identity", "initial"):
        before = report[f"similarity_{name}"]
        if final < before - 1e-3 * max(abs(before), 1e-6):
            problems.append(f"the {report['metric']} similarity ended worse than at the "
                            f"{'identity' if name == 'identity' else 'initial transform'} "
                            f"({final:.4g} < {before:.4g})")
    low, high = PLAUSIBLE_SCALES
    if any(not low <= scale <= high for scale in report["scales"]):
        problems.append(f"the {report['transform']} result scales the axes by "
                        f"{', '.join(f'{scale:.2f}' for scale in report['scales'])} (plausible: {low}-{high})")
    if report["determinant"] <= 0:
        problems.append(f"the {report['transform']} result mirrors the image (determinant {report['determinant']:.3g})")
    if not problems:
        return
    message = f"registration result is suspect: {'; '.join(problems)}"
    if strict:
        raise PluginError(f"{message} (strict=true)")
    report["warnings"] = problems


COLLAPSE_SHARE = 0.25
"""A masked registration whose counted share of samples ends below this fraction of its share at the start has
collapsed: the transform found a region where few samples count and the metric looks good on them alone."""


def check_not_collapsed(report: dict[str, Any]) -> None:
    """Refuse a masked result that kept too few of its samples (ITK's masked metrics fail the same way, with
    "too many samples map outside moving image buffer"): a wrong transform must not be written as a result."""
    start, shares = report.get("counted_share_start"), report.get("counted_share")
    if not shares:
        return  # no masks
    final = shares[-1]
    masks = ", ".join([*report.get("masks", []), *(["moving foreground"] if report.get("moving_foreground") else [])])
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
    """Affine, then a diffeomorphic displacement field on a coarse-to-fine pyramid (:mod:`._registration_dense`).

    The affine stage uses both masks; the dense stage's similarity is restricted to the fixed mask and to the
    moving mask as the affine places it on the fixed grid (the update smoothing still covers the whole field,
    which carries the motion out of the masks smoothly). A 2-D image (one slice) gets an in-plane field: the
    dense stage runs in 2-D and the field has no out-of-plane part.

    Returns the affine matrix, the displacement ``(I, J, K, 3)`` in RAS mm on the fixed grid (added after the
    matrix, as :class:`~mitk.tasks.register.result.RegistrationResult` defines) and a report, which carries the
    similarity before and after the dense stage, the field's Jacobian determinants and its inverse consistency;
    with ``inverse=true`` also ``inverse_displacement`` (see :func:`._registration_field.fields`).
    """
    from mitk_builtin._registration_dense import check_settings, dense_register
    from mitk_builtin._registration_field import fields

    started = time.perf_counter()
    check_settings(config)
    affine_config = {**config["affine"], "strict": bool(config.get("strict")) or bool(config["affine"].get("strict"))}
    matrix, affine_report = affine_register(fixed, moving, affine_config, device, fixed_mask, moving_mask)
    fixed_volume, moving_volume = to_volume(fixed, device), to_volume(moving, device)
    fixed_inside = to_mask(fixed_mask, fixed_volume)
    windows = intensity_window(fixed_volume.tensor), intensity_window(moving_volume.tensor)
    moved = Volume(affine_resample(moving_volume, fixed_volume, matrix), fixed_volume.affine)
    moving_inside = to_mask(moving_mask, moving_volume)
    if moving_inside is None and float(config["foreground_mm"]) >= 0:
        moving_inside = foreground(moving_volume, windows[1], float(config["foreground_mm"]))
    if fixed_inside is None and float(config["foreground_mm"]) >= 0:
        fixed_inside = foreground(fixed_volume, windows[0], float(config["foreground_mm"]))
    if moving_inside is not None:  # the moving mask as the affine places it on the fixed grid
        placed = affine_resample(Volume(moving_inside.float(), moving_volume.affine), fixed_volume, matrix) > 0.5
        fixed_inside = placed if fixed_inside is None else fixed_inside & placed
        if not bool(fixed_inside.any()):
            raise PluginError("after the affine stage, the fixed and moving masks do not overlap")
    flat = flat_axis(fixed_volume.shape)
    dense = dense_register(fixed_volume, moved, fixed_inside, flat, windows, config,
                           blank=fixed_mask is not None or moving_mask is not None)
    report: dict[str, Any] = {"affine": affine_report, **dense.report}
    field, extra = fields(dense, fixed_volume, matrix, flat, int(config["integration_steps"]),
                          bool(config.get("inverse", False)))
    report.update(extra)
    report["seconds"] = time.perf_counter() - started
    return matrix, field, report
