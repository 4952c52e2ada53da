"""Classical registration by instance optimisation in torch: ``affine`` and ``deformable``.

Both work in world millimetres (RAS), so flipped, permuted and oblique grids need no special case. The affine
plugin follows ITK's recipe: a Gaussian pyramid, a metric evaluated on a random sample of fixed-image points
(not the dense volume), and a centred transform initialised from the images' centres of mass. The deformable
plugin starts from that affine and optimises a dense displacement field on a coarse grid with MONAI's ``Warp``,
its local NCC (or MSE / mutual information) and a bending-energy or diffusion penalty.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mitk.errors import PluginError
from mitk.io.reader import as_volume_array
from mitk.tasks import RegistrationPlugin
from mitk.types import Image

TRANSFORMS = ("rigid", "similarity", "affine")
METRICS = ("mi", "ncc", "mse")
INITIALISATIONS = ("com", "moments", "geometry", "identity")


# ---------------------------------------------------------------------------------------------- volumes


@dataclass
class Volume:
    """A channel-first ``(1, 1, I, J, K)`` float tensor and its voxel → RAS affine."""

    tensor: torch.Tensor
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.tensor.shape[2:]
        return int(i), int(j), int(k)

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def to_volume(image: Image, device: torch.device) -> Volume:
    array = np.asarray(image.array, dtype=np.float32)
    if array.ndim != 3:
        raise PluginError(f"registration needs 3-D volumes, got shape {array.shape}")
    return Volume(torch.from_numpy(np.ascontiguousarray(array)).to(device)[None, None],
                  np.asarray(image.affine, dtype=np.float64))


def gaussian_smooth(tensor: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian smoothing of a ``(1, C, I, J, K)`` tensor; ``sigmas`` in voxels per axis."""
    out = tensor
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.2:
            continue
        radius = max(1, math.ceil(3 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=tensor.dtype, device=tensor.device)
        kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
        kernel = kernel / kernel.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        channels = out.shape[1]
        weight = kernel.view(shape).expand(channels, 1, *shape[2:]).contiguous()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


def shrink_factors(spacing: np.ndarray, level_spacing: float, shape: tuple[int, int, int] = (2, 2, 2)
                   ) -> tuple[int, int, int]:
    """Integer shrink factor per axis that brings ``spacing`` closest to ``level_spacing`` mm (at least 1;
    always 1 along a single-slice axis, so a 2-D image stays in its plane)."""
    factors = [max(1, round(level_spacing / s)) if n > 1 else 1 for s, n in zip(spacing, shape, strict=True)]
    return factors[0], factors[1], factors[2]


def shrink(volume: Volume, factors: tuple[int, int, int]) -> Volume:
    """Average ``factors`` voxels into one, then smooth lightly (σ = ½ voxel): a cheap Gaussian pyramid level."""
    if factors == (1, 1, 1):
        return volume
    pads = []
    for axis in (2, 1, 0):  # pad to whole multiples so no edge voxels are lost
        extra = (-volume.shape[axis]) % factors[axis]
        pads += [0, extra]
    tensor = F.pad(volume.tensor, pads, mode="replicate") if any(pads) else volume.tensor
    pooled = gaussian_smooth(F.avg_pool3d(tensor, kernel_size=factors, stride=factors), np.full(3, 0.5))
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (np.array(factors) - 1) / 2.0
    return Volume(pooled, volume.affine @ scale)


def intensity_window(tensor: torch.Tensor, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Robust intensity range (percentiles of at most ~1M voxels)."""
    values = tensor.flatten()
    if values.numel() > 200_000:
        values = values[:: values.numel() // 200_000 + 1]
    values = values.float()
    lo, hi = torch.quantile(values, torch.tensor([low / 100, high / 100], device=values.device)).tolist()
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def normalise(tensor: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    lo, hi = window
    return ((tensor - lo) / (hi - lo)).clamp(0.0, 1.0)


def world_to_grid(affine: np.ndarray, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """4×4 map from world mm to ``grid_sample``'s normalised (align_corners=True) coordinates, ordered (i, j, k)."""
    size = np.array(shape, dtype=float)
    normalise_index = np.eye(4)
    normalise_index[:3, :3] = np.diag(2.0 / np.maximum(size - 1, 1))
    normalise_index[:3, 3] = -1.0
    return torch.as_tensor(normalise_index @ np.linalg.inv(affine), dtype=torch.float32, device=device)


def sample(volume: torch.Tensor, grid_points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``(1, C, I, J, K)`` at ``(N, 3)`` normalised (i, j, k) points → ``(C, N)``; zero outside."""
    grid = grid_points.flip(-1).view(1, -1, 1, 1, 3)
    values = F.grid_sample(volume, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return values.view(volume.shape[1], -1)


def inside(grid_points: torch.Tensor) -> torch.Tensor:
    return grid_points.detach().abs().amax(dim=-1) <= 1.0 + 1e-4


def to_mask(mask: Image | None, volume: Volume) -> torch.Tensor | None:
    """A mask on ``volume``'s grid as a ``(1, 1, I, J, K)`` bool tensor (any non-zero voxel is inside)."""
    if mask is None:
        return None
    array = as_volume_array(np.asarray(mask.array))
    if array.shape != volume.shape:
        raise PluginError(f"mask of shape {array.shape} is not on its image's grid {volume.shape}")
    return torch.from_numpy(np.ascontiguousarray(array != 0)).to(volume.tensor.device)[None, None]


def shrink_mask(mask: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """A mask on the pyramid level ``shrink(volume, factors)``: a level voxel is inside when at least half of
    the voxels it averages are (or, for a mask thinner than that, any)."""
    if factors == (1, 1, 1):
        return mask
    pads = []
    for axis in (2, 1, 0):
        pads += [0, (-mask.shape[2 + axis]) % factors[axis]]
    share = F.avg_pool3d(F.pad(mask.float(), pads, mode="replicate"), kernel_size=factors, stride=factors)
    level = share >= 0.5
    return level if bool(level.any()) else share > 0


# ---------------------------------------------------------------------------------------------- metrics


def fixed_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """The nearest histogram bin of each fixed intensity in [0, 1] (Mattes: a zero-order Parzen window)."""
    return (values * (bins - 1)).round().long().clamp(0, bins - 1)


def cubic_bspline(distance: torch.Tensor) -> torch.Tensor:
    d = distance.abs()
    return torch.where(d < 1, (4 - 6 * d**2 + 3 * d**3) / 6, torch.where(d < 2, (2 - d) ** 3 / 6, 0.0))


def mutual_information(fixed_bin: torch.Tensor, moving: torch.Tensor, valid: torch.Tensor,
                       bins: int) -> torch.Tensor:
    """Mattes mutual information (nats): each moving intensity spread over four bins by a cubic B-spline.

    The joint histogram is built with ``index_add`` (4 entries per point, not ``bins``), so the metric costs
    about as much as the sampling; it is differentiable through the B-spline weights.
    """
    position = moving.clamp(0.0, 1.0) * (bins - 1) + 1.0  # one padding bin on either side
    lowest = position.floor().detach() - 1
    joint = torch.zeros((bins, bins + 2), dtype=moving.dtype, device=moving.device)
    flat = joint.view(-1)
    for offset in range(4):
        column = lowest + offset
        weight = cubic_bspline(position - column) * valid
        index = fixed_bin * (bins + 2) + column.long().clamp(0, bins + 1)
        flat = flat.index_add(0, index, weight)
    joint = flat.view(bins, bins + 2)
    joint = joint / joint.sum().clamp_min(1e-12)
    p_fixed = joint.sum(dim=1, keepdim=True)
    p_moving = joint.sum(dim=0, keepdim=True)
    ratio = joint / (p_fixed @ p_moving).clamp_min(1e-12)
    return (joint * torch.log(ratio.clamp_min(1e-12))).sum()


def similarity(metric: str, fixed: torch.Tensor, fixed_bin: torch.Tensor | None, moving: torch.Tensor,
               valid: torch.Tensor, bins: int) -> torch.Tensor:
    """The similarity to maximise: MI, NCC, or minus the mean squared difference, over valid points."""
    weight = valid.float()
    total = weight.sum().clamp_min(1.0)
    if metric == "mi":
        assert fixed_bin is not None
        return mutual_information(fixed_bin, moving, weight, bins)
    if metric == "ncc":
        mean_f = (fixed * weight).sum() / total
        mean_m = (moving * weight).sum() / total
        df, dm = (fixed - mean_f) * weight, (moving - mean_m) * weight
        return (df * dm).sum() / torch.sqrt((df * df).sum() * (dm * dm).sum()).clamp_min(1e-12)
    return -(((fixed - moving) ** 2) * weight).sum() / total


# ---------------------------------------------------------------------------------------------- transform


def centre_of_mass(volume: Volume, window: tuple[float, float], mask: torch.Tensor | None = None) -> np.ndarray:
    weights = normalise(volume.tensor[0, 0], window).double()
    if mask is not None:
        weights = weights * mask[0, 0]
    total = float(weights.sum())
    if total <= 0:
        return (volume.affine @ np.append((np.array(volume.shape) - 1) / 2.0, 1.0))[:3]
    index = [torch.arange(n, dtype=torch.float64, device=weights.device) for n in volume.shape]
    centre = [float((weights.sum(dim=tuple(a for a in range(3) if a != axis)) * index[axis]).sum()) / total
              for axis in range(3)]
    return (volume.affine @ np.append(centre, 1.0))[:3]


def principal_axes(volume: Volume, window: tuple[float, float], centre: np.ndarray,
                   mask: torch.Tensor | None = None) -> np.ndarray:
    """Eigenvectors (columns, world axes) of the intensity-weighted second moments about ``centre``."""
    weights = normalise(volume.tensor[0, 0], window).double()
    if mask is not None:
        weights = weights * mask[0, 0]
    weights = weights.flatten()
    index = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=weights.device)
                                         for n in volume.shape], indexing="ij"), dim=-1).reshape(-1, 3)
    keep = weights > 0
    world = index[keep] @ torch.as_tensor(volume.affine[:3, :3].T, device=weights.device)
    world = world + torch.as_tensor(volume.affine[:3, 3] - centre, device=weights.device)
    w = weights[keep]
    moments = (world * w[:, None]).T @ world / w.sum().clamp_min(1e-12)
    _, vectors = np.linalg.eigh(moments.cpu().numpy())
    return np.asarray(vectors)


