"""The classification result: per-class probabilities for one image, and its JSON record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mitk.results import RecordFiles


@dataclass
class ClassificationResult(RecordFiles):
    """Per-class probabilities for one image."""

    class_names: list[str]
    probabilities: list[float]
    uncertainty: dict[str, Any] | None = field(default=None, kw_only=True)
    """With ``uncertainty=True``: ``{"predictive_entropy": float, "mutual_information": float | None,
    "passes": int}`` (nats; mutual information needs two passes or more: an ensemble or ``tta``)."""
    passes: dict[str, int] | None = field(default=None, kw_only=True)
    """With an ensemble or ``tta``: ``{"members", "flips", "total"}``, the network passes averaged."""

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.probabilities):
            raise ValueError("class_names and probabilities differ in length")

    @property
    def predicted_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def predicted(self) -> str:
        return self.class_names[self.predicted_index]

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "predicted": self.predicted,
            # Full precision: ``--csv`` and ``--json`` feed ``mitk evaluate classify``, whose AUC must be training's.
            "probabilities": {n: float(p) for n, p in zip(self.class_names, self.probabilities, strict=True)},
        }
        if self.passes is not None:
            record["passes"] = dict(self.passes)
        if self.uncertainty is not None:
            record["uncertainty"] = dict(self.uncertainty)
        return record

    def record(self) -> dict[str, Any]:
        """``{"predicted": name, "probabilities": {name: p}}``."""
        return self.to_dict()

    def to_numpy(self) -> np.ndarray:
        """The probabilities, one per class, in the order of ``class_names``."""
        return np.asarray(self.probabilities, dtype=np.float64)
