"""Registration: a fixed and a moving image in; a transform and the moving image on the fixed grid out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitk.errors import PluginError
from mitk.runner.batch import CaseJob
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.tasks import RegistrationPlugin
from mitk.types import Image, RegistrationResult, ras_to_lps


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


class RegistrationRunner:
    """Aligns moving images to fixed ones with a loaded registration model (classical or learned)."""

    def __init__(self, model: LoadedModel) -> None:
        if not isinstance(model.plugin, RegistrationPlugin):
            raise TypeError("RegistrationRunner needs a registration plugin")
        self.model = model
        self.plugin: RegistrationPlugin = model.plugin
        self.learned = self.plugin.is_learned()
        if self.learned and model.network is None:
            raise PluginError(f"plugin {model.name!r} neither overrides register() nor has a network")
        self.preprocess = self.plugin.inference_transforms(model.config) if self.learned else None

    def __call__(self, fixed: Image, moving: Image) -> RegistrationResult:
        matrix: np.ndarray | None
        displacement: np.ndarray | None
        if self.learned:
            matrix, displacement = None, self.learned_displacement(fixed, moving)
        else:
            matrix, displacement = self.plugin.register(fixed, moving, self.model.network, self.model.config)
        array = warp(moving, fixed, matrix, displacement)
        if moving.array.dtype.kind in "iu":
            array = np.rint(array).astype(moving.array.dtype)
        warped = Image(array=array, affine=fixed.affine, path=None, meta=dict(fixed.meta))
        return RegistrationResult(warped=warped, matrix=matrix, displacement=displacement)

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


def write_transform(result: RegistrationResult, path: Path) -> None:
    """``.json`` (RAS and LPS matrices), ``.tfm``/``.txt`` (ITK AffineTransform, LPS); fields as NIfTI."""
    if result.matrix is None:
        raise ValueError("this registration produced no matrix")
    matrix = np.asarray(result.matrix, float)
    lps = ras_to_lps(ras_to_lps(matrix).T).T  # conjugate: F @ M @ F
    if path.suffix.lower() in (".tfm", ".txt"):
        linear = " ".join(f"{v:.10g}" for v in lps[:3, :3].ravel())
        translation = " ".join(f"{v:.10g}" for v in lps[:3, 3])
        path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                        f"Parameters: {linear} {translation}\nFixedParameters: 0 0 0\n")
    else:
        path.write_text(json.dumps({
            "description": "maps fixed-image world points to moving-image world points (mm)",
            "matrix_ras": matrix.tolist(), "matrix_lps": lps.tolist()}, indent=2))


def make_register_job(model: LoadedModel, policy: OutputPolicy, fixed_path: Path, *,
                      transform: Path | None = None, series: str | None = None) -> CaseJob:
    import contextlib

    from mitk.errors import PluginError
    from mitk.io.atomic import atomic_path
    from mitk.io.reader import load_image, require_volume
    from mitk.io.results import write_warped
    from mitk.runner.batch import CaseOutcome

    runner = RegistrationRunner(model)
    fixed = require_volume(load_image(fixed_path, series=series))

    def process(case: Any) -> CaseOutcome:
        target = policy.target(case, "_warped", ".nii.gz")
        if policy.should_skip(target, case, inputs=(fixed_path,)):
            return CaseOutcome(output=target, skipped=True)
        if transform is not None:  # refuse before any compute or write, as for the image
            policy.check_companion(transform, case, inputs=(fixed_path,))
        moving = require_volume(load_image(case.path, series=series))
        result = runner(fixed, moving)
        if transform is not None and result.matrix is None:
            raise PluginError(f"plugin {model.name!r} gave a displacement field only; --transform needs a matrix")
        details: dict[str, Any] = {"matrix_ras": None if result.matrix is None else result.matrix.tolist(),
                                   **result.metrics}
        inputs = policy.inputs_for(case, fixed_path)
        # The warped image and the transform, both or neither; the stack commits the warped image last, so that
        # --skip-existing redoes a case interrupted between the two renames.
        with contextlib.ExitStack() as outputs:
            warped = outputs.enter_context(atomic_path(target, overwrite=policy.overwrite, inputs=inputs))
            write_warped(result, warped, like=fixed, plugin=model.name)  # as result.save()
            if transform is not None:
                temporary = outputs.enter_context(atomic_path(transform, overwrite=policy.companion_overwrite,
                                                              inputs=inputs))
                write_transform(result, temporary)
                details["transform"] = str(transform)
        return CaseOutcome(output=target, details=details)

    return process
