"""Ensembles: several checkpoints of one plugin, averaged in probability space, and the uncertainty of the passes.

A model given as a fold run (``mitk train ... --folds K`` writes ``RUN/folds.json`` and ``RUN/fold_i/``) loads
every fold's ``best.safetensors``; a list of checkpoints (``weights=[a, b]``, on the command line
``--weights a.safetensors,b.safetensors``) loads each. The members must be one plugin with the same inference
settings. Task runners run every member (and every TTA flip, :mod:`mitk.runner.tta`) and average the
probabilities (softmax or sigmoid) with :func:`mean_probabilities`; :func:`entropy` and
:func:`mutual_information` say how unsure the average is and how much the passes disagree (BALD).
This module names no task and imports no torch at module level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import CheckpointError

FOLDS_NAME = "folds.json"
"""The file a cross-validation run folder holds (:mod:`mitk.training.folds`)."""
FOLD_PREFIX = "fold_"
BEST_NAME = "best.safetensors"
EPSILON = 1e-12
"""Probabilities are clipped here before a logarithm (0 log 0 = 0)."""


def is_fold_run(weights: Any) -> bool:
    """True for a cross-validation run folder (one with ``folds.json``)."""
    return weights is not None and not isinstance(weights, (list, tuple)) and \
        (Path(weights) / FOLDS_NAME).is_file()


def fold_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Every fold's best checkpoint, in fold order; refuses a run whose folds are not all trained."""
    run_dir = Path(run_dir)
    try:
        document = json.loads((run_dir / FOLDS_NAME).read_text(encoding="utf-8"))
        count = int(document["folds"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"not a readable fold run ({error})", run_dir / FOLDS_NAME) from None
    paths = [run_dir / f"{FOLD_PREFIX}{index}" / BEST_NAME for index in range(count)]
    missing = [path.parent.name for path in paths if not path.is_file()]
    if missing:
        raise CheckpointError(f"fold run of {count} folds has no best checkpoint for {', '.join(missing)} "
                              "(train them with `mitk train ... --fold I`)", run_dir)
    return paths


def member_weights(weights: Any) -> list[Path]:
    """The checkpoints a ``weights`` value names: a fold run's folds, a run folder's ``best.safetensors``, a
    list's items, a comma-separated list (when the text is not itself an existing path), else the one path (or
    none)."""
    if weights is None or weights == "":
        return []
    if isinstance(weights, (list, tuple)):
        found = [path for item in weights for path in member_weights(item)]
        if not found:
            raise CheckpointError("an empty list of weights")
        return found
    if is_fold_run(weights):
        return fold_checkpoints(weights)
    if (Path(weights) / BEST_NAME).is_file():  # a run folder of `mitk train`: its best checkpoint
        return [Path(weights) / BEST_NAME]
    text = os.fspath(weights)
    if "," in text and not Path(text).exists():
        return [Path(part.strip()) for part in text.split(",") if part.strip()]
    return [Path(text)]


TRAINING_ONLY = ("training", "optimizer", "schedule", "augmentation", "class_weights", "samples_per_case",
                 "positive", "negative", "metrics", "loss", "init", "plan", "box_statistics")
"""Settings that only training reads: they may differ between members (a fold's class weights, the sizes of its
training boxes); every other setting (labels, spacing, intensity, patch …) must agree, since one preprocessing
serves every member."""
PER_MEMBER = ("anchors",)
"""Settings of a member's own network that each member keeps: a detector's anchor shapes, found from its fold's
training boxes. Only a runner that fuses the members' outputs on the input grid (detection: boxes) meets them;
it runs each member with its own settings (:attr:`mitk.runner.model.LoadedModel.member_configs`)."""


def inference_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that must agree between members (:data:`TRAINING_ONLY` and :data:`PER_MEMBER` left out)."""
    return {key: value for key, value in config.items() if key not in TRAINING_ONLY + PER_MEMBER}


def check_members_agree(configs: Sequence[dict[str, Any]], names: Sequence[str], paths: Sequence[Path]) -> None:
    """Refuse members of different plugins, or whose inference settings differ (labels, spacing, patch …)."""
    for name, config, path in zip(names[1:], configs[1:], paths[1:], strict=True):
        if name != names[0]:
            raise CheckpointError(f"ensemble members differ in plugin ({names[0]!r} and {name!r})", path)
        first, this = inference_settings(configs[0]), inference_settings(config)
        if first != this:
            keys = sorted(k for k in set(first) | set(this) if first.get(k) != this.get(k))
            raise CheckpointError(f"ensemble member's settings differ from {paths[0].name}'s "
                                  f"({', '.join(keys)}): members must share their inference settings", path)


def entropy(probabilities: np.ndarray, axis: int = 0, binary: bool = False) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (``-Σ p log p``, with 0 · log 0 = 0); ``binary``: each value is its
    own Bernoulli (independent sigmoid outputs), their entropies summed."""
    p = np.asarray(probabilities, dtype=np.float64)
    values = np.concatenate([p, 1.0 - p], axis=axis) if binary else p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(values > 0, values * np.log(np.where(values > 0, values, 1.0)), 0.0)
    return np.asarray(-terms.sum(axis=axis))


def mutual_information(passes: np.ndarray, binary: bool = False) -> float:
    """BALD for one case: ``H[mean p] − mean H[p]`` over the passes (rows of ``passes``, one per pass)."""
    passes = np.asarray(passes, dtype=np.float64)
    mean = passes.mean(axis=0)
    value = float(entropy(mean, axis=-1, binary=binary) - entropy(passes, axis=-1, binary=binary).mean())
    return max(value, 0.0)  # ≥ 0 by Jensen; a rounding error must not say otherwise


class RunningMean:
    """The mean of the passes' probability tensors, one tensor kept (in place, float32)."""

    def __init__(self) -> None:
        self.total: Any = None
        self.count = 0

    def add(self, probabilities: Any) -> None:
        if self.total is None:
            self.total = probabilities.float().clone()
        else:
            self.total += probabilities.float()
        self.count += 1

    def mean(self) -> Any:
        if self.total is None:
            raise ValueError("no passes")
        return self.total / self.count if self.count > 1 else self.total
