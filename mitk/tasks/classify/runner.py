"""Classification: one image in, per-class probabilities out (and, on request, a Grad-CAM heat map).

:func:`network_input` is the one way an image becomes a classifier's input, in training
(:mod:`mitk.tasks.classify.recipe`) and inference alike: a MONOCHROME1 radiograph is inverted so that dense
tissue is bright as in MONOCHROME2 (the DICOM reader keeps stored values), colour is reduced to grey or grey
repeated to colour to match the network, and a 2-D network gets its image without the singleton slice axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitk.errors import InputError, MitkWarning
from mitk.image import Image
from mitk.io.atomic import InputFiles
from mitk.io.inputs import Case, output_for
from mitk.runner.batch import CaseJob, CaseOutcome
from mitk.runner.ensemble import entropy, mutual_information
from mitk.runner.fit import check_fit
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.runner.tensors import to_meta_tensor
from mitk.runner.tta import flips, passes, tensor_dims
from mitk.tasks.classify.explain import display_values
from mitk.tasks.classify.plugin import ClassificationPlugin
from mitk.tasks.classify.result import ClassificationResult

LUMINANCE = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights: colour to grey for a greyscale network."""
EXPLAIN_SUFFIX = "_gradcam"


def image_channels(image: Image) -> int:
    return int(image.array.shape[3]) if image.array.ndim == 4 else 1


def image_dims(image: Image) -> int:
    """2 for a single slice, radiograph or photograph (one voxel deep), else 3."""
    return 2 if image.spatial_shape[2] == 1 else 3


def network_input(image: Image, *, spatial_dims: int, in_channels: int) -> Any:
    """``image`` as a channel-first ``MetaTensor`` with ``spatial_dims`` spatial axes and ``in_channels``
    channels, MONOCHROME1 inverted; refuses a 3-D volume for a 2-D network and the reverse."""
    from mitk.io.reader import require_volume

    image = require_volume(image, channels=True)
    dims = image_dims(image)
    if dims != spatial_dims:
        kind = "a 2-D image" if dims == 2 else f"a 3-D volume of {'×'.join(map(str, image.spatial_shape))}"
        raise InputError(f"is {kind} but the model takes {spatial_dims}-D inputs", image.path)
    channels = image_channels(image)
    array = display_values(image)
    if channels != in_channels:
        if channels == 3 and in_channels == 1:
            array = np.tensordot(array.astype(np.float32), np.asarray(LUMINANCE, dtype=np.float32), axes=([3], [0]))
        elif channels == 1 and in_channels == 3:
            array = np.repeat(np.asarray(array)[..., None], 3, axis=3) if array.ndim == 3 else np.repeat(array, 3, 3)
        else:
            raise InputError(f"has {channels} channel(s) but the model takes {in_channels}", image.path)
    meta = to_meta_tensor(Image(array=array, affine=image.affine, path=image.path))
    if spatial_dims == 2:
        from monai.data import MetaTensor

        meta = MetaTensor(meta.as_tensor()[..., 0], affine=meta.affine)
    return meta


@dataclass
class MultiLabelResult(ClassificationResult):
    """Independent per-class probabilities (sigmoid); every class at or above ``threshold`` is predicted."""

    threshold: float = 0.5
    predicted_classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.predicted_classes = [n for n, p in zip(self.class_names, self.probabilities, strict=True)
                                  if p >= self.threshold]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "predicted": ";".join(self.predicted_classes), "multi_label": True,
                "threshold": self.threshold}


