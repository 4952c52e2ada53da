"""Training a classification plugin: the classification recipe and its :class:`~mitk.training.recipe.TrainingStep`.

The data is a CSV with ``image`` and ``label`` columns (image paths relative to the CSV; an optional ``split``
column says ``training`` or ``validation``), a datalist JSON whose cases carry a ``label`` field
(``{"training": [{"image": "a.png", "label": "fracture"}], "validation": [...]}``), or a class-per-folder
image set (``train/<class>/*.png``, optional ``val/<class>/``: :mod:`mitk.training.imagefolder`). A ``group``
(or ``patient``) column or key keeps a patient's images on one side of a split mitk draws; without one, images
that show the same picture (same pixels, or re-encoded) are found, warned about and kept together. A label
naming several classes (a JSON list, or ``a;b`` in a CSV) makes the run multi-label. Class names are the labels found,
sorted (numerically when they are all whole numbers). Without a validation list, a seeded, stratified share of
each class is held out, so that validation sees every class that has at least two cases.

Found from the data: ``class_names``, ``in_channels`` and ``spatial_dims`` (from the first image) and
``class_weights``, the inverse class frequency in the training cases (mean 1), so that a rare class counts
as much as a common one in the loss (``--set class_weights=null`` turns this off). Validation reports the
one-vs-rest ROC AUC per class and its mean (``mean_auc``, the monitor, higher is better), accuracy and
balanced accuracy.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mitk.enums import Task
from mitk.errors import InputError, PluginError
from mitk.plugin import TaskPlugin
from mitk.tasks.classify.plugin import ClassificationPlugin
from mitk.training.data import Datalist, case_name, read_case_image, read_datalist_document, tensor_of
from mitk.training.distributed import gather_validation_rows
from mitk.training.imagefolder import read_image_folder
from mitk.training.recipe import TrainingRecipe, TrainingStep
from mitk.training.splits import GROUP_KEYS, case_group, same_content_groups, split_by_groups, warn_shared_groups

SPLIT_WORDS = {"training": "training", "train": "training", "validation": "validation", "val": "validation"}
MULTI_LABEL_SEPARATOR = ";"


def case_classes(case: Mapping[str, Any]) -> list[str]:
    """A case's class names: one for single-label cases, any number for multi-label ones."""
    label = case.get("label")
    if isinstance(label, list):
        return [str(v).strip() for v in label]
    return [part.strip() for part in str(label).split(MULTI_LABEL_SEPARATOR)] if isinstance(label, str) \
        else [str(label)]


