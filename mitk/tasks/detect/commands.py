"""The detect task's command bodies: what ``mitk detect`` runs (:func:`prepare`) and ``mitk evaluate detect``
(:func:`evaluate`: COCO mAP/mAR and FROC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mitk.console import emit_json, say
from mitk.errors import UsageError
from mitk.taskspec import VerbPlan

BOX_SUFFIXES = ("_boxes", "_ref", "_reference", "_label", "_gt")


def prepare(values: dict[str, Any]) -> VerbPlan:
    """``mitk detect``: the output format, the coordinate convention and the extras are checked first."""
    output_format = values["output_format"]
    if output_format not in ("json", "dicom-sr"):
        raise UsageError(f"--format must be json or dicom-sr, not {output_format!r}")
    system = values["coordinates"].upper()
    if system not in ("RAS", "LPS"):
        raise UsageError(f"--coordinates must be RAS or LPS, not {values['coordinates']!r}")
    from mitk.extras import require_module

    if values["preview"]:
        require_module("matplotlib", "--preview")
    if output_format == "dicom-sr":
        require_module("highdicom", "--format dicom-sr")
    return VerbPlan(values["inputs"], {"csv": values["csv"], "preview": values["preview"],
                                       "output_format": output_format, "coordinate_system": system,
                                       "deidentify": values["deidentify"]})


def case_of_box_file(path: Path) -> str:
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
        key = case_of_box_file(file)
        if key in found:
            raise UsageError(f"{option}: two files for case {key!r} ({found[key].name}, {file.name})", path)
        found[key] = file
    return found


def evaluate(pred: Path, ref: Path, froc_png: Path | None = None, as_json: bool = False,
             overwrite: bool = False) -> int:
    """Score predicted boxes against references: COCO mAP/mAR over IoU 0.1–0.5 and FROC sensitivity at 1/8 to 8
    false positives per scan."""
    from mitk.io.atomic import atomic_path, check_output
    from mitk.tasks.detect.evaluation import CaseBoxes, evaluate_detection, read_boxes, save_froc_png

    predictions = box_files(pred, "--pred")
    references = box_files(ref, "--ref")
    if len(predictions) == 1 and len(references) == 1 and pred.is_file() and ref.is_file():
        # two files: a pair whatever their names
        predictions = {case_of_box_file(ref): next(iter(predictions.values()))}
    if froc_png is not None:
        from mitk.evaluation.outputs import refuse_overwriting_inputs

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

        print(f"scans {result['scans']}, reference boxes {result['reference_boxes']}, predicted boxes "
            f"{result['predicted_boxes']}")
        print(f"mAP(IoU 0.1–0.5) {text(result['mAP'])}  mAR {text(result['mAR'])}  "
                   f"AP@0.1 {text(result['AP_0.1'])}")
        sensitivity = "  ".join(f"{float(k):g}:{text(v)}" for k, v in result["froc"]["sensitivity"].items())
        print(f"FROC sensitivity at FP/scan {sensitivity}  (mean {text(result['froc']['score'])})")
    return 0