class ClassificationRunner:
    """A loaded classifier: ``runner(image)`` gives a :class:`ClassificationResult`; ``runner.explain(image)``
    a Grad-CAM map in ``[0, 1]`` on the image's own grid.

    ``multi_label`` (default: as trained) applies a sigmoid per class instead of the softmax, and predicts
    every class whose probability reaches ``threshold``.
    """

    def __init__(self, model: LoadedModel, *, multi_label: bool | None = None,
                 threshold: float | None = None, tta: bool = False, uncertainty: bool = False) -> None:
        if not isinstance(model.plugin, ClassificationPlugin):
            raise TypeError("ClassificationRunner needs a classification plugin")
        if model.network is None:
            raise TypeError("ClassificationRunner needs a network")
        self.model = model
        self.network: torch.nn.Module = model.network
        self.plugin: ClassificationPlugin = model.plugin
        config = model.config
        self.class_names = self.plugin.class_names(config)
        self.multi_label = bool(config.get("multi_label")) if multi_label is None else multi_label
        self.threshold = float(config.get("threshold", 0.5) if threshold is None else threshold)
        self.spatial_dims = int(config.get("spatial_dims") or 3)
        self.in_channels = int(config.get("in_channels") or 1)
        self.preprocess = self.plugin.inference_transforms(config)
        self.tta, self.uncertainty = tta, uncertainty
        """``tta``: also run the flips of :meth:`ClassificationPlugin.tta_axes`; ``uncertainty``: the record's
        predictive entropy (and, with two passes or more, mutual information)."""
        self._cams: dict[str, Any] = {}

    def prepare(self, image: Image) -> Any:
        """The preprocessed ``MetaTensor`` (channel first, no batch axis) the network sees."""
        data = self.preprocess({"image": network_input(image, spatial_dims=self.spatial_dims,
                                                       in_channels=self.in_channels)})
        return data["image"]

    def probabilities(self, logits: torch.Tensor) -> list[float]:
        """Per-class probabilities from one row of logits (sigmoid when multi-label, else softmax)."""
        logits = logits.float().reshape(-1)
        if self.multi_label:
            return list(torch.sigmoid(logits).cpu().tolist())
        return list(torch.softmax(logits, dim=0).cpu().tolist())

    def result(self, logits: torch.Tensor) -> ClassificationResult:
        """Probabilities from one row of logits."""
        return self.from_probabilities(self.probabilities(logits))

    def from_probabilities(self, probabilities: list[float]) -> ClassificationResult:
        """The result of per-class probabilities."""
        names = self.class_names or [str(i) for i in range(len(probabilities))]
        if len(names) != len(probabilities):
            raise InputError(f"the network gives {len(probabilities)} outputs for {len(names)} class names")
        if self.multi_label:
            return MultiLabelResult(class_names=names, probabilities=probabilities, threshold=self.threshold)
        return ClassificationResult(class_names=names, probabilities=probabilities)

    @torch.inference_mode()
    def __call__(self, image: Image) -> ClassificationResult:
        batch = self.prepare(image).as_tensor().unsqueeze(0).to(self.model.device)
        networks = self.model.members or (self.network,)
        flip_sets = flips(self.plugin.tta_axes(self.model.config), batch.shape[2:]) if self.tta else [()]
        if len(networks) == 1 and len(flip_sets) == 1 and not self.uncertainty:
            return self.result(self.network(batch)[0])  # one pass: exactly the single model's path
        rows = []
        for member, flip in passes(len(networks), flip_sets):
            dims = tensor_dims(flip, leading=2)
            rows.append(self.probabilities(networks[member](batch.flip(dims) if flip else batch)[0]))
        table = np.asarray(rows, dtype=np.float64)
        result = self.from_probabilities(table.mean(axis=0).tolist() if len(rows) > 1 else rows[0])
        result.passes = {"members": len(networks), "flips": len(flip_sets), "total": len(rows)}
        if self.uncertainty:
            result.uncertainty = case_uncertainty(table, binary=self.multi_label)
        return result

    def explain(self, image: Image, class_index: int | None = None) -> tuple[ClassificationResult, np.ndarray]:
        """The result and a Grad-CAM map (MONAI ``GradCAM`` on the plugin's ``cam_layer``) for ``class_index``
        (default: the predicted class), brought back through the inverse of the preprocessing onto the
        image's grid: a float32 array of the image's spatial shape, in ``[0, 1]``."""
        from monai.visualize import GradCAM

        layer = getattr(self.plugin, "cam_layer", None)
        if layer is None:
            raise InputError(f"plugin {self.model.name!r} names no layer for Grad-CAM (cam_layer)")
        prepared = self.prepare(image)
        batch = prepared.as_tensor().unsqueeze(0).to(self.model.device).requires_grad_(True)
        name = layer(self.model.config)
        # MONAI's default postprocessing maps (min, max) to (1, 0), i.e. shows the most important region as
        # the least; the map is rescaled the usual way instead (largest value 1).
        # One GradCAM per layer for the runner's life: each one hooks the layer, and hooks are never removed.
        cam = self._cams.get(name)
        if cam is None:
            cam = self._cams[name] = GradCAM(nn_module=self.network, target_layers=name, postprocessing=_unit_range)
        with torch.enable_grad():
            logits = self.network(batch).detach()
            result = self.result(logits[0])
            index = result.predicted_index if class_index is None else int(class_index)
            raw = cam.compute_map(batch, class_idx=index)
            features = tuple(int(n) for n in raw.shape[2:])
            heat = cam.postprocessing(cam.upsampler(tuple(batch.shape[2:]))(raw)).detach().float().cpu()
        self.network.zero_grad(set_to_none=True)
        if all(n == 1 for n in features):
            warnings.warn(MitkWarning(
                f"{image.name}: Grad-CAM layer {name!r} of plugin {self.model.name!r} has a "
                f"{'×'.join(map(str, features))} feature map at this input size "
                f"({'×'.join(map(str, batch.shape[2:]))}), so its map is one constant and shows nothing; "
                "train with a larger image_size"), stacklevel=2)
        elif not bool((raw > 0).any()):
            warnings.warn(MitkWarning(
                f"{image.name}: Grad-CAM map of class {result.class_names[index]!r} is zero everywhere (no region "
                f"of layer {name!r} adds evidence for it), so its overlay shows nothing"), stacklevel=2)
        return result, self._on_input_grid(heat[0], prepared, image)

    def _on_input_grid(self, heat: torch.Tensor, prepared: Any, image: Image) -> np.ndarray:
        """Invert the preprocessing's spatial steps (resize, crop/pad) on the map, as MONAI records them."""
        from monai.data import MetaTensor

        inverse = getattr(self.preprocess, "inverse", None)
        if inverse is None:
            raise InputError(f"plugin {self.model.name!r}'s inference transforms cannot be inverted (use a MONAI "
                             "Compose) to bring Grad-CAM back to the input's grid")
        tracked = MetaTensor(heat, affine=prepared.affine,
                             applied_operations=[_smooth_resize(op) for op in prepared.applied_operations])
        restored = inverse({"image": tracked})["image"]
        array = np.asarray(restored.detach().cpu().numpy() if hasattr(restored, "numpy") else restored,
                           dtype=np.float32)[0]
        if self.spatial_dims == 2:
            array = array[..., None]
        if tuple(array.shape) != tuple(image.spatial_shape):
            raise InputError(f"Grad-CAM map of shape {array.shape} does not fit the image "
                             f"{image.spatial_shape}", image.path)
        return np.clip(array, 0.0, 1.0)