def sorted_classes(names: set[str]) -> list[str]:
    """Numerically when every name is a whole number (``2`` before ``10``), else alphabetically."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _resolve(path: Any, base: Path, source: Path) -> str:
    if not isinstance(path, str) or not path.strip():
        raise InputError(f"every case needs an image path, got {path!r}", source)
    candidate = Path(path.strip())
    return str(candidate if candidate.is_absolute() else base / candidate)


IMAGE_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".nrrd", ".mha", ".mhd", ".zip")
"""Endings of image files: a "class name" that ends so is the label map of a segmentation data set."""


def _names_a_file(name: str, base: Path) -> bool:
    """Whether a label names an image file (by its ending) or any existing file beside the labels file."""
    text = name.strip()
    if text.lower().endswith(IMAGE_SUFFIXES):
        return True
    if "/" not in text and "\\" not in text:
        return False
    candidate = Path(text)
    return (candidate if candidate.is_absolute() else base / candidate).is_file()


def _case(image: Any, label: Any, base: Path, source: Path, where: str) -> dict[str, Any]:
    if label is None or (isinstance(label, str) and not label.strip()) or label == []:
        raise InputError(f"{where}: every case needs a label", source)
    if not isinstance(label, str | int | list) or isinstance(label, bool):
        raise InputError(f"{where}: a label is a class name, a whole number or a list of them, got {label!r}",
                         source)
    images = [_resolve(p, base, source) for p in image] if isinstance(image, list) else _resolve(image, base,
                                                                                                   source)
    label = [str(v) for v in label] if isinstance(label, list) else str(label).strip()
    for name in label if isinstance(label, list) else [label]:
        if _names_a_file(name, base):
            raise InputError(f"{where}: the label {name!r} is a file, not a class name: this looks like a "
                             "segmentation data set (image and label-map pairs); classification needs a class "
                             "name per image (train segmentation with `mitk train segment`)", source)
    return {"image": images, "label": label}


def read_csv_datalist(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``image,label[,split]`` rows: (training, validation) cases."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"not a readable CSV file ({error})", path) from None
    if "image" not in columns or "label" not in columns:
        raise InputError(f"a classification CSV needs image and label columns, got {columns}", path)
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": []}
    for number, row in enumerate(rows, start=2):
        split = SPLIT_WORDS.get((row.get("split") or "training").lower())
        if split is None:
            raise InputError(f"line {number}: split must be training or validation, got {row['split']!r}", path)
        lists[split].append(_keep_groups(_case(row["image"], row["label"], path.parent, path, f"line {number}"), row))
    return lists["training"], lists["validation"]


def read_json_datalist(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``{"training": [{"image", "label"}], "validation": [...]}``: (training, validation) cases."""
    document = read_datalist_document(path)
    lists = {}
    for key in ("training", "validation"):
        cases = document.get(key) or []
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise InputError(f'"{key}" must be a list of {{"image": ..., "label": ...}}', path)
        lists[key] = [_keep_groups(_case(c.get("image"), c.get("label"), path.parent, path, f"{key}[{i}]"), c)
                      for i, c in enumerate(cases)]
    return lists["training"], lists["validation"]


