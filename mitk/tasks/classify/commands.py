"""The classify task's command bodies: what ``mitk classify`` runs (:func:`prepare`: a results table and
``--csv``) and ``mitk evaluate classify`` (:func:`evaluate`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mitk.console import STATE, emit_json, say
from mitk.errors import UsageError
from mitk.evaluation.outputs import write_table
from mitk.taskspec import VerbPlan

PROBABILITY_PREFIX = "prob_"
UNCERTAINTY_COLUMNS = ("predictive_entropy", "mutual_information")
"""``--uncertainty``: the record's values that are also ``--csv`` columns (after the probabilities)."""


def prepare(values: dict[str, Any]) -> VerbPlan:
    """``mitk classify``: with ``--csv``, the rows of every classified input are written after the batch (and a
    table printed for people)."""
    from mitk.io.atomic import check_output, model_files
    from mitk.io.inputs import expand_inputs
    from mitk.taskspecs import derived_suffixes

    threshold, csv, overwrite = values["threshold"], values["csv"], values["overwrite"]
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise UsageError("--threshold must lie between 0 and 1")
    if csv is not None:
        if values["shard"] is not None:  # each shard would write (or replace) the one file with its own rows only
            raise UsageError("--csv writes one file for the whole batch and cannot be split over --shard; "
                             "use --manifest per shard (each record holds the probabilities) and "
                             "mitk manifest merge")
        cases = expand_inputs(values["inputs"], derived_suffixes())
        check_output(csv, overwrite, inputs=(*(case.path for case in cases), *model_files(values["weights"])))
    rows: list[dict[str, Any]] = []

    def collect(record: Any) -> None:  # from the records, wherever the executor ran the cases
        if record.status == "ok":
            uncertainty = record.details.get("uncertainty") or {}
            rows.append({"input": record.input, "predicted": record.details["predicted"],
                         **{PROBABILITY_PREFIX + name: p for name, p in record.details["probabilities"].items()},
                         **{name: uncertainty[name] for name in UNCERTAINTY_COLUMNS if name in uncertainty}})

    def finish() -> None:
        if csv is not None and rows:
            _write_csv(rows, csv, overwrite)
        if rows and not values["as_json"] and not STATE.quiet:
            _print_rows(rows)

    if values["dicom_sr"]:
        from mitk.extras import require_module

        if values["output"] is None and values["output_dir"] is None:
            raise UsageError("--dicom-sr writes beside the JSON record: add -o or --output-dir")
        require_module("highdicom", "--dicom-sr")
    return VerbPlan(values["inputs"], {name: values[name] for name in ("multi_label", "threshold", "explain",
                                                                      "dicom_sr", "tta", "uncertainty")},
                    on_record=collect, finish=finish)


def evaluate(pred: Path, ref: Path, csv: Path | None = None, confusion_png: Path | None = None,
             bins: int = 15, multi_label: bool | None = None, as_json: bool = False, overwrite: bool = False,
             reliability_png: Path | None = None) -> int:
    """Accuracy, balanced accuracy, per-class sensitivity, specificity, PPV and one-vs-rest ROC AUC, the
    confusion matrix and the expected calibration error; multi-label predictions (a;b) one class at a time,
    with exact match and Hamming accuracy."""
    from mitk.evaluation.outputs import refuse_overwriting_inputs
    from mitk.io.atomic import atomic_path, check_output
    from mitk.tasks.classify.evaluation import (
        CSV_COLUMNS,
        confusion_picture,
        evaluate_files,
        json_ready,
        per_class_rows,
    )

    if bins < 1:
        raise UsageError("--bins must be at least 1")
    outputs = [(path, option) for path, option in ((csv, "--csv"), (confusion_png, "--confusion-png"),
                                                   (reliability_png, "--reliability-png")) if path]
    for path, option in outputs:
        refuse_overwriting_inputs(path, option, [pred, ref])
    for number, (path, option) in enumerate(outputs):
        refuse_overwriting_inputs(path, option, [earlier for earlier, _ in outputs[:number]])
    if reliability_png is not None:
        from mitk.extras import require_module

        require_module("matplotlib", "--reliability-png")
    for path, _ in outputs:
        check_output(path, overwrite)
    metrics, pairing = evaluate_files(pred, ref, bins=bins, multi_label=multi_label)
    if confusion_png is not None and "confusion" not in metrics:
        raise UsageError("--confusion-png: multi-label predictions have no confusion matrix")
    if reliability_png is not None and "calibration" not in metrics:
        raise UsageError("--reliability-png: multi-label predictions have no top-class calibration")
    for paths, what in ((pairing.unpaired_predictions, "prediction(s) without a reference"),
                        (pairing.unpaired_references, "reference(s) without a prediction (not scored)")):
        if paths:
            more = f", … ({len(paths) - 3} more)" if len(paths) > 3 else ""
            say(f"[yellow]{len(paths)} {what}[/]: {', '.join(paths[:3])}{more}")
    if csv is not None:
        from mitk.runner.outputs import write_csv

        with atomic_path(csv, overwrite=overwrite) as temporary:
            write_csv(per_class_rows(metrics), temporary, CSV_COLUMNS)
    if confusion_png is not None:
        with atomic_path(confusion_png, overwrite=overwrite) as temporary:
            confusion_picture(metrics["confusion"], metrics["classes"]).save(temporary, format="PNG")
    if reliability_png is not None:
        _draw_reliability(metrics, reliability_png, overwrite)
    document = {**json_ready(metrics), "paired": len(pairing.predictions),
                "unpaired_predictions": pairing.unpaired_predictions,
                "unpaired_references": pairing.unpaired_references}
    if as_json:
        emit_json(document)
    elif not STATE.quiet:
        _print(metrics)
    return 0