def moments_rotation(fixed_axes: np.ndarray, moving_axes: np.ndarray) -> np.ndarray:
    """The proper rotation mapping fixed principal axes onto moving ones that is closest to the identity."""
    best, best_angle = np.eye(3), np.inf
    for signs in np.ndindex(2, 2, 2):
        flip = np.diag([1.0 if s == 0 else -1.0 for s in signs])
        rotation = moving_axes @ flip @ fixed_axes.T
        if np.linalg.det(rotation) < 0:
            continue
        angle = math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        if angle < best_angle:
            best, best_angle = rotation, angle
    return best


def rotation_matrix(vector: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a rotation vector (axis × angle in radians), differentiable."""
    zero = torch.zeros((), dtype=vector.dtype, device=vector.device)
    skew = torch.stack([torch.stack([zero, -vector[2], vector[1]]),
                        torch.stack([vector[2], zero, -vector[0]]),
                        torch.stack([-vector[1], vector[0], zero])])
    return torch.linalg.matrix_exp(skew)


class CentredTransform(torch.nn.Module):
    """``x ↦ L·L0·(x − c) + c + t0 + t`` in world mm; parameters scaled so one unit moves points about 1 mm."""

    def __init__(self, kind: str, centre: np.ndarray, translation: np.ndarray, linear: np.ndarray,
                 radius: float) -> None:
        super().__init__()
        self.kind = kind
        self.radius = float(radius)
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float64))
        self.register_buffer("offset", torch.as_tensor(translation, dtype=torch.float64))
        self.register_buffer("initial", torch.as_tensor(linear, dtype=torch.float64))
        self.translation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.rotation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64), requires_grad=kind == "similarity")
        self.linear = torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.float64), requires_grad=kind == "affine")

    def matrix(self) -> torch.Tensor:
        """The 4×4 fixed-world → moving-world matrix."""
        linear = rotation_matrix(self.rotation / self.radius)
        if self.kind == "similarity":
            linear = torch.exp(self.log_scale / self.radius) * linear
        if self.kind == "affine":
            linear = linear @ (torch.eye(3, dtype=torch.float64, device=linear.device) + self.linear / self.radius)
        linear = linear @ self.initial
        shift = self.centre + self.offset + self.translation - linear @ self.centre
        top = torch.cat([linear, shift[:, None]], dim=1)
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64, device=linear.device)
        return torch.cat([top, bottom], dim=0)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------- affine


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


def device_of(config: dict[str, Any], model: Any) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cuda" if torch.cuda.is_available() and config.get("device") != "cpu" else "cpu")


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


def plane_normal(volume: Volume, device: torch.device) -> torch.Tensor | None:
    """The world normal of a single-slice (2-D) image, or None for a volume."""
    flat = flat_axis(volume.shape)
    if flat is None:
        return None
    axis = volume.affine[:3, flat]
    return torch.as_tensor(axis / np.linalg.norm(axis), dtype=torch.float64, device=device)


@torch.no_grad()
def keep_in_plane(transform: CentredTransform, normal: torch.Tensor) -> None:
    """Project the gradients so that a 2-D registration moves points only within the image plane: in-plane
    translations, rotations about the normal, linear changes that leave the normal alone."""
    if transform.translation.grad is not None:
        grad = transform.translation.grad
        grad -= (grad @ normal) * normal
    if transform.rotation.grad is not None:
        grad = transform.rotation.grad
        grad.copy_((grad @ normal) * normal)
    if transform.linear.grad is not None:
        projection = torch.eye(3, dtype=torch.float64, device=normal.device) - torch.outer(normal, normal)
        transform.linear.grad.copy_(projection @ transform.linear.grad @ projection)


def initial_transform(fixed: Volume, moving: Volume, fixed_window: tuple[float, float],
                      moving_window: tuple[float, float], kind: str, init: str,
                      fixed_mask: torch.Tensor | None = None, moving_mask: torch.Tensor | None = None
                      ) -> CentredTransform:
    fixed_centre = (fixed.affine @ np.append((np.array(fixed.shape) - 1) / 2.0, 1.0))[:3]
    moving_centre = (moving.affine @ np.append((np.array(moving.shape) - 1) / 2.0, 1.0))[:3]
    linear = np.eye(3)
    if init in ("com", "moments"):
        fixed_centre = centre_of_mass(fixed, fixed_window, fixed_mask)
        moving_centre = centre_of_mass(moving, moving_window, moving_mask)
    if init == "moments" and min(fixed.shape) > 1:
        fixed_factors, moving_factors = shrink_factors(fixed.spacing, 4.0), shrink_factors(moving.spacing, 4.0)
        coarse_fixed, coarse_moving = shrink(fixed, fixed_factors), shrink(moving, moving_factors)
        coarse_fixed_mask = None if fixed_mask is None else shrink_mask(fixed_mask, fixed_factors)
        coarse_moving_mask = None if moving_mask is None else shrink_mask(moving_mask, moving_factors)
        linear = moments_rotation(principal_axes(coarse_fixed, fixed_window, fixed_centre, coarse_fixed_mask),
                                  principal_axes(coarse_moving, moving_window, moving_centre, coarse_moving_mask))
    if init == "identity":
        moving_centre = fixed_centre
    extent = np.array(fixed.shape) * fixed.spacing
    radius = float(np.linalg.norm(extent)) / 4.0
    return CentredTransform(kind, fixed_centre, moving_centre - fixed_centre, linear, radius)


class AffineRegistration(RegistrationPlugin):
    """Rigid, similarity or affine registration: sampled MI/NCC/MSE, a Gaussian pyramid, Adam in torch."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"transform": "affine", "metric": "mi", "init": "com", "levels": [4, 2, 1],
                "iterations": [100, 50, 25], "samples": 20000, "bins": 32, "step_voxels": 0.5, "seed": 0,
                "device": "auto"}

    def settings_help(self) -> dict[str, str]:
        return {
            "transform": "rigid (6 dof), similarity (7 dof) or affine (12 dof)",
            "metric": "mi (mutual information: any modality pair), ncc (correlation) or mse (same intensities)",
            "init": "com (centres of mass), moments (and principal axes), geometry (grid centres) or identity",
            "levels": "pyramid levels as multiples of the fixed image's finest spacing, coarse to fine",
            "iterations": "optimiser iterations at each pyramid level",
            "samples": "fixed-image points sampled per level for the metric (ITK-style sampling)",
            "bins": "histogram bins of the mutual information",
            "step_voxels": "initial optimiser step, in voxels of each level (decays over the level)",
            "seed": "random seed of the point sampling",
            "device": "auto (CUDA when available) or cpu",
        }

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any], *,
                 fixed_mask: Image | None = None, moving_mask: Image | None = None
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        matrix, report = affine_register(fixed, moving, config, device_of(config, model), fixed_mask, moving_mask)
        return matrix, None, report


