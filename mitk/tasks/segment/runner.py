"""Segmentation: one image in, a label map on the input's exact grid out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.errors import InputError, PluginError
from mitk.image import Image
from mitk.runner.batch import CaseJob
from mitk.runner.ensemble import EPSILON, RunningMean
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.runner.tta import Flip, flips, passes, tensor_dims
from mitk.tasks.segment.plugin import SegmentationPlugin
from mitk.tasks.segment.result import SegmentationResult

if TYPE_CHECKING:
    import torch


def argmax_channels(values: torch.Tensor) -> torch.Tensor:
    """``argmax`` over the channel axis of ``(C, I, J, K)`` as ``(1, I, J, K)`` int64, first maximum wins.

    A running comparison over channels: on the CPU ``torch.argmax(dim=0)`` walks memory with a large
    stride and is tens of times slower for volumes.
    """
    import torch

    best = values[0]
    index = torch.zeros(values.shape[1:], dtype=torch.uint8 if values.shape[0] < 256 else torch.int64)
    for channel in range(1, values.shape[0]):
        better = values[channel] > best
        best = torch.maximum(values[channel], best)
        index.masked_fill_(better, channel)
    return index.unsqueeze(0)


def label_dtype(max_label: int) -> np.dtype[Any]:
    return np.dtype(np.uint8 if max_label < 256 else np.uint16)


class SegmentationRunner:
    """Applies a loaded segmentation model to images, one at a time, with the model loaded once."""

    def __init__(self, model: LoadedModel, probabilities: bool = False, tta: bool = False,
                 uncertainty: bool = False) -> None:
        if not isinstance(model.plugin, SegmentationPlugin):
            raise TypeError("SegmentationRunner needs a segmentation plugin")
        self.model = model
        self.plugin: SegmentationPlugin = model.plugin
        self.config = model.config
        self.labels = self.plugin.labels(self.config)
        self.keep_probabilities = probabilities
        self.tta, self.uncertainty = tta, uncertainty
        """``tta``: also run the flips of :meth:`SegmentationPlugin.tta_axes` and average; ``uncertainty``: keep
        the per-voxel entropy of the averaged probabilities (:attr:`SegmentationResult.entropy`)."""
        self.network, self.device = model.network, model.device
        self.classical = model.classical and not (probabilities or tta or uncertainty)
        if self.classical:
            return
        if model.classical:  # probabilities: only the network path has them, so it is built here
            import torch

            self.network, self.device = self.plugin.network(self.config).eval(), torch.device("cpu")
        self.preprocess = self.plugin.inference_transforms(self.config)
        self.inferer = self.plugin.inferer(self.config)
        self.postprocess = self.plugin.postprocess(self.config)

    def channel_input(self, image: Image) -> Image:
        """``image`` as the plugin takes it: a multi-channel image passes when the network takes that many
        channels, RGB becomes its luminance for a plugin that asks for it, anything else is refused in one line
        that says what the plugin takes (:attr:`SegmentationPlugin.colour`)."""
        if image.array.ndim < 4:
            return image
        count, takes = int(image.array.shape[-1]), self.plugin.image_channels(self.config)
        mode = self.plugin.colour
        if mode == "channels" and takes == count:
            return image
        if mode == "luminance" and count in (3, 4):
            from mitk.io.photo import luminance

            return Image(array=luminance(image.array), affine=image.affine, path=image.path, meta=image.meta)
        if count in (3, 4):
            raise InputError(f"plugin {self.model.name} cannot take colour images (it takes {takes} channel"
                             f"{'s' if takes > 1 else ''}; this image has {count}: RGB{'A' if count == 4 else ''}): "
                             "convert it to greyscale, or use a plugin that accepts colour (threshold segments "
                             "its luminance)", image.path)
        raise InputError(f"expected a 3-D volume, got 4-D data of shape {image.array.shape}: plugin "
                         f"{self.model.name} takes {takes} channel{'s' if takes > 1 else ''}, this image has {count}",
                         image.path)

    def __call__(self, image: Image) -> SegmentationResult:
        image = self.channel_input(image)
        if self.classical:
            return self._from_array(image)
        import torch

        with torch.inference_mode():
            return self._from_network(image)

    def _from_array(self, image: Image) -> SegmentationResult:
        """A classical plugin's NumPy label map, checked and stored as the network path stores its own."""
        label_map = np.asarray(self.plugin.segment_array(image, self.config))
        grid = tuple(image.spatial_shape[:3])
        if label_map.shape != grid or (not np.issubdtype(label_map.dtype, np.integer) and label_map.dtype != bool):
            raise PluginError(f"plugin {self.model.name!r} returned a label map of shape {label_map.shape} "
                              f"({label_map.dtype}) for an image grid of {grid}")
        labels = np.asarray(label_map, dtype=label_dtype(max(self.labels)))
        if image.array.flags.f_contiguous:
            labels = np.asfortranarray(labels)
        result = SegmentationResult(label_map=labels, affine=image.affine, labels=dict(self.labels))
        return result

    def _from_network(self, image: Image) -> SegmentationResult:
        import torch

        from mitk.runner.geometry import is_axis_permutation, to_input_grid
        from mitk.runner.tensors import to_affine_tensor, to_meta_tensor

        # MONAI's transforms take a MetaTensor; a plugin's MONAI-free preprocessing takes an AffineTensor
        convert = to_affine_tensor if getattr(self.preprocess, "takes_affine_tensor", False) else to_meta_tensor
        data = self.preprocess({"image": convert(image)})
        network_input = data["image"]
        source_affine = np.asarray(network_input.affine, dtype=np.float64)
        batch = network_input.as_tensor().unsqueeze(0).to(self.device)
        network = self.network
        assert network is not None, "segmentation plugins supply a network (classical ones a torch module)"
        networks = self.model.members or (network,)
        flip_sets: list[Flip] = flips(self.tta_axes(batch.shape[2:]), batch.shape[2:]) if self.tta else [()]
        grid = image.spatial_shape[:3]
        if len(networks) == 1 and len(flip_sets) == 1:
            logits = self.inferer(batch, network)[0].float().cpu()  # one pass: exactly the single model's path
            del batch
            if self.keep_probabilities or self.uncertainty or \
                    not is_axis_permutation(source_affine, image.affine, logits.shape[1:], grid):
                scores = torch.softmax(logits, dim=0)  # probabilities are what gets interpolated or kept
            else:
                scores = logits  # an exact axis permutation: the argmax of logits is the argmax of probabilities
            del logits
        else:
            scores = self._averaged(batch, networks, flip_sets)  # on the network grid, as nnU-Net averages
            del batch
        scores = to_input_grid(scores, source_affine, image.affine, grid)
        label_map = argmax_channels(scores)
        if self.postprocess is not None:
            label_map = self.postprocess(label_map)
        labels = np.asarray(label_map[0].cpu().numpy(), dtype=label_dtype(max(self.labels)))
        if image.array.flags.f_contiguous:
            labels = np.asfortranarray(labels)  # the source's order: statistics pair voxels, writers copy once
        result = SegmentationResult(label_map=labels, affine=image.affine, labels=dict(self.labels))
        result.passes = {"members": len(networks), "flips": len(flip_sets), "total": len(networks) * len(flip_sets)}
        if self.uncertainty:
            result.entropy = voxel_entropy(scores, image.array.flags.f_contiguous)
            result.uncertainty = entropy_summary(result.entropy, labels, result.passes["total"])
        if self.keep_probabilities:
            result.probabilities = np.ascontiguousarray(np.moveaxis(scores.numpy(), 0, -1))
        return result

    def tta_axes(self, spatial_shape: Any) -> tuple[int, ...]:
        """The plugin's flip axes; of a one-slice image (a radiograph, a picture) never the first: left-right."""
        axes = self.plugin.tta_axes(self.config)
        planar = len(spatial_shape) == 3 and int(spatial_shape[2]) == 1
        return tuple(axis for axis in axes if not (planar and axis == 0))

    def _averaged(self, batch: torch.Tensor, networks: tuple[Any, ...], flip_sets: list[Flip]) -> torch.Tensor:
        """The softmax probabilities ``(C, I, J, K)`` averaged over every member and flip (flipped back)."""
        import torch

        mean = RunningMean()
        for member, flip in passes(len(networks), flip_sets):
            dims = tensor_dims(flip, leading=2)
            logits = self.inferer(batch.flip(dims) if flip else batch, networks[member])
            if flip:
                logits = logits.flip(dims)
            mean.add(torch.softmax(logits[0].float(), dim=0).cpu())
        return mean.mean()


