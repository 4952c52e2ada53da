"""``mitk evaluate``: score predicted label maps against references (Dice, IoU, HD95, ASD, surface Dice)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import STATE, JsonOption, OverwriteOption, emit_json, message_text, say, stderr_console
from mitk.errors import UsageError

app = typer.Typer(
    rich_markup_mode=None,
    help="Evaluate predictions against reference label maps.", no_args_is_help=True)

EPILOG = ("Pairing: same file name, or <case>_seg.nii.gz with <case>_label.nii.gz or <case>.nii.gz. "
          "Exit status: 0 all pairs scored; 1 failure; 2 usage error; 3 some pairs failed.")
COLUMNS = ("case", "prediction", "reference", "label", "dice", "iou", "hd95_mm", "asd_mm", "surface_dice",
           "tolerance_mm", "reference_volume_ml", "predicted_volume_ml")


def parse_labels(text: str | None) -> list[int] | None:
    """``"1,2"`` → ``[1, 2]``; ``None`` keeps every label found."""
    if text is None:
        return None
    try:
        labels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--labels expects comma-separated whole numbers, got {text!r}") from None
    if not labels or min(labels) < 1:
        raise UsageError(f"--labels expects positive label values, got {text!r}")
    return labels


@app.command("segment", epilog=EPILOG)
def segment(
    pred: Annotated[Path, typer.Option("--pred", help="Predicted label map, or a folder of them.")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference label map, or a folder of them.")],
    labels: Annotated[str | None, typer.Option("--labels", help="Labels to score, e.g. 1,2 (default: every "
                                               "non-zero label in either map).")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Surface Dice tolerance in mm.")] = 2.0,
    resample_pred: Annotated[bool, typer.Option("--resample-pred", help="Resample predictions onto the "
                                                "reference grid (nearest neighbour) instead of refusing them.")]
    = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write one row per case and label here.")] = None,
    as_json: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Score predicted label maps against references, per case and label, with means per label."""
    from mitk.errors import InputError
    from mitk.evaluation.segmentation import (
        PREDICTION_SUFFIX,
        Pair,
        case_name,
        evaluate_files,
        json_number,
        pair_files,
        summarise,
    )
    from mitk.io.atomic import check_output
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseOutcome, run_batch

    wanted = parse_labels(labels)
    if not 0 <= tolerance < float("inf"):
        raise UsageError(f"--tolerance must be a finite number of mm >= 0, not {tolerance}")
    if csv is not None:
        check_output(csv, overwrite)
    pairing = pair_files(pred, ref)
    for path in pairing.unpaired_references:
        say(f"for reference {path}", label="no prediction", style="yellow")
    targets: dict[Path, Pair | None] = {p.prediction: p for p in pairing.pairs}
    targets.update(dict.fromkeys(pairing.unpaired_predictions))
    if not targets:
        raise UsageError(f"no prediction files in {pred}")

    def process(case: Case) -> CaseOutcome:
        pair = targets[case.path]
        if pair is None:
            raise InputError(f"no reference for this prediction in {ref}", case.path)
        return CaseOutcome(details=evaluate_files(pair, wanted, tolerance, resample_pred))

    console = stderr_console()

    def on_record(record: Any) -> None:
        if record.status == "failed":
            console.print(message_text(record.error or "failed", label="failed", style="red"))

    report = run_batch([Case(path) for path in sorted(targets)], process, debug=STATE.debug,
                       on_record=on_record, log_error=lambda text: console.print(text, markup=False))
    cases = []
    for record in report.records:
        prediction = Path(record.input)
        pair = targets[prediction]
        scores = record.details.get("scores", {})
        identity = {"case": pair.case if pair else case_name(prediction, PREDICTION_SUFFIX),
                    "prediction": record.input, "reference": str(pair.reference) if pair else None}
        rows = [{**identity, "label": label, **{m: json_number(v) for m, v in values.items()},
                 "tolerance_mm": tolerance} for label, values in scores.items()]
        cases.append({**identity, "status": record.status, "error": record.error, "seconds": record.seconds,
                      "resampled": record.details.get("resampled", False),
                      "spacing_mm": record.details.get("spacing"), "labels": rows})
    rows = [row for case in cases for row in case["labels"]]
    summary = summarise(r.details["scores"] for r in report.records if r.status == "ok")
    if csv is not None:
        _write_csv(rows, csv, overwrite)
    document = {
        "tolerance_mm": tolerance,
        "cases": cases,
        "summary": {str(label): metrics for label, metrics in summary.items()},
        "unpaired_references": [str(p) for p in pairing.unpaired_references],
        "counts": report.summary(),
        "exit_code": report.exit_code,
    }
    if as_json:
        emit_json(document)
    else:
        _print_table(rows, summary, tolerance)
        counts = report.summary()
        say(f"evaluate: {counts['ok']} scored, {counts['failed']} failed of {counts['total']}")
    raise typer.Exit(report.exit_code)


def _write_csv(rows: list[dict[str, Any]], path: Path, overwrite: bool) -> None:
    from mitk.io.atomic import atomic_path
    from mitk.runner.outputs import write_csv

    with atomic_path(path, overwrite=overwrite) as temporary:
        write_csv(rows, temporary, list(COLUMNS))


def _print_table(rows: list[dict[str, Any]], summary: dict[int, dict[str, dict[str, Any]]],
                 tolerance: float) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = (("dice", "Dice", 4), ("iou", "IoU", 4), ("hd95_mm", "HD95 mm", 2), ("asd_mm", "ASD mm", 2),
               ("surface_dice", "NSD", 4), ("reference_volume_ml", "Ref mL", 1), ("predicted_volume_ml", "Pred mL", 1))
    table = Table(box=None, pad_edge=False, caption=f"NSD: surface Dice within {tolerance:g} mm; —: one mask empty",
                  caption_justify="left")
    table.add_column("case", overflow="fold")
    table.add_column("label", justify="right")
    for _, header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)

    def cells(values: dict[str, Any]) -> list[str]:
        return ["—" if values[m] is None else f"{values[m]:.{digits}f}" for m, _, digits in columns]

    for row in rows:
        table.add_row(row["case"], str(row["label"]), *cells(row))
    table.add_section()
    for label, stats in summary.items():
        table.add_row("[bold]mean[/]", str(label), *cells({m: stats[m]["mean"] for m, _, _ in columns}))
    Console(highlight=False).print(table)
