"""Training a learned registration plugin: the registration recipe and its :class:`TrainingStep`.

The datalist is a JSON file of fixed/moving pairs, optionally with label maps for a Dice term::

    {"training": [{"fixed": "a.nii.gz", "moving": "b.nii.gz", "fixed_label": "a_seg.nii.gz",
                   "moving_label": "b_seg.nii.gz"}, ...],
     "validation": [...], "labels": {"0": "background", "1": "grey matter"}}

Paths are relative to the JSON file. Each case's moving image (and label) is first sampled onto the fixed
grid in world coordinates, so the plugin's transforms put both on one network grid, as at inference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mitk.enums import Task
from mitk.errors import InputError, PluginError
from mitk.image import Image
from mitk.plugin import TaskPlugin
from mitk.tasks.register.plugin import RegistrationPlugin
from mitk.training.data import Datalist, hold_out, tensor_of
from mitk.training.distributed import sum_validation
from mitk.training.recipe import TrainingRecipe, TrainingStep

IMAGE_KEYS = ("fixed", "moving")
LABEL_KEYS = ("fixed_label", "moving_label")


def read_pairs(source: Path, *, seed: int, validation_fraction: float) -> Datalist:
    """Read a registration datalist JSON; hold out a seeded validation share when it has no validation list."""
    if not source.is_file():
        raise InputError("a registration datalist is a JSON file of fixed/moving pairs", source)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"not a readable datalist JSON ({error})", source) from None
    if not isinstance(document, dict) or not isinstance(document.get("training"), list):
        raise InputError('datalist JSON needs a "training" list of {"fixed": ..., "moving": ...}', source)
    lists: dict[str, list[dict[str, Any]]] = {}
    for key in ("training", "validation"):
        cases = []
        for number, case in enumerate(document.get(key) or []):
            if not isinstance(case, dict) or not all(isinstance(case.get(k), str) for k in IMAGE_KEYS):
                raise InputError(f"{key} case {number} needs \"fixed\" and \"moving\" paths", source)
            resolved = {k: str((source.parent / v).resolve()) if k in (*IMAGE_KEYS, *LABEL_KEYS) else v
                        for k, v in case.items()}
            resolved.setdefault("name", f"{key}{number:04d}")
            cases.append(resolved)
        lists[key] = cases
    every = lists["training"] + lists["validation"]
    with_labels = {all(k in case for k in LABEL_KEYS) for case in every}
    if len(with_labels) > 1 or any((LABEL_KEYS[0] in c) != (LABEL_KEYS[1] in c) for c in every):
        raise InputError("give fixed_label and moving_label for every pair or for none", source)
    for case in every:
        check_pair(case, source)
    labels = None
    if document.get("labels"):
        try:
            labels = {int(k): str(v) for k, v in dict(document["labels"]).items()}
        except (TypeError, ValueError):
            raise InputError('"labels" must map label values to names', source) from None
    datalist = Datalist(source=source, training=lists["training"], validation=lists["validation"], labels=labels)
    if not datalist.validation:
        datalist.training, datalist.validation = hold_out(datalist.training, seed, validation_fraction, source)
        datalist.held_out = True
    return datalist


def check_pair(case: Mapping[str, Any], source: Path) -> None:
    for key in (*IMAGE_KEYS, *LABEL_KEYS):
        if key in case and not Path(case[key]).exists():
            raise InputError(f"listed in {source.name} but missing", Path(case[key]))


class LoadPair:
    """Read one pair: the fixed image, and the moving image (and labels) sampled onto the fixed grid."""

    def __call__(self, case: dict[str, Any]) -> dict[str, Any]:
        from mitk.io.reader import load_image, require_volume
        from mitk.runner.resample import resample_through
        from mitk.runner.tensors import to_meta_tensor

        fixed = require_volume(load_image(case["fixed"]))
        moving = require_volume(load_image(case["moving"]))
        identity: Callable[[np.ndarray], np.ndarray] = lambda points: points  # noqa: E731
        on_fixed = Image(array=resample_through(moving, fixed, identity), affine=fixed.affine)
        sample = {"fixed": to_meta_tensor(Image(np.asarray(fixed.array, np.float32), fixed.affine)),
                  "moving": to_meta_tensor(on_fixed), "name": case.get("name", "case")}
        if "fixed_label" in case:
            fixed_label = require_volume(load_image(case["fixed_label"]))
            moving_label = require_volume(load_image(case["moving_label"]))
            if fixed_label.spatial_shape != fixed.spatial_shape:
                raise InputError("the fixed label map is not on the fixed image's grid", fixed_label.path)
            moved_label = resample_through(moving_label, fixed, identity, mode="nearest")
            sample["fixed_label"] = to_meta_tensor(Image(np.asarray(fixed_label.array, np.float32), fixed.affine))
            sample["moving_label"] = to_meta_tensor(Image(moved_label.astype(np.float32), fixed.affine))
        return sample


class RegistrationStep:
    """Similarity of the warped moving image to the fixed one, a smoothness penalty on the field, and (with
    label maps) a Dice term on the warped moving labels. Validation reports the same terms; the monitor is
    the validation loss (lower is better)."""

    monitor = "loss"
    mode: Literal["max", "min"] = "min"
    shards_validation = True
    """Under torchrun each rank validates its share of the pairs; the sums are added over the ranks."""

    def __init__(self, plugin: RegistrationPlugin, config: dict[str, Any]) -> None:
        from monai.losses import BendingEnergyLoss, DiceLoss, LocalNormalizedCrossCorrelationLoss
        from monai.networks.blocks import Warp

        self.plugin = plugin
        self.config = config
        loss = config["loss"]
        self.similarity: torch.nn.Module = (
            LocalNormalizedCrossCorrelationLoss(kernel_size=int(loss["lncc_kernel"]))
            if loss["similarity"] == "lncc" else torch.nn.MSELoss())
        self.regulariser = BendingEnergyLoss()
        self.dice = DiceLoss(include_background=False)
        self.warp = Warp(mode="bilinear", padding_mode="zeros")
        self.weights = float(loss["regularisation"]), float(loss["dice"])
        self.num_labels = max(2, len(config.get("labels") or {}))

    def terms(self, network: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        fixed = tensor_of(batch["fixed"]).to(device).float()
        moving = tensor_of(batch["moving"]).to(device).float()
        ddf = self.plugin.predict_displacement(network, fixed, moving, self.config)
        warped = self.warp(moving, ddf)
        terms = {"similarity": self.similarity(warped, fixed), "regulariser": self.regulariser(ddf)}
        if "fixed_label" in batch and self.weights[1] > 0:
            from monai.networks.utils import one_hot

            fixed_label = one_hot(tensor_of(batch["fixed_label"]).to(device).round().long(), self.num_labels)
            moving_label = one_hot(tensor_of(batch["moving_label"]).to(device).round().long(), self.num_labels)
            terms["dice"] = self.dice(self.warp(moving_label.float(), ddf), fixed_label.float())
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        value = terms["similarity"] + self.weights[0] * terms["regulariser"]
        if "dice" in terms:
            value = value + self.weights[1] * terms["dice"]
        return value

    def loss(self, network: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        return self.total(self.terms(network, batch, device))

    @torch.no_grad()
    def validate(self, network: torch.nn.Module, loader: Any, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
        network.eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            with autocast():
                terms = self.terms(network, batch, device)
            terms["loss"] = self.total(terms)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            count += 1
        network.train()
        sums, count = sum_validation(sums, count)
        summary = {key: value / max(1, count) for key, value in sums.items()}
        if "dice" in summary:
            summary["mean_dice"] = 1.0 - summary.pop("dice")  # the engine logs these as val_<name>
        return {k: (v if math.isfinite(v) else math.nan) for k, v in summary.items()}


class RegistrationRecipe(TrainingRecipe):
    """Fixed/moving pairs (optionally with label maps) in a JSON datalist; the validation loss as the monitor."""

    task = Task.REGISTER

    def read_datalist(self, source: Path, *, seed: int, validation_fraction: float) -> Datalist:
        return read_pairs(source, seed=seed, validation_fraction=validation_fraction)

    def check_case(self, case: Mapping[str, Any], source: Path) -> None:
        check_pair(case, source)

    def found_config(self, datalist: Datalist) -> dict[str, Any]:
        if datalist.labels:
            return {"labels": {str(k): v for k, v in datalist.labels.items()}}
        first = datalist.training[0]
        if "fixed_label" not in first:
            return {}
        from mitk.io.reader import load_image

        top = max(int(np.max(load_image(first[key]).array)) for key in LABEL_KEYS)
        return {"labels": {str(value): ("background" if value == 0 else f"label{value}")
                           for value in range(top + 1)}}

    def case_loader(self, plugin: TaskPlugin, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return LoadPair()

    def training_step(self, plugin: TaskPlugin, config: dict[str, Any]) -> TrainingStep:
        if not isinstance(plugin, RegistrationPlugin):
            raise PluginError(f"{type(plugin).__name__} is not a registration plugin")
        return RegistrationStep(plugin, config)

    def describe(self, datalist: Datalist, config: dict[str, Any]) -> str:
        labels = "with label maps (Dice term)" if config.get("labels") else "images only"
        return f"{super().describe(datalist, config)}; pairs {labels}"