def voxel_entropy(probabilities: torch.Tensor, fortran: bool = False) -> np.ndarray:
    """Per-voxel entropy (nats) of probabilities ``(C, I, J, K)``, as float32 ``(I, J, K)``."""
    import torch

    clipped = probabilities.float().clamp_min(EPSILON)
    values = (-(clipped * torch.log(clipped)).sum(dim=0)).clamp_min(0.0).numpy().astype(np.float32)
    return np.asfortranarray(values) if fortran else values


def entropy_summary(entropy: np.ndarray, labels: np.ndarray, passes: int) -> dict[str, Any]:
    """The record's summary: mean entropy over the predicted foreground (over the whole image when nothing is
    predicted: ``region`` says which) and the passes averaged."""
    foreground = np.asarray(labels) != 0
    region = "foreground" if foreground.any() else "image"
    values = entropy[foreground] if region == "foreground" else entropy
    return {"mean_entropy": float(values.mean()), "passes": int(passes), "entropy_map": None, "region": region}


# ---------------------------------------------------------------------------------------------------
# The per-case job used by `mitk segment`
# ---------------------------------------------------------------------------------------------------


STATS_COLUMNS = ["label", "name", "voxels", "volume_ml", "mean_intensity"]
PLANAR_STATS_COLUMNS = ["label", "name", "pixels", "area_mm2", "mean_intensity", "pixel_spacing_mm", "spacing_source"]
"""A one-slice image (picture, radiograph, single slice): areas in mm², with where the pixel spacing came from."""


