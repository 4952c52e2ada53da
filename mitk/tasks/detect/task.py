"""The detect task's row of the task table: its parts and the options of its verbs, as data."""

from __future__ import annotations

from pathlib import Path

from mitk.options import JSON, OVERWRITE
from mitk.taskspec import Option, TaskSpec

HERE = "mitk.tasks.detect"

OPTIONS = (
    Option(
        "output_format",
        ("--format",),
        str,
        "json",
        "json (default) or dicom-sr: a TID 1500 Comprehensive 3D SR (DICOM input only), with the JSON beside it.",
    ),
    Option("csv", ("--csv",), bool, False, "Also write the boxes as CSV (<out>_boxes.csv)."),
    Option(
        "preview",
        ("--preview",),
        bool,
        False,
        "Also write the slices through each box centre (<out>_boxes_preview.png).",
    ),
    Option(
        "coordinates",
        ("--coordinates",),
        str,
        "RAS",
        "World convention of the mm columns: RAS (NIfTI, default) or LPS (DICOM, ITK).",
    ),
    Option("deidentify", ("--deidentify",), bool, False, "Apply the DICOM PS3.15 basic profile to DICOM outputs."),
    Option("tta", ("--tta",), bool, False, "Test-time augmentation: also detect on the image flipped along the axes "
           "the plugin declares safe and fuse all passes (and an ensemble's members) by weighted boxes fusion; each "
           "box records the spread of the passes' scores (docs/calibration.md)."),
)
"""``mitk detect``'s own options (the shared batch options are declared in :mod:`mitk.options`)."""

EVALUATE_OPTIONS = (
    Option("pred", ("--pred",), Path, help="Predicted boxes (mitk's _boxes.json or .csv), or a folder.", required=True),
    Option("ref", ("--ref",), Path, help="Reference boxes (same formats; `mitk boxes` makes them from label maps), "
           "or a folder.", required=True),
    Option("images", ("--images",), Path | None, None, "Folder of the cases' images (<case>.nii.gz, …): their "
           "grids turn voxel boxes into world boxes when one side has only world boxes."),
    Option("froc_png", ("--froc-png",), Path | None, None, "Also draw the FROC curve here (PNG)."),
    JSON,
    OVERWRITE,
)

EVALUATE_EPILOG = (
    "Pairing: same case name once the extension (.json, .csv) and a _boxes, _ref, _reference, _label or _gt "
    "suffix are taken off (then, if still unpaired, a _0000, _image or _img suffix); of a case's .json and .csv "
    "(mitk detect --csv writes both) the .json is read. Boxes are compared in world mm (RAS; LPS files are "
    "converted) when both sides have them or can have them through the case's grid (the affine a box file "
    "records, the image it names as input, or --images), else as voxel boxes. A scan without a prediction file "
    "counts as a scan with no boxes; a prediction without a reference is not scored. Classes without reference "
    "boxes are left out of every mean. Exit status: 0 scored; 1 failure; 2 usage error."
)

TASK = TaskSpec(
    name="detect",
    summary="Detect objects: boxes in voxel indices and world millimetres, with scores.",
    plugin_base=f"{HERE}.plugin:DetectionPlugin",
    runner=f"{HERE}.runner:detection_runner",
    job=f"{HERE}.runner:make_detect_job",
    result=f"{HERE}.result:DetectionResult",
    suffix="_boxes",
    extension=".json",
    image_output=False,
    image_companions=("_preview",),
    verb=f"{HERE}.commands:prepare",
    verb_help=("Detect objects: boxes in voxel indices and world mm with scores (<input>_boxes.json with -o/-d or any "
               "file output)."),
    options=OPTIONS,
    recipe=f"{HERE}.recipe:DetectionRecipe",
    evaluation=f"{HERE}.commands:evaluate",
    evaluation_help=("Score predicted boxes against references: COCO mAP/mAR over IoU 0.1–0.5 and FROC sensitivity at "
                     "1/8 to 8 false positives per scan."),
    evaluation_options=EVALUATE_OPTIONS,
    evaluation_epilog=EVALUATE_EPILOG,
    out_of_fold=f"{HERE}.crossval:score_out_of_fold",
)
