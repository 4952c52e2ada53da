"""Cross-validated metrics of a folds run (``mitk train … --folds K``), for ``mitk evaluate crossval RUN_DIR``.

A folds run folder holds ``folds.json`` (``{"folds": [{"fold": 0, "train": [...], "val": [...]}, ...], "seed": int,
"group_key": str | null}``, or ``{"folds": K, "cases": [[fold 0's validation cases], ...], ...}``) and one
ordinary run folder per fold, ``fold_<k>/``. Each fold's score is its validation metrics at its best epoch: the
metrics its ``best.safetensors`` was saved with (read from the file's JSON header, no tensors loaded),
else the best validated row of its ``log.json`` (or ``log.csv``) by the monitor.

Summary per metric over the folds that have it: ``mean``, ``sd`` (sample standard deviation, n − 1; NaN for one
fold), ``min``, ``max``, ``folds`` and ``case_weighted_mean`` (each fold weighted by its validation cases, the mean
over the pooled validation cases when the metric is a per-case mean). A fold without results is reported as
missing and left out; validation sets that overlap are refused (a case scored twice is not cross-validation).
"""

from __future__ import annotations

import csv
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError, UsageError

FOLDS_NAME = "folds.json"
FOLD_PREFIX = "fold_"
BEST_NAME = "best.safetensors"
"""The run folder's file names (:mod:`mitk.training.folder`, a higher layer; a test keeps them equal)."""
LOG_JSON = "log.json"
LOG_CSV = "log.csv"
VALIDATION_PREFIX = "val_"
MONITORS = (("mean_dice", "max"), ("mean_auc", "max"), ("map", "max"), ("loss", "min"))
"""The task recipes' monitors (segment, classify, detect, register), tried in order when none is given."""
HEADER_LIMIT = 100_000_000


@dataclass
class FoldScore:
    fold: int
    folder: Path
    validation_cases: int
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None
    source: str | None = None
    """``best.safetensors``, ``log.json`` or ``log.csv``; ``None`` when the fold has no results."""
    problem: str | None = None


def read_folds(run_dir: Path) -> list[dict[str, Any]]:
    """The fold list of ``RUN_DIR/folds.json``, checked: fold numbers unique, validation sets disjoint."""
    path = run_dir / FOLDS_NAME
    if not run_dir.is_dir():
        raise InputError("not a folder", run_dir)
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a folds run: no {FOLDS_NAME} (train with --folds K)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        folds = _fold_list(document)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError("not a folds file ({\"folds\": [{\"fold\", \"train\", \"val\"}, ...]} or "
                         "{\"folds\": K, \"cases\": [[fold 0's cases], ...]})", path) from None
    if not folds:
        raise InputError("lists no folds", path)
    numbers = [f["fold"] for f in folds]
    if len(set(numbers)) != len(numbers):
        raise InputError(f"fold numbers repeat: {sorted(numbers)}", path)
    seen: dict[str, int] = {}
    for fold in folds:
        for case in fold["val"]:
            if case in seen:
                raise InputError(f"folds {seen[case]} and {fold['fold']} validate the same case; the validation "
                                 "sets of a cross-validation must not overlap", path)
            seen[case] = fold["fold"]
    return sorted(folds, key=lambda f: f["fold"])


