"""Detection: one image in, boxes in voxel indices and world millimetres out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from mitk.image import Image, map_box_extents
from mitk.io.reader import spacing_source
from mitk.runner.batch import CaseJob
from mitk.runner.geometry import voxel_map
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.runner.tta import flips, passes
from mitk.tasks.detect.fusion import weighted_boxes_fusion
from mitk.tasks.detect.plugin import DetectionPlugin
from mitk.tasks.detect.result import DetectionResult

CSV_COLUMNS = ["label", "name", "score", "i0", "j0", "k0", "i1", "j1", "k1", "x0_mm", "y0_mm", "z0_mm", "x1_mm",
               "y1_mm", "z1_mm", "centre_i", "centre_j", "centre_k", "centre_x_mm", "centre_y_mm", "centre_z_mm",
               "size_i_mm", "size_j_mm", "size_k_mm", "coordinate_system"]
PREVIEW_BOXES = 8
"""The preview shows the slices through the centres of at most this many boxes (highest scores)."""


def boxes_to_input_grid(boxes: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """Map ``(i0, j0, k0, i1, j1, k1)`` boxes from the network grid to the input grid (enclosing box)."""
    extents = map_box_extents(boxes, voxel_map(target_affine, source_affine))  # source voxel -> target voxel
    return extents + 0.5  # extent edges back to (inclusive start, exclusive end) indices


class DetectionRunner:
    """One detector, one pass: boxes on the input grid (the network or the classical array method)."""

    def __init__(self, model: LoadedModel, coordinate_system: str = "RAS") -> None:
        if not isinstance(model.plugin, DetectionPlugin):
            raise TypeError("DetectionRunner needs a detection plugin")
        self.model = model
        self.plugin: DetectionPlugin = model.plugin
        self.labels = self.plugin.labels(model.config)
        self.coordinate_system = coordinate_system
        self.classical = model.classical
        if not self.classical:
            self.preprocess = self.plugin.inference_transforms(model.config)

    def __call__(self, image: Image) -> DetectionResult:
        if self.classical:  # NumPy alone: no torch, no MONAI
            boxes, grid_affine, scores, labels = self.plugin.detect_array(image, self.model.config)
        else:
            import torch

            from mitk.runner.tensors import to_meta_tensor

            with torch.inference_mode():
                data = self.preprocess({"image": to_meta_tensor(image)})
                network_input = data["image"]
                boxes, scores, labels = self.plugin.detect(network_input, self.model.network, self.model.config)
            grid_affine = np.asarray(network_input.affine, float)
        boxes = boxes_to_input_grid(np.asarray(boxes), np.asarray(grid_affine, float), image.affine)
        return DetectionResult(boxes_voxel=boxes, affine=image.affine, scores=np.asarray(scores, float),
                               labels=np.asarray(labels, int), label_names=self.labels,
                               coordinate_system=self.coordinate_system, spacing_source=spacing_source(image))


def flip_boxes(boxes: np.ndarray, axes: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Boxes found on an image flipped along ``axes``, on the unflipped grid: voxels ``[a, b)`` of an axis of
    ``n`` voxels are ``[n − b, n − a)``."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 6).copy()
    for axis in axes:
        out[:, [axis, axis + 3]] = shape[axis] - out[:, [axis + 3, axis]]
    return out


def voxel_flip_axes(world_axes: Sequence[int], affine: np.ndarray, spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """The voxel axes to flip for ``world_axes`` (0 = x, left-right; 1 = y; 2 = z): each world axis's voxel axis
    is the one that runs most along it on this grid (a scan stored sagittally flips the right axes). Axes one
    voxel long are left out, and so is left-right on a one-slice image (a radiograph or picture: never mirrored)."""
    direction = np.abs(np.asarray(affine, float)[:3, :3])
    direction = direction / np.maximum(direction.sum(axis=0, keepdims=True), 1e-12)
    along = [int(np.argmax(direction[:, voxel])) for voxel in range(3)]  # world axis each voxel axis runs along
    planar = int(spatial_shape[2]) == 1
    return tuple(voxel for voxel in range(3) if along[voxel] in set(world_axes) and int(spatial_shape[voxel]) > 1
                 and not (planar and along[voxel] == 0))


class DetectionEnsembleRunner:
    """Several detectors (an ensemble: e.g. the best checkpoint of every fold) and/or test-time flips: every
    combination of ``flip_axes``, world axes (0 = x, left-right; :func:`voxel_flip_axes` finds their voxel axes).
    The passes' boxes are fused by weighted boxes fusion (:mod:`mitk.tasks.detect.fusion`); each box records the
    spread of the passes' scores, the record the passes run."""

    def __init__(self, models: Sequence[LoadedModel], flip_axes: Sequence[int] = (), coordinate_system: str = "RAS",
                 iou_threshold: float = 0.55, skip_score: float = 0.0) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if any(axis not in (0, 1, 2) for axis in flip_axes):
            raise ValueError(f"flip axes are world axes 0, 1 or 2, not {list(flip_axes)}")
        self.members = [DetectionRunner(model, coordinate_system) for model in models]
        self.labels = self.members[0].labels
        self.coordinate_system = coordinate_system
        self.world_axes = tuple(dict.fromkeys(int(axis) for axis in flip_axes))
        self.iou_threshold, self.skip_score = iou_threshold, skip_score

    def flip_sets(self, image: Image) -> list[tuple[int, ...]]:
        """The voxel flips run on ``image`` (the plain pass first)."""
        return flips(voxel_flip_axes(self.world_axes, image.affine, image.spatial_shape)) if self.world_axes \
            else [()]

    def __call__(self, image: Image) -> DetectionResult:
        flip_sets = self.flip_sets(image)
        if len(self.members) == 1 and len(flip_sets) == 1:
            return self.members[0](image)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for member, axes in passes(len(self.members), flip_sets):
            view = replace(image, array=np.ascontiguousarray(np.flip(image.array, axis=axes))) if axes else image
            result = self.members[member](view)
            found.append((flip_boxes(result.boxes_voxel, axes, image.spatial_shape),
                          np.asarray(result.scores, float), np.asarray(result.labels, int)))
        fused = weighted_boxes_fusion([b for b, _, _ in found], [s for _, s, _ in found], [lab for _, _, lab in found],
                                      iou_threshold=self.iou_threshold, skip_score=self.skip_score)
        return DetectionResult(boxes_voxel=fused.boxes, affine=image.affine, scores=fused.scores,
                               labels=fused.labels, label_names=self.labels,
                               coordinate_system=self.coordinate_system, score_std=fused.score_std,
                               members=fused.members, passes=len(found), spacing_source=spacing_source(image),
                               pass_counts={"members": len(self.members), "flips": len(flip_sets),
                                            "total": len(found)})


