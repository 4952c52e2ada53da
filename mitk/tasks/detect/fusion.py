"""Weighted boxes fusion (WBF) of several detectors' boxes, 2-D or 3-D (Solovyev, Wang and Gabruseva, "Weighted
boxes fusion: ensembling boxes from different object detection models", Image Vis. Comput. 2021), with the spread
of the members' scores per fused box as the detection's uncertainty.

The algorithm, as the authors' reference implementation (PyPI ``ensemble-boxes``, ``weighted_boxes_fusion`` and
``weighted_boxes_fusion_3d``) runs it, one label at a time:

1. Every member box with score ≥ ``skip_score`` enters with score × its member's weight; they are visited from the
   highest score down.
2. A box joins the cluster whose *fused* box overlaps it most, when that IoU is above ``iou_threshold``; else it
   starts a new cluster.
3. A cluster's fused box is the score-weighted mean of its boxes' corners; its score is the mean of their scores
   scaled by min(T, n) / Σw (n boxes in the cluster, T members, weights w), so a box that only some members found
   loses confidence (the reference's ``conf_type="avg"``, the paper's rule; its other confidence types differ
   between its 2-D and 3-D functions and are not offered).

Boxes are ``(x0, y0, x1, y1)`` or ``(x0, y0, z0, x1, y1, z1)`` (mitk's ``(i0, j0, k0, i1, j1, k1)``) in any one unit:
IoU does not depend on it, so unlike the reference no normalisation to [0, 1] is needed (nor clipping to it).

Uncertainty per fused box: ``score_std``, the standard deviation over the T members of each member's best score in
the cluster (0 for a member that did not find the box), and ``members``, how many members found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FusedBoxes:
    """Fused boxes, highest score first."""

    boxes: np.ndarray
    """``(N, 2·d)`` corners, lower then upper."""
    scores: np.ndarray
    labels: np.ndarray
    score_std: np.ndarray
    """Spread of the members' scores per box (absent members count 0)."""
    members: np.ndarray
    """How many members have a box in each fused box's cluster."""
    member_scores: np.ndarray
    """``(N, T)``: each member's best score in the cluster (0 where it found nothing)."""

    def __len__(self) -> int:
        return len(self.scores)


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of one box with each of ``boxes``, any dimension (corners lower then upper)."""
    half = box.shape[-1] // 2
    lower = np.maximum(boxes[:, :half], box[:half])
    upper = np.minimum(boxes[:, half:], box[half:])
    inter = np.prod(np.clip(upper - lower, 0, None), axis=1)
    volumes = np.prod(boxes[:, half:] - boxes[:, :half], axis=1)
    volume = np.prod(box[half:] - box[:half])
    union = volumes + volume - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _check_member(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, member: int) -> None:
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"member {member}: boxes must be an (N, 4) or (N, 6) array, got shape {boxes.shape}")
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"member {member}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    if len(boxes) and not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise ValueError(f"member {member}: boxes and scores must be finite")


def weighted_boxes_fusion(boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                          weights: Sequence[float] | None = None, iou_threshold: float = 0.55,
                          skip_score: float = 0.0) -> FusedBoxes:
    """Fuse the boxes of ``T`` members (lists of per-member arrays) as the module docstring says."""
    members = len(boxes)
    if members == 0 or not (len(scores) == len(labels) == members):
        raise ValueError("give one boxes, scores and labels array per member (at least one member)")
    weight = np.ones(members) if weights is None else np.asarray(weights, dtype=np.float64)
    if weight.shape != (members,) or np.any(weight <= 0):
        raise ValueError(f"give one positive weight per member ({members})")
    arrays = [(np.asarray(b, dtype=np.float64), np.asarray(s, dtype=np.float64).ravel(),
               np.asarray(lab).ravel().astype(np.int64)) for b, s, lab in zip(boxes, scores, labels, strict=True)]
    width = next((b.shape[1] for b, _, _ in arrays if b.ndim == 2 and len(b)), 6)
    entries: list[tuple[int, float, float, int, np.ndarray]] = []  # label, weighted score, raw score, member, box
    for member, (b, s, lab) in enumerate(arrays):
        b = b.reshape(-1, width) if b.size == 0 else b
        _check_member(b, s, lab, member)
        if b.shape[1] != width:
            raise ValueError(f"member {member}: boxes of {b.shape[1] // 2} dimensions among boxes of {width // 2}")
        lower, upper = np.minimum(b[:, : width // 2], b[:, width // 2:]), np.maximum(b[:, : width // 2],
                                                                                     b[:, width // 2:])
        for j in range(len(b)):
            if s[j] < skip_score or np.prod(upper[j] - lower[j]) == 0:
                continue
            entries.append((int(lab[j]), float(s[j] * weight[member]), float(s[j]), member,
                            np.concatenate([lower[j], upper[j]])))
    fused: list[tuple[np.ndarray, float, int, np.ndarray, int]] = []
    for label in sorted({e[0] for e in entries}):
        ordered = sorted((e for e in entries if e[0] == label), key=lambda e: -e[1])
        clusters: list[list[tuple[int, float, float, int, np.ndarray]]] = []
        centres = np.empty((0, width))
        for entry in ordered:
            best = -1
            if len(centres):
                overlap = box_iou(centres, entry[4])
                candidate = int(np.argmax(overlap))
                best = candidate if overlap[candidate] > iou_threshold else -1
            if best < 0:
                clusters.append([entry])
                centres = np.vstack([centres, entry[4]])
            else:
                clusters[best].append(entry)
                weights_in = np.asarray([e[1] for e in clusters[best]])
                corners = np.asarray([e[4] for e in clusters[best]])
                centres[best] = (weights_in[:, None] * corners).sum(axis=0) / weights_in.sum()
        for cluster, centre in zip(clusters, centres, strict=True):
            weighted = np.asarray([e[1] for e in cluster])
            score = float(weighted.mean() * min(members, len(cluster)) / weight.sum())
            best_of = np.zeros(members)
            for _, _, raw, member, _ in cluster:
                best_of[member] = max(best_of[member], raw)
            fused.append((centre, score, label, best_of, len({e[3] for e in cluster})))
    order = sorted(range(len(fused)), key=lambda i: -fused[i][1])
    member_scores = np.asarray([fused[i][3] for i in order]).reshape(-1, members)
    return FusedBoxes(boxes=np.asarray([fused[i][0] for i in order]).reshape(-1, width),
                      scores=np.asarray([fused[i][1] for i in order], dtype=np.float64),
                      labels=np.asarray([fused[i][2] for i in order], dtype=np.int64),
                      score_std=member_scores.std(axis=1),
                      members=np.asarray([fused[i][4] for i in order], dtype=np.int64),
                      member_scores=member_scores)
