"""Calibration and uncertainty evaluation, for any task that gives a confidence per decision (NumPy only).

Definitions (``N`` decisions, each with a confidence ``c`` in [0, 1] and a right/wrong outcome):

- **Top-label** confidence of a multi-class prediction: the largest class probability; the decision is right when
  that class (the arg-max) is the reference class. This is what torchmetrics'
  ``MulticlassCalibrationError(norm="l1")`` bins.
- **Bins**: ``bins`` equal-width bins of [0, 1]; a confidence ``c`` falls in bin ``ceil(c · bins)`` (1-based),
  i.e. bins are closed on the right, (b/B, (b+1)/B], with 0 in the first bin. These are scikit-learn's
  ``calibration_curve(strategy="uniform")`` bins; torchmetrics closes them on the left instead, which differs
  only for confidences exactly on a bin edge.
- **Reliability diagram** data per bin: the mean confidence, the accuracy (share of right decisions) and the count.
- ``ece`` (expected calibration error, Guo et al. 2017) = Σ_b (n_b / N) · |accuracy_b − confidence_b|.
- ``mce`` (maximum calibration error) = max_b |accuracy_b − confidence_b| over non-empty bins.
- ``uncertainty_auc``: the ROC AUC of an uncertainty score for telling wrong decisions (positives) from right ones,
  ties counted one half (scikit-learn's ``roc_auc_score``): 1.0 when every wrong case is more uncertain than every
  right one, 0.5 for an uninformative score; undefined (NaN) when all decisions are right or all wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BINS = 15
ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Reliability:
    """Per-bin reliability-diagram data; empty bins have count 0 and NaN confidence and accuracy."""

    edges: np.ndarray
    """``bins + 1`` bin edges from 0 to 1."""
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean gap between accuracy and confidence."""
        filled = self.count > 0
        if not filled.any():
            return math.nan
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] / self.total * gaps))

    def mce(self) -> float:
        """Maximum calibration error over the non-empty bins."""
        filled = self.count > 0
        return float(np.max(np.abs(self.accuracy[filled] - self.confidence[filled]))) if filled.any() else math.nan

    def rows(self) -> list[dict[str, Any]]:
        """One row per bin (``lower``, ``upper``, ``count``, ``confidence``, ``accuracy``; ``None`` when empty)."""
        return [{"lower": float(self.edges[b]), "upper": float(self.edges[b + 1]), "count": int(self.count[b]),
                 "confidence": _finite_or_none(self.confidence[b]), "accuracy": _finite_or_none(self.accuracy[b])}
                for b in range(len(self.count))]


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _check(confidence: ArrayLike, correct: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hits = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != hits.shape:
        raise ValueError(f"{conf.size} confidences but {hits.size} outcomes")
    if conf.size and not (np.all(np.isfinite(conf)) and conf.min() >= 0.0 and conf.max() <= 1.0):
        raise ValueError("confidences must be finite and lie in [0, 1]")
    return conf, hits


def bin_index(confidence: ArrayLike, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The 0-based bin of each confidence: ``ceil(c · bins) − 1``, with 0 in the first bin."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    conf = np.asarray(confidence, dtype=np.float64)
    return np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(confidence: ArrayLike, correct: Sequence[bool] | np.ndarray, bins: int = DEFAULT_BINS
                ) -> Reliability:
    """Bin the decisions by confidence: the reliability-diagram data of the module docstring."""
    conf, hits = _check(confidence, correct)
    index = bin_index(conf, bins)
    count = np.bincount(index, minlength=bins).astype(np.int64)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    hit_sum = np.bincount(index, weights=hits.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        accuracy = np.where(count > 0, hit_sum / np.maximum(count, 1), np.nan)
    return Reliability(np.linspace(0.0, 1.0, bins + 1), mean_conf, accuracy, count)


def expected_calibration_error(confidence: ArrayLike, correct: Sequence[bool] | np.ndarray,
                               bins: int = DEFAULT_BINS) -> float:
    """ECE of the module docstring; NaN for no decisions."""
    return reliability(confidence, correct, bins).ece()


def top_label(probabilities: np.ndarray, reference: Sequence[int] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and correctness of ``(N, K)`` class probabilities against reference class indices."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError("probabilities must be an (N, K) array")
    truth = np.asarray(reference, dtype=np.int64).ravel()
    guess = probs.argmax(axis=1)
    return probs[np.arange(len(probs)), guess], guess == truth


def mann_whitney_auc(scores: ArrayLike, positive: Sequence[bool] | np.ndarray) -> float:
    """ROC AUC of ``scores`` for the ``positive`` cases: Mann–Whitney U / (n⁺ n⁻), tied scores counted one half
    (as scikit-learn's ``roc_auc_score``); NaN without positives or negatives, or with a non-finite score."""
    from scipy.stats import rankdata

    values = np.asarray(scores, dtype=np.float64).ravel()
    mask = np.asarray(positive, dtype=bool).ravel()
    if values.shape != mask.shape:
        raise ValueError(f"{values.size} scores but {mask.size} outcomes")
    n_pos, n_neg = int(mask.sum()), int((~mask).sum())
    if n_pos == 0 or n_neg == 0 or not np.all(np.isfinite(values)):
        return math.nan
    ranks = rankdata(values)
    return float((ranks[mask].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def uncertainty_auc(uncertainty: ArrayLike, error: Sequence[bool] | np.ndarray) -> float:
    """Does uncertainty rank the wrong decisions (``error`` True) first: :func:`mann_whitney_auc`."""
    return mann_whitney_auc(uncertainty, error)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN for fewer than 3 pairs or a constant side."""
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"{a.size} values against {b.size}")
    if a.size < 3 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    from scipy.stats import rankdata

    ra, rb = rankdata(a) - (a.size + 1) / 2.0, rankdata(b) - (b.size + 1) / 2.0
    norm = math.sqrt(float(np.sum(ra * ra) * np.sum(rb * rb)))
    return float(np.sum(ra * rb) / norm) if norm > 0 else math.nan


def calibration_summary(confidence: ArrayLike, correct: Sequence[bool] | np.ndarray,
                        uncertainty: ArrayLike | None = None, bins: int = DEFAULT_BINS,
                        uncertainty_source: str | None = None) -> dict[str, Any]:
    """ECE, MCE, the reliability rows and (with ``uncertainty``, default ``1 − confidence``) the AUC of
    uncertainty vs error, as one JSON-ready dictionary."""
    table = reliability(confidence, correct, bins)
    conf, hits = _check(confidence, correct)
    scores = 1.0 - conf if uncertainty is None else np.asarray(uncertainty, dtype=np.float64).ravel()
    return {"ece": _finite_or_none(table.ece()), "mce": _finite_or_none(table.mce()), "bins": bins,
            "decisions": int(conf.size), "reliability": table.rows(),
            "uncertainty_auc": _finite_or_none(uncertainty_auc(scores, ~hits)),
            "uncertainty": uncertainty_source or ("1 - confidence" if uncertainty is None else "given"),
            "errors": int((~hits).sum())}


def reliability_figure(table: Reliability, title: str = "Reliability diagram") -> Any:
    """A matplotlib figure (Agg): accuracy per bin as bars over the diagonal of perfect calibration, the gap to
    each bin's mean confidence shaded, and the count per bin below."""
    from matplotlib.figure import Figure  # no pyplot: the figure draws with Agg and touches no GUI

    figure = Figure(figsize=(5.0, 6.0), dpi=100)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = np.diff(table.edges)
    left = table.edges[:-1]
    filled = table.count > 0
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(left[filled], table.accuracy[filled], width=width[filled], align="edge", color="#4c72b0",
            edgecolor="black", label="accuracy")
    gap_low = np.minimum(table.accuracy, table.confidence)[filled]
    gap = np.abs(table.accuracy - table.confidence)[filled]
    top.bar(left[filled], gap, bottom=gap_low, width=width[filled], align="edge", color="#dd8452", alpha=0.5,
            edgecolor="#dd8452", label="gap to confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    ece = table.ece()
    top.set_title(f"{title}\nECE {ece:.4f} over {table.total} decisions" if math.isfinite(ece) else title)
    top.legend(loc="upper left")
    bottom.bar(left, table.count, width=width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    figure.tight_layout()
    return figure


def write_reliability_png(table: Reliability, path: Path, overwrite: bool = False,
                          title: str = "Reliability diagram") -> Path:
    """Draw :func:`reliability_figure` to a PNG file atomically (needs matplotlib, the ``preview`` extra)."""
    from mitk.extras import require_module
    from mitk.io.atomic import atomic_path

    require_module("matplotlib", "a reliability diagram")
    figure = reliability_figure(table, title)
    with atomic_path(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png")
    return Path(path)
