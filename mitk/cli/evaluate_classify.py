"""``mitk evaluate classify``: score ``mitk classify`` predictions against reference labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import STATE, JsonOption, OverwriteOption, emit_json, say

EPILOG = ("Pairing: the same image path (relative paths are read from each CSV's folder), else the same file "
          "name without its image suffix. Undefined values (a class absent from the reference) are printed as — "
          "and written as null/empty. Exit status: 0 scored; 1 failure; 2 usage error.")


def classify(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions: `mitk classify --csv` output (input, "
                                       "predicted, prob_<class> columns) or its --json output.")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference labels: a CSV with image and label columns "
                                      "(the training CSV format).")],
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write one row per class (and an (all) row) "
                                             "here.")] = None,
    confusion_png: Annotated[Path | None, typer.Option("--confusion-png", help="Also draw the confusion matrix "
                                                       "as a PNG here.")] = None,
    bins: Annotated[int, typer.Option("--bins", help="Equal-width confidence bins for the expected calibration "
                                      "error.")] = 15,
    multi_label: Annotated[bool | None, typer.Option("--multi-label/--single-label", help="Score class sets "
                                                     "(a;b) one class at a time; default: multi-label when any "
                                                     "label names several classes.")] = None,
    as_json: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Accuracy, balanced accuracy, per-class sensitivity, specificity, PPV and one-vs-rest ROC AUC, the
    confusion matrix and the expected calibration error; multi-label predictions (a;b) one class at a time,
    with exact match and Hamming accuracy."""
    from mitk.cli.evaluate import refuse_overwriting_inputs
    from mitk.errors import UsageError
    from mitk.evaluation.classification import (
        CSV_COLUMNS,
        confusion_picture,
        evaluate_files,
        json_ready,
        per_class_rows,
    )
    from mitk.io.atomic import atomic_path, check_output

    if bins < 1:
        raise UsageError("--bins must be at least 1")
    outputs = [(path, option) for path, option in ((csv, "--csv"), (confusion_png, "--confusion-png")) if path]
    for path, option in outputs:
        refuse_overwriting_inputs(path, option, [pred, ref])
    if csv is not None and confusion_png is not None:
        refuse_overwriting_inputs(confusion_png, "--confusion-png", [csv])
    for path, _ in outputs:
        check_output(path, overwrite)
    metrics, pairing = evaluate_files(pred, ref, bins=bins, multi_label=multi_label)
    if confusion_png is not None and "confusion" not in metrics:
        raise UsageError("--confusion-png: multi-label predictions have no confusion matrix")
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
    document = {**json_ready(metrics), "paired": len(pairing.predictions),
                "unpaired_predictions": pairing.unpaired_predictions,
                "unpaired_references": pairing.unpaired_references}
    if as_json:
        emit_json(document)
    elif not STATE.quiet:
        _print(metrics)


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
