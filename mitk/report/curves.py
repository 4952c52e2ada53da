"""Plots of ``mitk evaluate`` results, drawn as inline SVG from the numbers in its JSON and CSV outputs: FROC
(sensitivity against false positives per scan), ROC (``fpr``/``tpr`` lists), reliability diagrams (``confidence``
with ``accuracy`` per bin) and per-case Dice. What is found is drawn, wherever it sits in a document: the report
needs no knowledge of which command wrote it, and a new evaluation output with these shapes is drawn too."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mitk.report.page import esc

WIDTH, HEIGHT, MARGIN = 360, 260, 44
Series = tuple[str, list[float], list[float]]


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return numbers if all(math.isfinite(v) for v in numbers) else None


def _bins(value: Any) -> tuple[list[float], list[float]] | None:
    """A reliability diagram's points: ``{"confidence": [...], "accuracy": [...]}`` or a list of bins, each
    ``{"confidence": c, "accuracy": a, ...}`` (empty bins, with a null value, left out)."""
    if isinstance(value, dict):
        confidence, accuracy = value.get("confidence"), value.get("accuracy")
        if isinstance(confidence, list) and isinstance(accuracy, list) and len(confidence) == len(accuracy):
            pairs = [(c, a) for c, a in zip(confidence, accuracy, strict=True) if c is not None and a is not None]
            xs, ys = _numbers([c for c, _ in pairs]), _numbers([a for _, a in pairs])
            return (xs, ys) if xs and ys else None
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        pairs = [(v.get("confidence"), v.get("accuracy")) for v in value]
        pairs = [(c, a) for c, a in pairs if c is not None and a is not None]
        xs, ys = _numbers([c for c, _ in pairs]), _numbers([a for _, a in pairs])
        return (xs, ys) if xs and ys else None
    return None


def curves_in(document: Any) -> list[tuple[str, str]]:
    """``(title, svg)`` for every FROC, ROC and reliability curve in a JSON ``document``."""
    roc: list[Series] = []
    reliability: list[Series] = []
    froc: list[Series] = []

    def walk(value: Any, where: str, depth: int) -> None:
        if depth > 6:
            return
        if isinstance(value, dict):
            sensitivity = value.get("sensitivity")
            if "froc" in where.rsplit("/", 1)[-1].lower() and isinstance(sensitivity, dict):
                pairs = sorted((float(k), float(v)) for k, v in sensitivity.items()
                               if _numbers([k]) and _numbers([v]))
                if pairs:
                    froc.append((where, [p[0] for p in pairs], [p[1] for p in pairs]))
            fpr, tpr = _numbers(value.get("fpr")), _numbers(value.get("tpr"))
            if fpr and tpr and len(fpr) == len(tpr):
                roc.append((where, fpr, tpr))
        if "reliab" in where.rsplit("/", 1)[-1].lower() or "calibration" in where.rsplit("/", 1)[-1].lower():
            points = _bins(value)
            if points:
                reliability.append((where, *points))
                return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}/{key}" if where else str(key), depth + 1)
        elif isinstance(value, list) and len(value) <= 1000:
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    walk(item, f"{where}/{index}", depth + 1)

    walk(document, "", 0)
    found = []
    if froc:
        found.append(("FROC", svg_plot(froc, "false positives per scan", "sensitivity", log_x=True)))
    if roc:
        found.append(("ROC", svg_plot(roc, "1 − specificity", "sensitivity", diagonal=True)))
    if reliability:
        found.append(("Reliability diagram", svg_plot(reliability, "confidence", "accuracy", diagonal=True,
                                                      markers=True)))
    return found


def dice_plot(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str | None:
    """Per-case Dice of a CSV (a column named ``dice``): one dot per row, sorted, with the mean."""
    columns = [i for i, name in enumerate(headers) if str(name).strip().lower() == "dice"]
    if not columns:
        return None
    values = sorted(v for row in rows if len(row) > columns[0] and (v := _value(row[columns[0]])) is not None)
    if not values:
        return None
    mean = sum(values) / len(values)
    return svg_plot([(f"Dice (mean {mean:.3f})", [float(i + 1) for i in range(len(values))], values)],
                    "case (sorted by Dice)", "Dice", markers=True, y_range=(0.0, 1.0))


def _value(cell: Any) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def svg_plot(series: Sequence[Series], x_label: str, y_label: str, *, log_x: bool = False, diagonal: bool = False,
             markers: bool = False, y_range: tuple[float, float] = (0.0, 1.0)) -> str:
    """A line plot (dots with ``markers``) as an inline SVG element; y runs over ``y_range``."""
    xs = [math.log2(x) if log_x else x for _, values, _ in series for x in values if x > 0 or not log_x]
    low, high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if diagonal or (not log_x and not markers):
        low, high = min(low, 0.0), max(high, 1.0)
    if high == low:
        high = low + 1.0
    y_low, y_high = y_range
    width, height = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def point(x: float, y: float) -> str:
        u = (math.log2(x) if log_x else x) - low
        return (f"{MARGIN + width * u / (high - low):.1f},"
                f"{MARGIN + height * (1 - (min(max(y, y_low), y_high) - y_low) / (y_high - y_low)):.1f}")

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{esc(y_label)} against {esc(x_label)}" class="plot">',
             f'<rect x="{MARGIN}" y="{MARGIN}" width="{width}" height="{height}" fill="none" stroke="#999"/>']
    if diagonal:
        (x1, y1), (x2, y2) = (point(v, v).split(",") for v in (0.0, 1.0))
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#bbb" stroke-dasharray="4 3"/>')
    for index, (name, values, ys) in enumerate(series[:len(COLOURS)]):
        colour = COLOURS[index]
        points = [point(x, y) for x, y in zip(values, ys, strict=True) if x > 0 or not log_x]
        if markers:
            parts += [f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2.5" fill="{colour}"/>'
                      for p in points]
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{" ".join(points)}"/>')
        parts.append(f'<text x="{MARGIN + 6}" y="{MARGIN + 14 + 13 * index}" font-size="11" fill="{colour}">'
                     f'{esc(name[-40:])}</text>')
    for value, anchor in ((low, "start"), (high, "end")):
        label = f"{2 ** value:g}" if log_x else f"{value:g}"
        x = MARGIN if anchor == "start" else MARGIN + width
        parts.append(f'<text x="{x}" y="{MARGIN + height + 14}" font-size="10" text-anchor="{anchor}">'
                     f'{esc(label)}</text>')
    parts += [f'<text x="{MARGIN - 4}" y="{MARGIN + height}" font-size="10" text-anchor="end">{y_low:g}</text>',
              f'<text x="{MARGIN - 4}" y="{MARGIN + 8}" font-size="10" text-anchor="end">{y_high:g}</text>',
              f'<text x="{MARGIN + width / 2}" y="{HEIGHT - 8}" font-size="11" text-anchor="middle">'
              f'{esc(x_label)}{" (log scale)" if log_x else ""}</text>',
              f'<text x="12" y="{MARGIN + height / 2}" font-size="11" text-anchor="middle" '
              f'transform="rotate(-90 12 {MARGIN + height / 2})">{esc(y_label)}</text>', "</svg>"]
    return "".join(parts)
