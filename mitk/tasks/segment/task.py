"""The segment task's row of the task table: its parts and the options of its verbs, as data."""

from __future__ import annotations

from pathlib import Path

from mitk.options import JSON, OVERWRITE
from mitk.taskspec import Option, TaskSpec

HERE = "mitk.tasks.segment"

OPTIONS = (
    Option("output_format", ("--format",), str, "auto",
           "auto (default): the input's format family (PNG for PNG/JPEG, NRRD/MetaImage for those, else NIfTI; "
           "-o's extension decides when given), nifti, dicom-seg, or dicom-seg-sr: the SEG and a TID 1500 SR of "
           "its volumes (<out>_sr.dcm) (both DICOM input only)."),
    Option(
        "probabilities", ("--probabilities",), bool, False, "Also write per-label probability maps (<out>_prob.nii.gz)."
    ),
    Option("stats", ("--stats",), bool, False, "Also write per-label statistics (<out>_stats.csv)."),
    Option("preview", ("--preview",), bool, False, "Also write an overlay preview (<out>_preview.png)."),
    Option("deidentify", ("--deidentify",), bool, False, "Apply the DICOM PS3.15 basic profile to DICOM outputs."),
    Option("rtstruct", ("--rtstruct",), bool, False,
           "Also write a DICOM RT Structure Set (<out>_rtstruct.dcm; DICOM input only): one ROI per label, "
           "contours in the series' frame of reference."),
    Option("tta", ("--tta",), bool, False, "Test-time augmentation: also run the flips the plugin declares safe "
           "(every axis for 3-D: 8 passes per model) and average the probabilities (docs/precision.md)."),
    Option("uncertainty", ("--uncertainty",), bool, False, "Also write the per-voxel entropy (<out>_entropy.nii.gz) "
           "and its mean over the predicted foreground in the record."),
)
"""``mitk segment``'s own options (the shared batch options are declared in :mod:`mitk.options`)."""

EVALUATE_OPTIONS = (
    Option("pred", ("--pred",), Path, help="Predicted label map, or a folder of them.", required=True),
    Option("ref", ("--ref",), Path, help="Reference label map, or a folder of them.", required=True),
    Option(
        "labels",
        ("--labels",),
        str | None,
        None,
        "Labels to score, e.g. 1,2 (default: every non-zero label in either map).",
    ),
    Option("tolerance", ("--tolerance",), float, 2.0, "Surface Dice (voxel) tolerance in mm."),
    Option(
        "missing_distance",
        ("--missing-distance",),
        str,
        "nan",
        ("HD95 and ASD when one mask is empty: nan (left out of the means, counted as missing), worst (the case's "
         "field-of-view diagonal in mm) or a distance in mm."),
        metavar="nan|worst|MM",
    ),
    Option(
        "resample_pred",
        ("--resample-pred",),
        bool,
        False,
        "Resample predictions onto the reference grid (nearest neighbour) instead of refusing them.",
    ),
    Option("csv", ("--csv",), Path | None, None, "Also write one row per case and label here."),
    Option(
        "summary_csv",
        ("--summary-csv",),
        Path | None,
        None,
        "Also write one row per label and metric (mean, std, median, n and the case counts) here.",
    ),
    JSON,
    OVERWRITE,
)

EVALUATE_EPILOG = (
    "Pairing: same file name, or <case>_seg.nii.gz with <case>_label.nii.gz or <case>.nii.gz. "
    "Both-empty labels are left out of every mean; HD95/ASD with one mask empty are missing (counted, "
    "not averaged) unless --missing-distance gives a penalty. "
    "Exit status: 0 all pairs scored; 1 failure; 2 usage error; 3 some pairs failed."
)

TASK = TaskSpec(
    name="segment",
    summary="Segment images into integer label maps on each input's exact grid.",
    plugin_base=f"{HERE}.plugin:SegmentationPlugin",
    runner=f"{HERE}.runner:SegmentationRunner",
    job=f"{HERE}.runner:make_segment_job",
    result=f"{HERE}.result:SegmentationResult",
    suffix="_seg",
    extension=".nii.gz",
    image_companions=("_prob", "_preview", "_entropy"),
    image_channels=True,  # colour reaches the plugins that take it (SegmentationPlugin.colour)
    verb=f"{HERE}.commands:prepare",
    verb_help="Segment images into integer label maps on each input's exact grid (default <input>_seg.nii.gz; "
              "<input>_seg.png for a PNG or JPEG, <input>_seg.nrrd for NRRD).",
    options=OPTIONS,
    recipe=f"{HERE}.recipe:SegmentationRecipe",
    evaluation=f"{HERE}.commands:evaluate",
    evaluation_help="Score predicted label maps against references, per case and label, with means per label.",
    evaluation_options=EVALUATE_OPTIONS,
    evaluation_epilog=EVALUATE_EPILOG,
)