def case_uncertainty(passes: np.ndarray, binary: bool = False) -> dict[str, Any]:
    """The record's ``uncertainty`` of one case from its passes' probabilities (one row per pass): the predictive
    entropy ``H[mean p]`` (nats; multi-label: the classes' binary entropies summed) and, with two passes or more,
    the mutual information (BALD) ``H[mean p] − mean H[p]``."""
    mean = passes.mean(axis=0)
    return {"predictive_entropy": float(entropy(mean, axis=-1, binary=binary)),
            "mutual_information": mutual_information(passes, binary=binary) if len(passes) > 1 else None,
            "passes": len(passes)}


def _unit_range(heat: torch.Tensor) -> torch.Tensor:
    """Each map of a batch ``(B, 1, ...)`` scaled to ``[0, 1]`` (largest 1); a constant map becomes 0."""
    flat = heat.reshape(heat.shape[0], -1)
    low = flat.min(dim=1).values.reshape(-1, *([1] * (heat.ndim - 1)))
    span = (flat.max(dim=1).values - flat.min(dim=1).values).reshape(low.shape)
    return torch.where(span > 0, (heat - low) / span.clamp_min(torch.finfo(heat.dtype).tiny), torch.zeros_like(heat))


def _smooth_resize(operation: Any) -> Any:
    """A recorded ``Resize`` that inverts with linear interpolation: "area" (the downsampling the image had)
    would bring the map back by repeating pixels, in blocks as large as the zoom factor."""
    import copy

    if not isinstance(operation, dict) or operation.get("class") != "Resize":
        return operation
    smooth = copy.deepcopy(operation)
    extra = dict(smooth.get("extra_info") or {})
    if extra.get("mode") in ("area", "nearest", "nearest-exact"):
        extra["mode"] = "bilinear" if len(smooth.get("orig_size") or ()) == 2 else "trilinear"
        extra["align_corners"] = False
    smooth["extra_info"] = extra
    return smooth


