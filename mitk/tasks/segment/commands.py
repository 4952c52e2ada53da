"""The segment task's command bodies: what ``mitk segment`` runs (:func:`prepare`) and ``mitk evaluate segment``
(:func:`evaluate`: Dice, IoU, HD95, ASD and surface Dice per case and label, with means per label)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from mitk.console import STATE, emit_json, message_text, say, stderr_console
from mitk.errors import UsageError
from mitk.evaluation.outputs import input_files, refuse_overwriting_inputs, write_table
from mitk.taskspec import VerbPlan


def prepare(values: dict[str, Any]) -> VerbPlan:
    """``mitk segment``: the output format and the extras it needs are checked before the model loads."""
    output_format = values["output_format"]
    if output_format not in ("auto", "nifti", "dicom-seg", "dicom-seg-sr"):
        raise UsageError(f"--format must be auto, nifti, dicom-seg or dicom-seg-sr, not {output_format!r}")
    output = values.get("output")
    if output is not None:
        from mitk.io.atomic import model_files, refuse_inputs

        refuse_inputs(output, model_files(values.get("weights")))  # the model is an input: said before the format
    if output is not None and not output_format.startswith("dicom"):
        from mitk.io.writer import check_target, output_kind

        if output_kind(check_target(output, "label map")) != "nifti" and output_format == "nifti":
            raise UsageError("--format nifti writes .nii.gz or .nii; drop --format to write what -o names", output)
    from mitk.extras import require_segment_extras

    require_segment_extras(preview=values["preview"], dicom_seg=output_format.startswith("dicom"))
    if values["rtstruct"]:
        from mitk.extras import require_module

        require_module("rt_utils", "--rtstruct")
    rows: list[dict[str, Any]] = []

    def collect(record: Any) -> None:  # from the records, wherever the executor ran the cases
        if record.status == "ok" and not record.details.get("skipped"):
            rows.extend({"case": Path(record.input).name, **row} for row in record.details.get("labels", ()))

    def finish() -> None:
        if rows and not values["as_json"] and not STATE.quiet:
            print_label_table(rows)

    return VerbPlan(values["inputs"], {name: values[name] for name in
                                       ("probabilities", "stats", "preview", "output_format", "deidentify",
                                        "rtstruct", "tta", "uncertainty")},
                    on_record=collect, finish=finish)


TABLE_ROWS = 20
"""At most this many label rows are printed after a batch (every row is in the --json document and --stats)."""


def print_label_table(rows: list[dict[str, Any]]) -> None:
    """Per case and label: voxels and mL, or for a one-slice image pixels and mm² with the pixel spacing's
    source (``unknown (1 mm assumed)`` for a picture or a radiograph without one), on stderr."""
    from rich.table import Table

    from mitk.console import PathCell

    table = Table(box=None, pad_edge=False)
    for header in ("case", "label", "name", "count", "size", "spacing"):
        table.add_column(header, justify="right" if header in ("label", "count", "size") else "left")
    for row in rows[:TABLE_ROWS]:
        if "area_mm2" in row:
            count, size = f"{row['pixels']} px", f"{row['area_mm2']:.1f} mm²"
            source = str(row["spacing_source"])
            spacing = (f"{row['pixel_spacing_mm']} mm assumed (none in the file)" if source.startswith("unknown")
                       else f"{row['pixel_spacing_mm']} mm ({source})")
        else:
            count, size, spacing = f"{row['voxels']} vox", f"{row['volume_ml']:.3f} mL", ""
        table.add_row(PathCell(row["case"]), str(row["label"]), row["name"], count, size, spacing)
    console = stderr_console()
    console.print(table)
    if len(rows) > TABLE_ROWS:
        console.print(f"… and {len(rows) - TABLE_ROWS} more label rows (all of them in --json and --stats)")


COLUMNS = ("case", "prediction", "reference", "label", "empty", "dice", "iou", "hd95_mm", "asd_mm",
           "surface_dice_voxel", "tolerance_mm", "missing_distance", "reference_volume_ml", "predicted_volume_ml",
           "reference_area_mm2", "predicted_area_mm2")
SUMMARY_COLUMNS = ("label", "metric", "mean", "std", "median", "n", "cases", "empty_prediction",
                   "empty_reference", "both_empty", "missing", "penalised", "tolerance_mm", "missing_distance")


def parse_label_values(text: str | None) -> list[int] | None:
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


def parse_missing_distance(text: str) -> float | Literal["worst"] | None:
    """``"nan"`` → ``None`` (missing, not averaged), ``"worst"`` → ``"worst"``, ``"50"`` → 50.0 mm."""
    word = text.strip().lower()
    if word == "nan":
        return None
    if word == "worst":
        return "worst"
    try:
        value = float(word)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"--missing-distance expects nan, worst or a number of mm >= 0, got {text!r}")
    return value


def evaluate(pred: Path, ref: Path, labels: str | None = None, tolerance: float = 2.0,
             missing_distance: str = "nan", resample_pred: bool = False, csv: Path | None = None,
             summary_csv: Path | None = None, as_json: bool = False, overwrite: bool = False) -> int:
    """Score predicted label maps against references, per case and label, with means per label."""
    from mitk.errors import InputError
    from mitk.io.atomic import check_output
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseOutcome, run_batch
    from mitk.tasks.segment.evaluation import (
        METRICS,
        PREDICTION_SUFFIX,
        Pair,
        case_of,
        empty_masks,
        evaluate_files,
        json_number,
        pair_files,
        summarise,
    )

    wanted = parse_label_values(labels)
    if not 0 <= tolerance < float("inf"):
        raise UsageError(f"--tolerance must be a finite number of mm >= 0, not {tolerance}")
    penalty = parse_missing_distance(missing_distance)
    penalty_text = "nan" if penalty is None else f"{penalty:g}" if isinstance(penalty, float) else penalty
    pairing = pair_files(pred, ref)
    inputs = input_files([*(p for pair in pairing.pairs for p in (pair.prediction, pair.reference)),
                          *pairing.unpaired_predictions, *pairing.unpaired_references])
    outputs = [(path, option) for path, option in ((csv, "--csv"), (summary_csv, "--summary-csv")) if path]
    for path, option in outputs:
        refuse_overwriting_inputs(path, option, inputs)
    if csv is not None and summary_csv is not None:
        refuse_overwriting_inputs(summary_csv, "--summary-csv", [csv])
    for path, _ in outputs:
        check_output(path, overwrite)
    for path in pairing.unpaired_references:
        say(f"for reference {path}", label="no prediction", style="yellow")
    targets: dict[Path, Pair | None] = {p.prediction: p for p in pairing.pairs}
    targets.update(dict.fromkeys(pairing.unpaired_predictions))
    if not targets:
        raise UsageError(f"no prediction files in {pred}")

    from mitk.tasks.segment.calibration import probability_map_for

    def process(case: Case) -> CaseOutcome:
        pair = targets[case.path]
        if pair is None:
            raise InputError(f"no reference for this prediction in {ref}", case.path)
        probabilities = probability_map_for(case.path) if case.path.is_file() else None
        return CaseOutcome(details=evaluate_files(pair, wanted, tolerance, resample_pred, penalty,
                                                  probabilities=probabilities))

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
        identity = {"case": pair.case if pair else case_of(prediction, PREDICTION_SUFFIX),
                    "prediction": record.input, "reference": str(pair.reference) if pair else None}
        rows = [{**identity, "label": label, "empty": empty_masks(values),
                 **{m: json_number(values[m]) for m in METRICS}, "tolerance_mm": tolerance,
                 "missing_distance": penalty_text} for label, values in scores.items()]
        cases.append({**identity, "status": record.status, "error": record.error, "seconds": record.seconds,
                      "resampled": record.details.get("resampled", False),
                      "spacing_mm": record.details.get("spacing"),
                      "spacing_source": record.details.get("spacing_source"),
                      "field_of_view_diagonal_mm": json_number(record.details.get("field_of_view_diagonal_mm")),
                      "labels": rows})
    rows = [row for case in cases for row in case["labels"]]
    summary = summarise(r.details["scores"] for r in report.records if r.status == "ok")
    if csv is not None:
        write_table(rows, csv, overwrite, COLUMNS)
    if summary_csv is not None:
        write_table(summary_rows(summary, tolerance, penalty_text), summary_csv, overwrite, SUMMARY_COLUMNS)
    document = {
        "tolerance_mm": tolerance,
        "missing_distance": penalty_text,
        "conventions": CONVENTIONS,
        "cases": cases,
        "summary": {str(label): metrics for label, metrics in summary.items()},
        "unpaired_references": [str(p) for p in pairing.unpaired_references],
        "counts": report.summary(),
        "exit_code": report.exit_code,
    }
    calibrated = [r for r in report.records if r.status == "ok" and "calibration" in r.details]
    pooled: dict[str, Any] | None = None
    if calibrated:
        from mitk.tasks.segment.calibration import case_dice, pool

        pooled = document["calibration"] = pool([(r.details["calibration"], case_dice(r.details["scores"]))
                                                 for r in calibrated])
        entropy_of = {r.input: r.details["calibration"]["mean_entropy"] for r in calibrated}
        for case in cases:
            if case["prediction"] in entropy_of:
                case["mean_entropy"] = json_number(entropy_of[case["prediction"]])
    for record, case in zip(report.records, cases, strict=True):
        if "calibration_skipped" in record.details:
            case["calibration_skipped"] = record.details["calibration_skipped"]
            say(f"{record.details['calibration_skipped']} (left out of the calibration)", label="probabilities",
                style="yellow")
    if as_json:
        emit_json(document)
    else:
        _print_table(rows, summary, tolerance, penalty_text)
        for case in cases:
            if str(case.get("spacing_source") or "").startswith("unknown"):
                say(f"{case['reference']}: no pixel spacing in the file; 1 mm assumed for areas and distances",
                    label="note", style="yellow")
        counts = report.summary()
        if pooled is not None:
            _print_calibration(pooled)
        say(f"evaluate: {counts['ok']} scored, {counts['failed']} failed of {counts['total']}")
    return report.exit_code


def _print_calibration(summary: dict[str, Any]) -> None:
    """One line per voxel sample and one for the case ranking (cases with probability maps)."""
    from rich.console import Console

    def text(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    console = Console(highlight=False)
    for name, words in (("voxels", "all voxels"), ("foreground", "foreground voxels")):
        part = summary[name]
        console.print(f"calibration ({words}, {part['decisions']} sampled of {summary['cases']} case(s)): ECE "
                      f"{text(part['ece'])}, entropy vs error AUC {text(part['uncertainty_auc'])}")
    ranking = summary["mean_entropy_vs_1_minus_dice"]
    console.print(f"mean entropy vs 1 - Dice over {ranking['cases']} case(s): Spearman {text(ranking['spearman'])}")


CONVENTIONS = {
    "both_empty": "every metric null; left out of every mean (counted in summary cases.both_empty)",
    "one_empty": "dice, iou, surface_dice_voxel 0 (in the means); hd95_mm, asd_mm per missing_distance: nan = "
                 "null and left out of the mean (counted as missing), else the penalty in mm (counted as "
                 "penalised)",
    "surface_dice_voxel": "MONAI compute_surface_dice: fraction of boundary voxels of both masks within "
                          "tolerance_mm of the other boundary (voxel-counted, not area-weighted)",
}
"""How empty masks and the surface Dice are defined; printed in the JSON document so that it says so."""


def summary_rows(summary: dict[int, dict[str, dict[str, Any]]], tolerance: float,
                 missing_distance: str) -> list[dict[str, Any]]:
    """The per-label summary as rows: one per label and metric, with the case counts repeated on each."""
    rows = []
    for label, stats in summary.items():
        counts = stats["cases"]
        for metric, values in stats.items():
            if metric == "cases":
                continue
            rows.append({"label": label, "metric": metric, **values, "cases": counts["scored"],
                         "empty_prediction": counts["empty_prediction"], "empty_reference": counts["empty_reference"],
                         "both_empty": counts["both_empty"], "tolerance_mm": tolerance,
                         "missing_distance": missing_distance})
    return rows


def summary_notes(summary: dict[int, dict[str, dict[str, Any]]], missing_distance: str) -> list[str]:
    """One line per label saying how many cases each mean rests on and what was left out or penalised."""
    notes = []
    for label, stats in summary.items():
        counts = stats["cases"]
        line = (f"label {label}: {counts['scored']} cases, {counts['empty_prediction']} empty prediction, "
                f"{counts['empty_reference']} empty reference, {counts['both_empty']} both empty (not in any "
                f"mean); Dice/IoU/NSD mean of {stats['dice']['n']}; HD95/ASD mean of {stats['hd95_mm']['n']}")
        missing, penalised = stats["hd95_mm"]["missing"], stats["hd95_mm"]["penalised"]
        if missing:
            line += (f", {missing} with one mask empty left out (NaN; --missing-distance worst|MM "
                     "penalises them)")
        if penalised:
            what = "the field-of-view diagonal" if missing_distance == "worst" else f"{missing_distance} mm"
            line += f", {penalised} with one mask empty counted as {what}"
        notes.append(line)
    return notes


def _print_table(rows: list[dict[str, Any]], summary: dict[int, dict[str, dict[str, Any]]],
                 tolerance: float, missing_distance: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from mitk.console import PathCell

    columns: tuple[tuple[str, str, int], ...] = (
               ("dice", "Dice", 4), ("iou", "IoU", 4), ("hd95_mm", "HD95 mm", 2), ("asd_mm", "ASD mm", 2),
               ("surface_dice_voxel", "NSD voxel", 4), ("reference_volume_ml", "Ref mL", 1),
               ("predicted_volume_ml", "Pred mL", 1), ("reference_area_mm2", "Ref mm²", 1),
               ("predicted_area_mm2", "Pred mm²", 1))
    # volumes for 3-D cases, areas for one-slice ones (PNG masks): a column only where some case has it
    columns = tuple(c for c in columns if not c[0].endswith(("_ml", "_mm2")) or any(r[c[0]] is not None for r in rows))
    table = Table(box=None, pad_edge=False)
    table.add_column("case")  # a long case name loses its middle, never its end (PathCell)
    table.add_column("label", justify="right")
    table.add_column("empty")
    for _, header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)

    def cells(values: dict[str, Any]) -> list[str]:
        return ["—" if values[m] is None else f"{values[m]:.{digits}f}" for m, _, digits in columns]

    for row in rows:
        table.add_row(PathCell(row["case"]), str(row["label"]), "" if row["empty"] == "none" else row["empty"],
                      *cells(row))  # case names are file names: never markup
    table.add_section()
    for label, stats in summary.items():
        table.add_row("[bold]mean[/]", str(label), "", *cells({m: stats[m]["mean"] for m, _, _ in columns}))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"NSD voxel: fraction of boundary voxels within {tolerance:g} mm of the other boundary; "
                  "—: undefined (both masks empty, or a distance with one mask empty)")
    for note in summary_notes(summary, missing_distance):
        console.print(note)