def _fold_list(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Either form of ``folds.json``: a list of ``{"fold", "train", "val"}``, or ``"folds": K`` with ``"cases"``,
    the validation cases of each fold in fold order (each fold trains on the others')."""
    if isinstance(document["folds"], list):
        return [{"fold": int(f["fold"]), "train": list(f.get("train") or []),
                 "val": [str(case) for case in f["val"]]} for f in document["folds"]]
    count, cases = int(document["folds"]), [[str(case) for case in fold] for fold in document["cases"]]
    if len(cases) != count:
        raise ValueError("cases per fold do not match the number of folds")
    return [{"fold": k, "train": [c for j, fold in enumerate(cases) if j != k for c in fold], "val": cases[k]}
            for k in range(count)]


def checkpoint_metrics(path: Path) -> dict[str, Any] | None:
    """The ``metrics`` a mitk safetensors checkpoint was saved with, from its JSON header (no tensors read)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if not 0 < length < min(HEADER_LIMIT, path.stat().st_size):
                return None
            header = json.loads(handle.read(length).decode("utf-8"))
        metrics = json.loads(header.get("__metadata__", {}).get("metrics", "{}"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        return None
    return metrics if isinstance(metrics, dict) and metrics else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def log_rows(folder: Path) -> tuple[list[dict[str, Any]], str] | None:
    """The epoch rows of a run's ``log.json`` (else ``log.csv``) and which file they came from."""
    if (folder / LOG_JSON).is_file():
        try:
            rows = json.loads((folder / LOG_JSON).read_text(encoding="utf-8")).get("epochs", [])
            return [dict(r) for r in rows], LOG_JSON
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise InputError("unreadable training log", folder / LOG_JSON) from None
    if (folder / LOG_CSV).is_file():
        try:
            with (folder / LOG_CSV).open(newline="", encoding="utf-8") as handle:
                return [dict(r) for r in csv.DictReader(handle)], LOG_CSV
        except (OSError, UnicodeDecodeError, csv.Error):
            raise InputError("unreadable training log", folder / LOG_CSV) from None
    return None


def best_row(rows: list[dict[str, Any]], monitor: str | None) -> tuple[dict[str, Any], str] | None:
    """The validated row with the best monitor value (first of equals), and the monitor used."""
    candidates = [(monitor, "min" if "loss" in monitor else "max")] if monitor else list(MONITORS)
    for name, mode in candidates:
        key = VALIDATION_PREFIX + name
        scored = [(r, _number(r.get(key))) for r in rows]
        scored = [(r, v) for r, v in scored if math.isfinite(v)]
        if scored:
            pick = (max if mode == "max" else min)(scored, key=lambda item: item[1])
            return pick[0], name
    return None


def score_fold(run_dir: Path, fold: dict[str, Any], monitor: str | None = None) -> FoldScore:
    """One fold's validation metrics at its best epoch (module docstring)."""
    folder = run_dir / f"{FOLD_PREFIX}{fold['fold']}"
    score = FoldScore(fold["fold"], folder, len(fold["val"]))
    if not folder.is_dir():
        score.problem = "no run folder"
        return score
    metrics = checkpoint_metrics(folder / BEST_NAME) if monitor is None and (folder / BEST_NAME).is_file() else None
    if metrics is not None:
        score.epoch = int(metrics.pop("epoch")) if "epoch" in metrics else None
        score.source = BEST_NAME
    else:
        found = log_rows(folder)
        picked = best_row(found[0], monitor) if found else None
        if found is None or picked is None:
            score.problem = "no validated epoch" if found else "no best checkpoint or training log"
            return score
        row, _ = picked
        score.epoch = int(_number(row.get("epoch"))) if math.isfinite(_number(row.get("epoch"))) else None
        metrics = {k[len(VALIDATION_PREFIX):]: v for k, v in row.items() if k.startswith(VALIDATION_PREFIX)}
        score.source = found[1]
    score.metrics = {k: _number(v) for k, v in metrics.items() if not isinstance(v, (dict, list))}
    return score


def summarise(scores: list[FoldScore]) -> dict[str, dict[str, float]]:
    """Mean, sd, min, max, folds and case-weighted mean of each metric over the folds that have it."""
    names = list(dict.fromkeys(name for s in scores for name in s.metrics))
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        pairs = [(s.metrics[name], s.validation_cases) for s in scores
                 if name in s.metrics and math.isfinite(s.metrics[name])]
        if not pairs:
            continue
        values = np.asarray([v for v, _ in pairs])
        weights = np.asarray([w for _, w in pairs], dtype=np.float64)
        summary[name] = {"mean": float(values.mean()),
                         "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                         "min": float(values.min()), "max": float(values.max()), "folds": len(values),
                         "case_weighted_mean": float(np.average(values, weights=weights)) if weights.sum() > 0
                         else math.nan}
    return summary


def crossval(run_dir: Path, monitor: str | None = None) -> dict[str, Any]:
    """Every fold's score and the summary, as one JSON-ready document; refuses a run with no scored fold."""
    folds = read_folds(run_dir)
    scores = [score_fold(run_dir, fold, monitor) for fold in folds]
    if not any(s.source for s in scores):
        raise UsageError(f"no fold of {run_dir} has validation results yet (best.safetensors or log.json)")
    return {"run": str(run_dir), "folds": [_fold_document(s) for s in scores],
            "missing_folds": [s.fold for s in scores if s.source is None],
            "validation_cases": sum(s.validation_cases for s in scores if s.source),
            "summary": {name: {k: _finite(v) for k, v in stats.items()} for name, stats in summarise(scores).items()}}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _fold_document(score: FoldScore) -> dict[str, Any]:
    return {"fold": score.fold, "folder": str(score.folder), "validation_cases": score.validation_cases,
            "epoch": score.epoch, "source": score.source, "problem": score.problem,
            "metrics": {k: _finite(v) for k, v in score.metrics.items()}}


def summary_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows: one per fold and metric, then ``mean``/``sd`` rows per metric (``fold`` column ``mean``, ``sd``)."""
    rows: list[dict[str, Any]] = []
    for fold in document["folds"]:
        rows += [{"fold": fold["fold"], "metric": name, "value": value, "epoch": fold["epoch"],
                  "validation_cases": fold["validation_cases"]} for name, value in fold["metrics"].items()]
    for name, stats in document["summary"].items():
        rows += [{"fold": key, "metric": name, "value": stats[key], "epoch": None,
                  "validation_cases": document["validation_cases"]} for key in ("mean", "sd", "case_weighted_mean")]
    return rows


CSV_COLUMNS = ["fold", "metric", "value", "epoch", "validation_cases"]


def evaluate_crossval(run_dir: Path, monitor: str | None = None, csv_path: Path | None = None,
                      as_json: bool = False, overwrite: bool = False,
                      out_of_fold: Callable[[], dict[str, Any]] | None = None) -> int:
    """``mitk evaluate crossval RUN_DIR``: print (or ``--json``) every fold's best validation metrics and their
    mean ± sd; ``--csv`` writes the rows of :func:`summary_rows`. ``out_of_fold`` (``--predict``): computes the
    pooled out-of-fold scores (:mod:`mitk.training.out_of_fold`), added as ``out_of_fold`` (CSV rows
    ``fold`` = ``pooled``)."""
    from mitk.console import STATE, emit_json, say
    from mitk.evaluation.outputs import refuse_overwriting_inputs, write_table
    from mitk.io.atomic import check_output

    if csv_path is not None:
        refuse_overwriting_inputs(csv_path, "--csv", [run_dir / FOLDS_NAME])
        check_output(csv_path, overwrite)
    document = crossval(run_dir, monitor)
    if out_of_fold is not None:
        document["out_of_fold"] = out_of_fold()
    for fold in document["folds"]:
        if fold["source"] is None:
            say(f"fold {fold['fold']}: {fold['problem']} (left out of the summary)", label="missing", style="yellow")
    if csv_path is not None:
        rows = summary_rows(document)
        pooled = document.get("out_of_fold")
        if pooled:
            rows += [{"fold": "pooled", "metric": name, "value": value, "epoch": None,
                      "validation_cases": pooled["cases"]}
                     for name, value in pooled["scores"].items() if isinstance(value, (int, float)) or value is None]
        write_table(rows, csv_path, overwrite, CSV_COLUMNS)
    if as_json:
        emit_json(document)
    elif not STATE.quiet:
        _print(document)
    return 0


def _print(document: dict[str, Any]) -> None:
    """One row per metric: each scored fold's value (best epoch in the header), then mean and sd."""
    from rich.console import Console
    from rich.table import Table

    def text(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    scored = [fold for fold in document["folds"] if fold["source"] is not None]
    table = Table(box=None, pad_edge=False)
    table.add_column("metric")
    for fold in scored:
        table.add_column(f"fold {fold['fold']} (ep {fold['epoch'] if fold['epoch'] is not None else '—'})",
                         justify="right")
    table.add_column("mean", justify="right")
    table.add_column("sd", justify="right")
    for name, stats in document["summary"].items():
        table.add_row(name, *(text(fold["metrics"].get(name)) for fold in scored), text(stats["mean"]),
                      text(stats["sd"]))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"{len(scored)} fold(s), {document['validation_cases']} validation cases"
                  + (f"; missing folds {document['missing_folds']}" if document["missing_folds"] else ""))
    pooled = document.get("out_of_fold")
    if pooled:
        numbers = {k: v for k, v in pooled["scores"].items() if isinstance(v, (int, float)) or v is None}
        console.print(f"out of fold ({pooled['cases']} cases, each predicted by the fold that did not train on it"
                      + (", with TTA" if pooled["tta"] else "") + "): "
                      + ", ".join(f"{k} {text(v) if isinstance(v, float) or v is None else v}"
                                  for k, v in numbers.items()))