def output_extension(path: Any, output_format: str) -> str:
    """The label map's extension: DICOM SEG, NIfTI, or (``auto``) the input's format family."""
    if output_format.startswith("dicom"):
        return ".dcm"
    if output_format == "nifti":
        return ".nii.gz"
    from mitk.io.writer import default_extension

    return default_extension(path)


def make_segment_job(model: LoadedModel, policy: OutputPolicy, *, probabilities: bool = False, stats: bool = False,
                     preview: bool = False, output_format: str = "nifti", series: str | None = None,
                     allow_resample: bool = False, deidentify: bool = False, rtstruct: bool = False,
                     tta: bool = False, uncertainty: bool = False) -> CaseJob:
    """Return ``process(case) -> CaseOutcome`` for the batch runner; ``uncertainty`` also writes
    ``<case>_entropy.nii.gz`` and the record's ``uncertainty`` summary."""
    import contextlib
    from pathlib import Path

    from mitk.io.atomic import atomic_path, split_suffix
    from mitk.io.reader import is_planar, load_image, require_volume
    from mitk.runner.batch import CaseOutcome
    from mitk.runner.fit import check_fit
    from mitk.runner.outputs import sibling, write_csv
    from mitk.tasks.segment.result import write_entropy, write_label_map, write_probabilities

    runner = SegmentationRunner(model, probabilities=probabilities, tta=tta, uncertainty=uncertainty)

    def process(case: Any) -> CaseOutcome:
        target = policy.target(case, "_seg", output_extension(case.path, output_format))
        if policy.should_skip(target, case):
            return CaseOutcome(output=target, skipped=True)
        companions = {}
        if probabilities:  # float maps: NIfTI beside a PNG or DICOM SEG, else the label map's own format
            extension = split_suffix(target)[1].lower()
            companions["probabilities"] = sibling(target, "_prob", ".nii.gz" if extension in (".png", ".dcm")
                                                  else extension)
        if uncertainty:
            companions["entropy"] = sibling(target, "_entropy", ".nii.gz")
        if stats:
            companions["stats"] = sibling(target, "_stats", ".csv")
        if preview:
            companions["preview"] = sibling(target, "_preview", ".png")
        if output_format == "dicom-seg-sr":
            companions["sr"] = sibling(target, "_sr", ".dcm")
        if rtstruct:
            companions["rtstruct"] = sibling(target, "_rtstruct", ".dcm")
        for path in companions.values():
            policy.check_companion(path, case)  # refuse before any compute
        image = require_volume(load_image(case.path, series=series, allow_resample=allow_resample), channels=True)
        fit = check_fit(model.expects, image)  # refuse or warn before the network runs
        if rtstruct and image.meta.get("dicom") is None:
            from mitk.errors import InputError

            raise InputError("--rtstruct needs a DICOM input (this image was not read from DICOM)", case.path)
        result = runner(image)
        rows = result.statistics(image)
        planar = "area_mm2" in rows[0] if rows else is_planar(image)
        # All of a case's files or none: each goes to a temporary file, renamed only when every one is written.
        # The stack renames in reverse order, so the label map (entered first) is committed last: after a crash
        # at any point, a case without its label map is redone by --skip-existing, companions included.
        inputs = policy.inputs_for(case)
        with contextlib.ExitStack() as outputs:
            def temporary(path: Path) -> Path:
                overwrite = policy.overwrite if path == target else policy.companion_overwrite
                return outputs.enter_context(atomic_path(path, overwrite=overwrite, inputs=inputs))

            if output_format.startswith("dicom"):
                from mitk.tasks.segment.dicom_seg import write_dicom_seg

                seg = write_dicom_seg(result, image, temporary(target), plugin_name=model.name, deidentify=deidentify)
                if "sr" in companions:
                    from mitk.tasks.segment.dicom_sr import segment_volumes, write_segmentation_sr

                    write_segmentation_sr(seg, segment_volumes(result, rows), image, temporary(companions["sr"]),
                                          plugin_name=model.name, deidentify=deidentify)
            else:
                write_label_map(result, temporary(target), like=image, plugin=model.name)  # as result.save()
            if "rtstruct" in companions:
                from mitk.tasks.segment.rtstruct import write_rtstruct

                write_rtstruct(result, image, temporary(companions["rtstruct"]), plugin_name=model.name,
                               deidentify=deidentify)
            if "probabilities" in companions and result.probabilities is not None:
                write_probabilities(result, temporary(companions["probabilities"]), like=image, plugin=model.name)
            if "entropy" in companions and result.entropy is not None:
                write_entropy(result, temporary(companions["entropy"]), like=image, plugin=model.name)
            if "stats" in companions:
                write_csv(rows, temporary(companions["stats"]), PLANAR_STATS_COLUMNS if planar else STATS_COLUMNS)
            if "preview" in companions:
                from mitk.preview import save_overlay_png

                save_overlay_png(image, result.label_map, result.labels, temporary(companions["preview"]))
        details: dict[str, Any] = {"labels": rows, "shape": list(image.spatial_shape),
                                   **{k: str(v) for k, v in companions.items()}, **({"fit": fit} if fit else {})}
        if result.passes is not None and (tta or uncertainty or result.passes["members"] > 1):
            details["passes"] = result.passes  # the cost: members × flips
        if result.uncertainty is not None:
            details["uncertainty"] = {**result.uncertainty, "entropy_map": companions["entropy"].name
                                      if "entropy" in companions else None}
        return CaseOutcome(output=target, details=details)

    return process