def member_models(model: LoadedModel) -> list[LoadedModel]:
    """An ensemble's members as one model each (its ``members`` networks, each with its own settings: a fold's
    anchors are found from its training boxes), else the model itself."""
    networks = tuple(getattr(model, "members", ()) or ())
    if len(networks) < 2:
        return [model]
    configs = tuple(getattr(model, "member_configs", ()) or ()) or (model.config,) * len(networks)
    return [replace(model, network=network, config=config) for network, config in zip(networks, configs, strict=True)]


def safe_flip_axes(model: LoadedModel) -> tuple[int, ...]:
    """The world axes the plugin declares safe to flip (its ``tta_axes(config)``; none when it declares none)."""
    declared = getattr(model.plugin, "tta_axes", None)
    return tuple(int(axis) for axis in declared(model.config)) if callable(declared) else ()


def detection_runner(model: LoadedModel, tta: bool = False, coordinate_system: str = "RAS"
                     ) -> DetectionRunner | DetectionEnsembleRunner:
    """The task's runner (``mitk detect`` and ``model.detect(image, tta=...)``): one detector, or, for an ensemble
    or with ``tta`` and flips the plugin allows, their fusion."""
    members = member_models(model)
    axes = safe_flip_axes(model) if tta else ()
    if len(members) == 1 and not axes:
        return DetectionRunner(model, coordinate_system=coordinate_system)
    return DetectionEnsembleRunner(members, axes, coordinate_system=coordinate_system)