def _print(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def number(value: float) -> str:
        return "—" if value != value else f"{value:.4f}"

    console = Console(highlight=False)
    table = Table(box=None, pad_edge=False)
    for column in ("class", "support", "sensitivity", "specificity", "PPV", "AUC"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, values in metrics["per_class"].items():
        table.add_row(name, str(values["support"]), number(values["sensitivity"]), number(values["specificity"]),
                      number(values["ppv"]), number(values["auc"]))
    console.print(table)
    if metrics.get("multi_label"):
        console.print(f"cases {metrics['cases']} (multi-label): exact match {number(metrics['exact_match'])}, "
                      f"Hamming accuracy {number(metrics['hamming_accuracy'])}, balanced accuracy "
                      f"{number(metrics['balanced_accuracy'])}, macro AUC {number(metrics['macro_auc'])}")
        return
    console.print("confusion matrix (rows: reference, columns: predicted)")
    confusion = Table(box=None, pad_edge=False)
    confusion.add_column("")
    for name in metrics["classes"]:
        confusion.add_column(name, justify="right")
    for name, row in zip(metrics["classes"], metrics["confusion"], strict=True):
        confusion.add_row(name, *map(str, row))
    console.print(confusion)
    console.print(f"cases {metrics['cases']}: accuracy {number(metrics['accuracy'])}, balanced accuracy "
                  f"{number(metrics['balanced_accuracy'])}, macro AUC {number(metrics['macro_auc'])}, "
                  f"ECE {number(metrics['ece'])} ({metrics['ece_bins']} bins)")
    calibration = metrics.get("calibration") or {}
    auc, mce = (calibration.get(key) for key in ("uncertainty_auc", "mce"))
    console.print(f"uncertainty ({calibration.get('uncertainty')}) vs error: AUC "
                  f"{number(math.nan if auc is None else auc)} over {calibration.get('errors', 0)} wrong case(s); "
                  f"MCE {number(math.nan if mce is None else mce)}")


def _draw_reliability(metrics: dict[str, Any], path: Path, overwrite: bool) -> None:
    """The reliability diagram of the scored cases, from the bins in ``metrics["calibration"]``."""
    import numpy as np

    from mitk.evaluation.calibration import Reliability, write_reliability_png

    rows = metrics["calibration"]["reliability"]
    edges = np.asarray([rows[0]["lower"], *(row["upper"] for row in rows)])

    def column(name: str) -> np.ndarray:
        return np.asarray([np.nan if row[name] is None else row[name] for row in rows], dtype=np.float64)

    table = Reliability(edges, column("confidence"), column("accuracy"),
                        np.asarray([row["count"] for row in rows], dtype=np.int64))
    write_reliability_png(table, path, overwrite, title=f"Reliability diagram ({metrics['cases']} cases)")


def _relative(path: Path, csv: Path) -> str:
    """The input as the CSV names it: relative to the CSV's folder (so the CSV can move with the images),
    absolute when it lies on another drive."""
    import os

    try:
        return os.path.relpath(path.resolve(), csv.resolve().parent)
    except ValueError:
        return str(path.resolve())


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    names = list(dict.fromkeys(key for row in rows for key in row if key.startswith(PROBABILITY_PREFIX)))
    return ["input", "predicted", *names, *(name for name in UNCERTAINTY_COLUMNS if any(name in r for r in rows))]


def _write_csv(rows: list[dict[str, Any]], path: Path, overwrite: bool) -> None:
    write_table([{**row, "input": _relative(Path(row["input"]), path)} for row in rows], path, overwrite,
                _columns(rows))


def _print_rows(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from mitk.console import PathCell

    columns = [column for column in _columns(rows) if column not in UNCERTAINTY_COLUMNS]
    table = Table(box=None, pad_edge=False)
    table.add_column("input")  # a long path loses its middle, never its file name
    table.add_column("predicted")
    for column in columns[2:]:
        table.add_column(column[len(PROBABILITY_PREFIX):], justify="right")
    for row in rows:
        probabilities = (f"{row[c]:.4f}" if c in row else "" for c in columns[2:])
        table.add_row(PathCell(row["input"]), Text(row["predicted"]), *probabilities)
    Console(highlight=False).print(table)
