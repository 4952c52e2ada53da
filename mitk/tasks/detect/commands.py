"""The detect task's command bodies: what ``mitk detect`` runs (:func:`prepare`) and ``mitk evaluate detect``
(:func:`evaluate`: COCO mAP/mAR and FROC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mitk.console import emit_json, say
from mitk.errors import InputError, UsageError
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
                                       "deidentify": values["deidentify"], "tta": values["tta"]})


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


PREFERENCE = {".json": 0, ".csv": 1}
"""Of two files for one case (``mitk detect --csv`` writes both), the JSON record is read: it also names the
input and, in files ``mitk boxes`` writes, the grid."""
IMAGE_SUFFIXES = ("_0000", "_image", "_img")
"""Taken off a case name when pairing finds no exact match (``lung1_image`` ↔ ``lung1``)."""


def box_files(path: Path, option: str) -> dict[str, Path]:
    """Case name → file, for a file or a folder of ``.json``/``.csv`` box files; of a JSON and a CSV file of the
    same case, the JSON file."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".json", ".csv"))
    elif path.is_file():
        files = [path]
    else:
        raise UsageError(f"{option}: no such file or folder", path)
    if not files:
        raise UsageError(f"{option}: no .json or .csv box files", path)
    found: dict[str, Path] = {}
    for file in sorted(files, key=lambda f: (PREFERENCE[f.suffix.lower()], f.name)):
        key = case_of_box_file(file)
        if key in found:
            if found[key].suffix.lower() != file.suffix.lower():
                continue  # the JSON record of the case is read, its CSV twin left alone
            raise UsageError(f"{option}: two files for case {key!r} ({found[key].name}, {file.name})", path)
        found[key] = file
    return dict(sorted(found.items()))


def bare_case(name: str) -> str:
    """``lung1_image`` → ``lung1``; ``case_0000`` → ``case``."""
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def pair_cases(predictions: dict[str, Path], references: dict[str, Path]) -> dict[str, Path]:
    """Predictions keyed by their reference's case: the same name, else the same name once an image suffix
    (``_0000``, ``_image``, ``_img``) is taken off both sides, when that is unambiguous."""
    paired = {case: file for case, file in predictions.items() if case in references}
    bare_references: dict[str, list[str]] = {}
    for case in references:
        if case not in paired:
            bare_references.setdefault(bare_case(case), []).append(case)
    leftover = [case for case in predictions if case not in references]
    bare_predictions: dict[str, list[str]] = {}
    for case in leftover:
        bare_predictions.setdefault(bare_case(case), []).append(case)
    for case in leftover:
        key = bare_case(case)
        if len(bare_references.get(key, [])) == 1 and len(bare_predictions[key]) == 1:
            paired[bare_references[key][0]] = predictions[case]
        else:
            paired[case] = predictions[case]  # unpaired: keeps its own name
    return paired


def image_files(folder: Path) -> dict[str, Path]:
    """Case name → image (file or DICOM folder) of ``--images``: the name less its extension and an
    ``_0000``/``_image``/``_img`` suffix."""
    from mitk.io.atomic import split_suffix

    if not folder.is_dir():
        raise UsageError("--images: not a folder", folder)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() in (".json", ".csv", ".txt", ".raw"):
            continue
        stem = split_suffix(path)[0] if path.is_file() else path.name
        found.setdefault(stem, path)
        found.setdefault(bare_case(stem), path)
    return found


def case_affine(case: str, boxes: Any, images: dict[str, Path] | None, box_file: Path) -> Any:
    """The voxel → RAS affine of a case's image: from ``--images``, else the image the box file names
    (``input``, relative to the working folder or to the box file) when it exists; None when neither."""
    from mitk.io.reader import load_image

    path = None
    if images is not None:
        path = images.get(case) or images.get(bare_case(case))
        if path is None:
            raise UsageError(f"--images has no image for case {case!r}", box_file)
    elif boxes.input:
        for candidate in (Path(boxes.input), box_file.parent / boxes.input):
            if candidate.exists():
                path = candidate
                break
    return None if path is None else load_image(path).affine


def evaluate(pred: Path, ref: Path, images: Path | None = None, froc_png: Path | None = None, as_json: bool = False,
             overwrite: bool = False) -> int:
    """Score predicted boxes against references: COCO mAP/mAR over IoU 0.1–0.5 and FROC sensitivity at 1/8 to 8
    false positives per scan."""
    from mitk.io.atomic import atomic_path, check_output
    from mitk.tasks.detect.evaluation import CaseBoxes, common_space, evaluate_detection, read_boxes, save_froc_png

    predictions = box_files(pred, "--pred")
    references = box_files(ref, "--ref")
    if len(predictions) == 1 and len(references) == 1 and pred.is_file() and ref.is_file():
        # two files: a pair whatever their names
        predictions = {case_of_box_file(ref): next(iter(predictions.values()))}
    predictions = pair_cases(predictions, references)
    image_index = image_files(images) if images is not None else None
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
        source = predictions.get(case, reference_file)
        record = prediction if prediction.input else reference
        affine = case_affine(case, record, image_index, source) if image_index is not None else None
        try:
            try:
                prediction, reference = common_space(prediction, reference, affine)
            except InputError:
                if affine is not None or not record.input:
                    raise
                affine = case_affine(case, record, None, source)  # the image the record names, if it is there
                prediction, reference = common_space(prediction, reference, affine)
        except InputError as error:
            if error.path is not None:
                raise
            raise InputError(str(error), source) from None
        pairs.append((case, prediction, reference))
    result = evaluate_detection([p for _, p, _ in pairs], [r for _, _, r in pairs])
    document = {"cases": [{"case": case, "prediction": str(predictions.get(case)), "reference": str(references[case]),
                           "predicted_boxes": len(p.boxes), "reference_boxes": len(r.boxes), "space": r.space}
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