def csv_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The box records of :meth:`DetectionResult.to_dicts` as flat CSV rows (:data:`CSV_COLUMNS`)."""
    rows = []
    for record in records:
        row: dict[str, Any] = {key: record[key] for key in ("label", "name", "score", "coordinate_system")}
        row.update(zip(CSV_COLUMNS[3:9], record["box_voxel"], strict=True))
        row.update(zip(CSV_COLUMNS[9:15], record["box_world_mm"], strict=True))
        row.update(zip(CSV_COLUMNS[15:18], record["centre_voxel"], strict=True))
        row.update(zip(CSV_COLUMNS[18:21], record["centre_world_mm"], strict=True))
        row.update(zip(CSV_COLUMNS[21:24], record["size_mm"], strict=True))
        rows.append(row)
    return rows


def box_masks(result: DetectionResult, shape: tuple[int, int, int], limit: int = PREVIEW_BOXES) -> list[np.ndarray]:
    """One label map per box (highest scores first): the box's voxels set to its label."""
    masks = []
    for index in np.argsort(-np.asarray(result.scores))[:limit]:
        box = np.asarray(result.boxes_voxel, float).reshape(-1, 6)[index]
        start = np.clip(np.floor(box[:3]), 0, np.array(shape) - 1).astype(int)
        stop = np.clip(np.ceil(box[3:]), start + 1, np.array(shape)).astype(int)
        mask = np.zeros(shape, dtype=np.int64)
        mask[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = int(result.labels[index])
        masks.append(mask)
    return masks


def make_detect_job(model: LoadedModel, policy: OutputPolicy, *, series: str | None = None,
                    allow_resample: bool = False, csv: bool = False, preview: bool = False,
                    output_format: str = "json", coordinate_system: str = "RAS", deidentify: bool = False,
                    tta: bool = False) -> CaseJob:
    """``process(case) -> CaseOutcome``: the boxes as a JSON record; written to ``<stem>_boxes.json`` with
    ``-o``/``--output-dir`` or whenever a file-only output (``csv``, ``preview``, a DICOM SR) is asked for."""
    import contextlib
    from pathlib import Path

    from mitk.io.atomic import atomic_path
    from mitk.io.reader import load_image, require_volume
    from mitk.results import record_text
    from mitk.runner.batch import CaseOutcome
    from mitk.runner.fit import check_fit
    from mitk.runner.outputs import sibling, write_csv

    runner = detection_runner(model, tta, coordinate_system)
    sr = output_format == "dicom-sr"
    writes = policy.output is not None or policy.output_dir is not None or csv or preview or sr

    def process(case: Any) -> CaseOutcome:
        target = None
        companions: dict[str, Path] = {}
        if writes:
            target = policy.target(case, "_boxes", ".dcm" if sr else ".json")
            if policy.should_skip(target, case):
                return CaseOutcome(output=target, skipped=True)
            if csv:
                companions["csv"] = sibling(target, "", ".csv")
            if preview:
                companions["preview"] = sibling(target, "_preview", ".png")
            if sr:
                companions["json"] = sibling(target, "", ".json")
            for path in companions.values():
                policy.check_companion(path, case)
        image = require_volume(load_image(case.path, series=series, allow_resample=allow_resample))
        if sr and "dicom" not in image.meta:
            from mitk.errors import UsageError

            raise UsageError("--format dicom-sr needs a DICOM input", case.path)
        fit = check_fit(model.expects, image)  # refuse or warn before the network runs
        result = runner(image)
        records = result.to_dicts()
        details: dict[str, Any] = result.record()  # what the Python API's result.save() writes too
        if fit:
            details["fit"] = fit
        if target is not None:
            inputs = policy.inputs_for(case)
            with contextlib.ExitStack() as outputs:  # all of a case's files or none; the main one last
                def temporary(path: Path) -> Path:
                    overwrite = policy.overwrite if path == target else policy.companion_overwrite
                    return outputs.enter_context(atomic_path(path, overwrite=overwrite, inputs=inputs))

                document = record_text(case.path, details)
                if sr:
                    from mitk.tasks.detect.dicom_sr import write_detection_sr

                    write_detection_sr(result, image, temporary(target), plugin_name=model.name,
                                       deidentify=deidentify)
                else:
                    temporary(target).write_text(document, encoding="utf-8")
                if "json" in companions:
                    temporary(companions["json"]).write_text(document, encoding="utf-8")
                if "csv" in companions:
                    write_csv(csv_rows(records), temporary(companions["csv"]), CSV_COLUMNS)
                if "preview" in companions:
                    from mitk.preview import save_training_preview

                    masks = box_masks(result, image.spatial_shape) or [np.zeros(image.spatial_shape, np.int64)]
                    names = [f"{r['name']} {r['score']:.2f}" for r in
                             sorted(records, key=lambda r: -r["score"])[:PREVIEW_BOXES]] or ["no boxes"]
                    save_training_preview([(image, mask) for mask in masks], runner.labels,
                                          temporary(companions["preview"]), names=names)
            details.update({k: str(v) for k, v in companions.items()})
        return CaseOutcome(output=target, details=details)

    return process