def stratified_hold_out(cases: list[dict[str, Any]], seed: int, fraction: float, source: Path,
                        groups: list[str | None] | None = None
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out a seeded ``fraction`` of each class (by first class name; at least one of a class with two or
    more cases, never all of a class), a group's cases (``group``/``patient``, or ``groups``) together."""
    return split_by_groups(cases, seed, fraction, source, stratum=lambda case: case_classes(case)[0], groups=groups)


def _keep_groups(case: dict[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The case with the group/patient column of its row, if any."""
    case.update({key: str(row[key]).strip() for key in GROUP_KEYS if row.get(key) not in (None, "")})
    return case


def class_weights(cases: list[dict[str, Any]], names: list[str], multi_label: bool) -> list[float]:
    """Inverse class frequency scaled to mean 1 (single-label); negatives per positive (multi-label)."""
    counts = Counter(name for case in cases for name in set(case_classes(case)))
    if multi_label:
        return [round((len(cases) - counts[n]) / counts[n], 6) if counts[n] else 1.0 for n in names]
    inverse = [1.0 / counts[n] if counts[n] else 0.0 for n in names]
    present = [w for w in inverse if w > 0]
    mean = sum(present) / len(present)
    return [round(w / mean, 6) if w > 0 else 1.0 for w in inverse]


class LoadClassCase:
    """Read a case's image with mitk's readers into the classifier's input (:func:`network_input`) and its
    label into a class index (or a multi-hot vector). Deterministic, so a ``CacheDataset`` caches it."""

    def __init__(self, class_names: list[str], spatial_dims: int, in_channels: int, multi_label: bool) -> None:
        self.index = {name: i for i, name in enumerate(class_names)}
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.multi_label = multi_label

    def __call__(self, case: dict[str, Any]) -> dict[str, Any]:
        from mitk.tasks.classify.runner import network_input

        image = read_case_image(case["image"])
        names = case_classes(case)
        unknown = [n for n in names if n not in self.index]
        if unknown:
            raise InputError(f"label {unknown[0]!r} is not one of the model's classes {list(self.index)}", image.path)
        if self.multi_label:
            label = torch.zeros(len(self.index), dtype=torch.float32)
            label[[self.index[n] for n in names]] = 1.0
        else:
            if len(names) != 1:
                raise InputError(f"names {len(names)} classes but the model is single-label", image.path)
            label = torch.tensor(self.index[names[0]], dtype=torch.long)
        meta = network_input(image, spatial_dims=self.spatial_dims, in_channels=self.in_channels)
        return {"image": meta, "label": label, "name": case.get("name") or case_name(image.path or "case")}


def log_loss(probabilities: np.ndarray, labels: np.ndarray, *, multi_label: bool) -> float:
    """Mean validation log loss (unweighted cross-entropy; per-class binary cross-entropy for multi-label) from
    the probabilities, clipped at 1e-7 so that one confident miss stays finite."""
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1.0 - 1e-7)
    if multi_label:
        truth = labels > 0.5
        return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))
    return float(-np.mean(np.log(p[np.arange(len(p)), labels.astype(np.int64)])))


class ClassificationStep:
    """Cross-entropy (or per-class binary cross-entropy) on batches; ROC AUC and accuracy in validation."""

    monitor = "mean_auc"
    mode: Literal["max", "min"] = "max"
    tie_break = "loss"
    """Between epochs of equal AUC (1.0 is reached early on easy data) the one with the lower validation log
    loss is kept: the better calibrated probabilities."""
    shards_validation = True
    """Under torchrun each rank scores its share of the cases; the scores are gathered before the metrics."""

    def __init__(self, plugin: ClassificationPlugin, config: dict[str, Any]) -> None:
        self.loss_function = plugin.loss(config)
        self.class_names = plugin.class_names(config)
        self.multi_label = bool(config.get("multi_label"))
        self.threshold = float(config.get("threshold", 0.5))

    def loss(self, network: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        image = tensor_of(batch["image"]).to(device, non_blocking=True)
        label = tensor_of(batch["label"]).to(device, non_blocking=True)
        loss: torch.Tensor = self.loss_function(network(image).float(), label)
        return loss

    @torch.no_grad()
    def validate(self, network: torch.nn.Module, loader: Any, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
        network.eval()
        probabilities, labels = [], []
        for batch in loader:
            image = tensor_of(batch["image"]).to(device)
            with autocast():
                logits = network(image).float()
            scores = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)
            probabilities.append(scores.cpu().numpy())
            labels.append(tensor_of(batch["label"]).cpu().numpy())
        network.train()
        return self.summarise(gather_validation_rows(np.concatenate(probabilities)),
                              gather_validation_rows(np.concatenate(labels)))

    def summarise(self, probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from mitk.tasks.classify.evaluation import classification_metrics, roc_auc

        if self.multi_label:
            aucs = [roc_auc(probabilities[:, c], labels[:, c] > 0.5) for c in range(len(self.class_names))]
            hits = (probabilities >= self.threshold) == (labels > 0.5)
            finite = [a for a in aucs if math.isfinite(a)]
            summary = {"mean_auc": float(np.mean(finite)) if finite else math.nan,
                       "accuracy": float(hits.mean()), "exact_match": float(hits.all(axis=1).mean()),
                       "loss": log_loss(probabilities, labels, multi_label=True)}
        else:
            metrics = classification_metrics([self.class_names[int(i)] for i in labels], probabilities,
                                              self.class_names)
            aucs = [metrics["per_class"][name]["auc"] for name in self.class_names]
            summary = {"mean_auc": metrics["macro_auc"], "accuracy": metrics["accuracy"],
                       "balanced_accuracy": metrics["balanced_accuracy"],
                       "loss": log_loss(probabilities, labels, multi_label=False)}
        summary.update({f"auc/{name}": value for name, value in zip(self.class_names, aucs, strict=True)})
        return summary


class ClassificationRecipe(TrainingRecipe):
    """Whole-image labels from a CSV or a datalist JSON; mean one-vs-rest ROC AUC as the monitor."""

    task = Task.CLASSIFY

    def read_datalist(self, source: Path, *, seed: int, validation_fraction: float) -> Datalist:
        source = Path(source)
        if source.is_dir():
            training, validation = read_image_folder(source)
        elif not source.is_file():
            raise InputError("no such labels file or folder (give a CSV with image,label columns, a datalist JSON "
                             "or a train/<class>/ image folder)", source)
        elif source.suffix.lower() == ".json":
            training, validation = read_json_datalist(source)
        else:
            training, validation = read_csv_datalist(source)
        if not training:
            raise InputError("no training cases", source)
        for case in training + validation:
            self.check_case(case, source)
        held_out = not validation
        groups = None
        content_groups: dict[str, str] | None = None
        if not any(case_group(c) for c in training + validation):  # look for one picture under several names
            found = same_content_groups(training + validation, lambda image: read_case_image(image).array, source)
            content_groups = {json.dumps(c["image"]): g for c, g in zip(training + validation, found, strict=True)
                              if g is not None}  # for cross-validation folds (mitk.training.folds)
            if held_out:
                groups = found[: len(training)]
            else:
                warn_shared_groups([{"group": g} for g in found[: len(training)]],
                                   [{"group": g} for g in found[len(training):]], source)
        elif not held_out:
            warn_shared_groups(training, validation, source)
        if held_out:
            training, validation = stratified_hold_out(training, seed, validation_fraction, source, groups)
        names = sorted_classes({n for case in training + validation for n in case_classes(case)})
        if len(names) < 2:
            raise InputError(f"need at least two classes to train a classifier, found {names}", source)
        return Datalist(source=source, training=training, validation=validation, held_out=held_out,
                        labels=dict(enumerate(names)),
                        extra={"multi_label": any(len(case_classes(c)) != 1 or isinstance(c["label"], list)
                                                  for c in training + validation),
                               **({"content_groups": content_groups} if content_groups is not None else {})})

    def stratum(self, case: dict[str, Any]) -> str:
        """A case's (first) class: folds get each class in proportion."""
        return case_classes(case)[0]

    def check_case(self, case: Mapping[str, Any], source: Path) -> None:
        if not isinstance(case, dict) or "image" not in case or "label" not in case:
            raise InputError(f"every case needs an image and a label, got {case!r}", source)
        images = case["image"] if isinstance(case["image"], list) else [case["image"]]
        for path in images:
            if not Path(path).exists():
                raise InputError(f"listed in {source.name} but missing", path)
        case.setdefault("name", case_name(images[0]))

    def found_config(self, datalist: Datalist) -> dict[str, Any]:
        from mitk.tasks.classify.runner import image_channels, image_dims

        labels = datalist.labels or {}
        names = [labels[i] for i in sorted(labels)]
        first = read_case_image(datalist.training[0]["image"])
        multi_label = bool(datalist.extra.get("multi_label"))
        return {"class_names": names, "in_channels": image_channels(first), "spatial_dims": image_dims(first),
                "multi_label": multi_label, "class_weights": class_weights(datalist.training, names, multi_label)}

    def case_loader(self, plugin: TaskPlugin, config: dict[str, Any]) -> LoadClassCase:
        if not isinstance(plugin, ClassificationPlugin):
            raise PluginError(f"{type(plugin).__name__} is not a classification plugin")
        return LoadClassCase(plugin.class_names(config), int(config.get("spatial_dims") or 2),
                             int(config.get("in_channels") or 1), bool(config.get("multi_label")))

    def training_step(self, plugin: TaskPlugin, config: dict[str, Any]) -> TrainingStep:
        if not isinstance(plugin, ClassificationPlugin):
            raise PluginError(f"{type(plugin).__name__} is not a classification plugin")
        return ClassificationStep(plugin, config)

    def describe(self, datalist: Datalist, config: dict[str, Any]) -> str:
        counts = Counter(n for case in datalist.training for n in case_classes(case))
        classes = ", ".join(f"{name} ({counts[name]})" for name in config.get("class_names") or [])
        kind = "multi-label" if config.get("multi_label") else "single-label"
        return (f"{super().describe(datalist, config)}; {config.get('spatial_dims')}-D, {kind}, "
                f"classes (training cases): {classes}")