def make_classify_job(model: LoadedModel, policy: OutputPolicy, *, series: str | None = None,
                      allow_resample: bool = False, multi_label: bool | None = None, threshold: float | None = None,
                      explain: bool = False, on_result: Callable[[Case, dict[str, Any]], None] | None = None,
                      dicom_sr: bool = False, tta: bool = False, uncertainty: bool = False) -> CaseJob:
    """The batch job of ``mitk classify``: the record (predicted class, probability per class) goes to the
    batch report, and with ``-o``/``--output-dir`` to ``<input>_class.json``. ``explain`` also writes
    ``<input>_gradcam.png`` (an overlay in the input's pixel geometry; for a volume, the slice where the map
    peaks) and, for a volume, ``<input>_gradcam.nii.gz`` on the input's grid, beside the JSON or the input."""

    from mitk.io.atomic import write_text_atomic
    from mitk.io.reader import load_image
    from mitk.results import record_text

    runner = ClassificationRunner(model, multi_label=multi_label, threshold=threshold, tta=tta,
                                  uncertainty=uncertainty)

    def process(case: Case) -> CaseOutcome:
        target = None
        if policy.output is not None or policy.output_dir is not None:
            target = policy.target(case, "_class", ".json")
            if policy.should_skip(target, case):
                return CaseOutcome(output=target, skipped=True)
            if dicom_sr:
                from mitk.runner.outputs import sibling

                policy.check_companion(sibling(target, "_sr", ".dcm"), case)
        image = load_image(case.path, series=series, allow_resample=allow_resample)
        fit = check_fit(model.expects, image)  # refuse or warn before the network runs
        heat_paths = _explain_paths(case, target, volume=image.spatial_shape[2] > 1) if explain else []
        for path in heat_paths:
            policy.check_companion(path, case)
        if explain:
            result, heat = runner.explain(image)
        else:
            result = runner(image)
        details = result.record()  # what the Python API's result.save() writes too
        if fit:
            details["fit"] = fit
        if explain:
            details["explanation"] = [str(p) for p in _write_explanation(heat, image, heat_paths, policy.overwrite,
                                                                       policy.inputs_for(case))]
        if target is not None and dicom_sr:  # before the record: a case without its SR is redone whole
            from mitk.io.atomic import atomic_path
            from mitk.runner.outputs import sibling
            from mitk.tasks.classify.dicom_sr import write_classification_sr

            report = sibling(target, "_sr", ".dcm")
            with atomic_path(report, overwrite=policy.companion_overwrite, inputs=policy.inputs_for(case)) as part:
                write_classification_sr(details["probabilities"], details["predicted"], image, part,
                                        plugin_name=model.name)
            details["sr"] = str(report)
        if target is not None:
            write_text_atomic(target, record_text(case.path, details), overwrite=policy.overwrite,
                              inputs=policy.inputs_for(case))
        if on_result is not None:
            on_result(case, details)
        return CaseOutcome(output=target, details=details)

    return process


def _explain_paths(case: Case, target: Path | None, *, volume: bool) -> list[Path]:
    directory = target.parent if target is not None else case.path.parent
    png = output_for(case, directory, EXPLAIN_SUFFIX, ".png")
    return [png, output_for(case, directory, EXPLAIN_SUFFIX, ".nii.gz")] if volume else [png]


def _write_explanation(heat: np.ndarray, image: Image, paths: list[Path], overwrite: bool,
                       inputs: InputFiles) -> list[Path]:
    """The overlay PNG, and for a volume the map itself as NIfTI on the image's grid."""
    from mitk.io.atomic import atomic_path
    from mitk.io.nifti import write_nifti
    from mitk.tasks.classify.explain import save_heatmap_overlay

    for path in paths:
        with atomic_path(path, overwrite=overwrite, inputs=inputs) as temporary:
            if path.suffix == ".png":
                save_heatmap_overlay(image, heat, temporary)
            else:
                write_nifti(heat.astype(np.float32), temporary, like=image, description="Grad-CAM")
    return paths