# ---------------------------------------------------------------------------------------------- deformable

DEFORMABLE_LOSSES = ("lncc", "mse", "mi")
REGULARISERS = ("bending", "diffusion")


def affine_resample(moving: Volume, fixed: Volume, matrix: np.ndarray) -> torch.Tensor:
    """``moving`` sampled at ``matrix @ x`` for every fixed voxel centre ``x``: ``(1, 1, I, J, K)``."""
    device = fixed.tensor.device
    to_grid = world_to_grid(moving.affine, moving.shape, device).double()
    voxel_to_grid = (to_grid @ torch.as_tensor(matrix @ fixed.affine, device=device))[:3].float()
    slabs = []
    step = max(1, 2_000_000 // (fixed.shape[1] * fixed.shape[2]))
    j, k = torch.meshgrid(torch.arange(fixed.shape[1], device=device, dtype=torch.float32),
                          torch.arange(fixed.shape[2], device=device, dtype=torch.float32), indexing="ij")
    for start in range(0, fixed.shape[0], step):
        i = torch.arange(start, min(start + step, fixed.shape[0]), device=device, dtype=torch.float32)
        voxels = torch.stack([i[:, None, None].expand(-1, *j.shape), j.expand(len(i), -1, -1),
                              k.expand(len(i), -1, -1), torch.ones(len(i), *j.shape, device=device)], dim=-1)
        grid = voxels @ voxel_to_grid.T
        slabs.append(F.grid_sample(moving.tensor, grid.flip(-1)[None], mode="bilinear", padding_mode="zeros",
                                   align_corners=True))
    return torch.cat(slabs, dim=2)


def resize_field(field: torch.Tensor, factor: float, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resample a voxel-unit field ``(1, 3, …)`` to a grid ``factor`` times finer (cell-centred, as the pyramid
    pools), scaling its values to the new voxels, then crop or pad (replicate) to ``shape``."""
    if factor != 1:
        size = [max(1, round(n * factor)) for n in field.shape[2:]]
        field = F.interpolate(field, size=size, mode="trilinear", align_corners=False) * factor
    pad = []
    for axis in (2, 1, 0):
        pad += [0, max(0, shape[axis] - field.shape[2 + axis])]
    if any(pad):
        field = F.pad(field, pad, mode="replicate")
    return field[:, :, : shape[0], : shape[1], : shape[2]]


def masked_loss(loss_name: str, loss: torch.nn.Module, warped: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """The dissimilarity of ``warped`` and ``target``, averaged over ``mask`` when given (the whole grid else)."""
    if mask is None:
        return loss(warped, target)
    if loss_name == "mi":  # a global metric: the joint histogram of the voxels inside the mask
        return loss(warped[mask].view(1, 1, -1), target[mask].view(1, 1, -1))
    weight = mask.float()
    if loss_name == "lncc":
        # Both images are cut to the mask first, so that no window sees past it (the cut is made after
        # warping, on the fixed grid: it does not move with the field). MONAI's pointwise LNCC is minus a
        # squared correlation whose smoothing terms can exceed 1 in a flat window; clamp it to its true range.
        pointwise = loss(warped * weight, target * weight).clamp(min=-1.0)
    else:
        pointwise = (warped - target) ** 2
    return (pointwise * weight).sum() / weight.sum().clamp_min(1.0)


def flat_axis(shape: tuple[int, int, int]) -> int | None:
    """The single-voxel axis of a 2-D image stored as a one-slice volume, or None for a volume."""
    flat = [axis for axis, n in enumerate(shape) if n == 1]
    return flat[0] if len(flat) == 1 else None


def in_plane(tensor: torch.Tensor, axis: int | None, field: bool = False) -> torch.Tensor:
    """``(1, C, I, J, K)`` → ``(1, C, A, B)`` without the flat ``axis`` (a field also loses that component)."""
    if axis is None:
        return tensor
    if field:
        tensor = tensor[:, [c for c in range(3) if c != axis]]
    return tensor.squeeze(2 + axis)


def as_volume(tensor: torch.Tensor, axis: int | None) -> torch.Tensor:
    """The inverse of :func:`in_plane` for a field: a zero component along the flat axis."""
    if axis is None:
        return tensor
    components = list(tensor.unsqueeze(2 + axis).unbind(1))
    components.insert(axis, torch.zeros_like(components[0]))
    return torch.stack(components, dim=1)


def deformable_register(fixed: Image, moving: Image, config: dict[str, Any], device: torch.device,
                        fixed_mask: Image | None = None, moving_mask: Image | None = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Affine, then a dense (optionally diffeomorphic) displacement field on a coarse-to-fine pyramid.

    The affine stage uses both masks; the dense stage's similarity is restricted to the fixed mask and to the
    moving mask as the affine places it on the fixed grid (the regulariser still covers the whole field, which
    carries the motion out of the masks smoothly). A 2-D image (one slice) gets an in-plane field: the dense
    stage runs in 2-D and the field has no out-of-plane part.

    Returns the affine matrix, the displacement ``(I, J, K, 3)`` in RAS mm on the fixed grid (added after the
    matrix, as :class:`~mitk.types.RegistrationResult` defines) and a report.
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


class DeformableRegistration(RegistrationPlugin):
    """Affine, then a dense displacement field optimised with MONAI's Warp, LNCC and bending energy."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"affine": AffineRegistration().default_config(), "loss": "lncc", "lncc_kernel": 5,
                "regulariser": "bending", "regularisation": 1.0, "levels": [4, 2], "iterations": [100, 50],
                "step_voxels": 0.1, "diffeomorphic": True, "integration_steps": 7, "device": "auto"}

    def settings_help(self) -> dict[str, str]:
        described = {f"affine.{key}": f"initial affine: {text}" for key, text in
                     AffineRegistration().settings_help().items()}
        return {
            **described,
            "loss": "lncc (local normalised cross-correlation), mse, or mi (global mutual information)",
            "lncc_kernel": "LNCC window, in voxels of each level",
            "regulariser": "bending (bending energy: smooth fields) or diffusion (first derivatives)",
            "regularisation": "weight of the regulariser against the similarity",
            "levels": "field grid spacing at each level, as multiples of the fixed image's finest spacing",
            "iterations": "Adam iterations at each level",
            "step_voxels": "Adam step, in voxels of each level",
            "diffeomorphic": "optimise a stationary velocity field, integrated by scaling and squaring",
            "integration_steps": "scaling-and-squaring steps (MONAI DVF2DDF)",
            "device": "auto (CUDA when available) or cpu",
        }

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any], *,
                 fixed_mask: Image | None = None, moving_mask: Image | None = None
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        device = device_of(config, model)
        return deformable_register(fixed, moving, config, device, fixed_mask, moving_mask)
