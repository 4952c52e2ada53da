"""``mitk evaluate detect``: mAP / mAR (IoU 0.1–0.5) and FROC of saved boxes against reference boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, say
from mitk.errors import UsageError

BOX_SUFFIXES = ("_boxes", "_ref", "_reference", "_label", "_gt")
EPILOG = ("Pairing: same case name once the extension (.json, .csv) and a _boxes, _ref, _reference, _label or _gt "
          "suffix are taken off. Boxes are compared in world mm (RAS; LPS files are converted) when both sides "
          "have them, else as voxel boxes. A scan without a prediction file counts as a scan with no boxes; a "
          "prediction without a reference is not scored. Classes without reference boxes are left out of every "
          "mean. Exit status: 0 scored; 1 failure; 2 usage error.")


def case_key(path: Path) -> str:
    """``ct_boxes.json`` → ``ct``; ``ct_ref.csv`` → ``ct``."""
    stem = path.name
    for extension in (".json", ".csv"):
        if stem.lower().endswith(extension):
            stem = stem[: -len(extension)]
    for suffix in BOX_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def box_files(path: Path, option: str) -> dict[str, Path]:
    """Case name → file, for a file or a folder of ``.json``/``.csv`` box files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".json", ".csv"))
    elif path.is_file():
        files = [path]
    else:
        raise UsageError(f"{option}: no such file or folder", path)
    if not files:
        raise UsageError(f"{option}: no .json or .csv box files", path)
    found: dict[str, Path] = {}
    for file in files:
        key = case_key(file)
        if key in found:
            raise UsageError(f"{option}: two files for case {key!r} ({found[key].name}, {file.name})", path)
        found[key] = file
    return found


def detect(
    pred: Annotated[Path, typer.Option("--pred", help="Predicted boxes (mitk's _boxes.json or .csv), or a folder.")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference boxes (same formats), or a folder.")],
    froc_png: Annotated[Path | None, typer.Option("--froc-png", help="Also draw the FROC curve here (PNG).")]
    = None,
    as_json: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Score predicted boxes against references: COCO mAP/mAR over IoU 0.1–0.5 and FROC sensitivity at 1/8 to 8
    false positives per scan."""
    from mitk.evaluation.detection import CaseBoxes, evaluate_detection, read_boxes, save_froc_png
    from mitk.io.atomic import atomic_path, check_output

    predictions = box_files(pred, "--pred")
    references = box_files(ref, "--ref")
    if len(predictions) == 1 and len(references) == 1 and pred.is_file() and ref.is_file():
        predictions = {case_key(ref): next(iter(predictions.values()))}  # two files: a pair whatever their names
    if froc_png is not None:
        from mitk.cli.evaluate import refuse_overwriting_inputs

        refuse_overwriting_inputs(froc_png, "--froc-png", [*predictions.values(), *references.values()])
        check_output(froc_png, overwrite)
    unpaired = sorted(set(predictions) - set(references))
    if unpaired and len(unpaired) == len(predictions):
        raise UsageError(f"no prediction pairs with a reference in {ref}", pred)
    for case in unpaired:
        say(f"for prediction {predictions[case]}: not scored", label="no reference", style="yellow")
    pairs = []
    for case, reference_file in sorted(references.items()):
        reference = read_boxes(reference_file)
        if case in predictions:
            prediction = read_boxes(predictions[case])
        else:
            say(f"for reference {reference_file}: scored as no boxes", label="no prediction", style="yellow")
            prediction = CaseBoxes(reference.boxes[:0], reference.labels[:0], reference.scores[:0], reference.space)
        pairs.append((case, prediction, reference))
    result = evaluate_detection([p for _, p, _ in pairs], [r for _, _, r in pairs])
    document = {"cases": [{"case": case, "prediction": str(predictions.get(case)), "reference": str(references[case]),
                           "predicted_boxes": len(p.boxes), "reference_boxes": len(r.boxes)}
                          for case, p, r in pairs], **result}
    if froc_png is not None:
        with atomic_path(froc_png, overwrite=overwrite) as temporary:
            save_froc_png(result, temporary)
    if as_json:
        emit_json(document)
    else:
        def text(value: float | None) -> str:
            return "—" if value is None else f"{value:.3f}"

        typer.echo(f"scans {result['scans']}, reference boxes {result['reference_boxes']}, predicted boxes "
            f"{result['predicted_boxes']}")
        typer.echo(f"mAP(IoU 0.1–0.5) {text(result['mAP'])}  mAR {text(result['mAR'])}  "
                   f"AP@0.1 {text(result['AP_0.1'])}")
        sensitivity = "  ".join(f"{float(k):g}:{text(v)}" for k, v in result["froc"]["sensitivity"].items())
        typer.echo(f"FROC sensitivity at FP/scan {sensitivity}  (mean {text(result['froc']['score'])})")
    raise typer.Exit(0)
