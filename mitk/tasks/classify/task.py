"""The classify task's row of the task table: its parts and the options of its verbs, as data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mitk.options import INPUTS, JSON, OVERWRITE
from mitk.taskspec import Option, TaskSpec

HERE = "mitk.tasks.classify"

OPTIONS = (
    Option("output", ("--output", "-o"), Path | None, None, "Write the record of the one input here (JSON)."),
    Option(
        "output_dir",
        ("--output-dir", "-d"),
        Path | None,
        None,
        "Write <input>_class.json records (and --explain maps) here.",
    ),
    Option(
        "csv",
        ("--csv",),
        Path | None,
        None,
        "Write one row per input: input, predicted, prob_<class> (the --pred of `mitk evaluate classify`).",
    ),
    Option(
        "multi_label",
        ("--multi-label/--single-label",),
        bool | None,
        None,
        "Sigmoid per class and every class at or above --threshold (default: as trained).",
    ),
    Option(
        "threshold",
        ("--threshold",),
        float | None,
        None,
        "Probability at or above which a class is predicted with --multi-label (default: as trained, 0.5).",
    ),
    Option(
        "explain",
        ("--explain",),
        bool,
        False,
        ("Also write a Grad-CAM overlay <input>_gradcam.png (and, for volumes, the map as <input>_gradcam.nii.gz) "
         "beside the output or the input."),
    ),
    Option(
        "dicom_sr",
        ("--dicom-sr",),
        bool,
        False,
        "Also write a TID 1500 SR of the probabilities, <input>_class_sr.dcm (DICOM input; needs -o or -d).",
    ),
    Option("tta", ("--tta",), bool, False, "Test-time augmentation: also run the flips the plugin declares safe "
           "(never left-right: 2-D images flip up-down only) and average the probabilities (docs/precision.md)."),
    Option("uncertainty", ("--uncertainty",), bool, False, "Also report the predictive entropy and, with an "
           "ensemble or --tta, the mutual information (BALD) in the record and --csv."),
)
"""``mitk classify``'s own options (the shared batch options are declared in :mod:`mitk.options`)."""
ARGUMENTS = (
    replace(
        INPUTS,
        help="Images: NIfTI files, DICOM files/folders/zips, PNG or JPEG pictures, folders of NIfTI files, or "
        "quoted globs.",
    ),
)

EVALUATE_OPTIONS = (
    Option(
        "pred",
        ("--pred",),
        Path,
        help="Predictions: `mitk classify --csv` output (input, predicted, prob_<class> columns) or its --json output.",
        required=True,
    ),
    Option(
        "ref",
        ("--ref",),
        Path,
        help="Reference labels: a CSV with image and label columns (the training CSV format).",
        required=True,
    ),
    Option("csv", ("--csv",), Path | None, None, "Also write one row per class (and an (all) row) here."),
    Option("confusion_png", ("--confusion-png",), Path | None, None, "Also draw the confusion matrix as a PNG here."),
    Option(
        "reliability_png",
        ("--reliability-png",),
        Path | None,
        None,
        "Also draw the reliability diagram (accuracy against top-class confidence per bin) as a PNG here.",
    ),
    Option("bins", ("--bins",), int, 15, "Equal-width confidence bins for the expected calibration error."),
    Option(
        "multi_label",
        ("--multi-label/--single-label",),
        bool | None,
        None,
        "Score class sets (a;b) one class at a time; default: multi-label when any label names several classes.",
    ),
    JSON,
    OVERWRITE,
)

EVALUATE_EPILOG = (
    "Pairing: the same image path (relative paths are read from each CSV's folder), else the same file "
    "name without its image suffix. Undefined values (a class absent from the reference) are printed as — "
    "and written as null/empty. Exit status: 0 scored; 1 failure; 2 usage error."
)

TASK = TaskSpec(
    name="classify",
    summary="Classify images: per-class probabilities and the predicted class.",
    plugin_base=f"{HERE}.plugin:ClassificationPlugin",
    runner=f"{HERE}.runner:ClassificationRunner",
    job=f"{HERE}.runner:make_classify_job",
    result=f"{HERE}.result:ClassificationResult",
    suffix="_class",
    extension=".json",
    image_output=False,
    image_channels=True,
    image_companions=("_gradcam",),
    verb=f"{HERE}.commands:prepare",
    verb_help="Classify images: print the predicted class and the probability of each class per input.",
    options=OPTIONS,
    arguments=ARGUMENTS,
    recipe=f"{HERE}.recipe:ClassificationRecipe",
    evaluation=f"{HERE}.commands:evaluate",
    evaluation_help=(
        "Accuracy, balanced accuracy, per-class sensitivity, specificity, PPV and one-vs-rest ROC AUC, the confusion "
        "matrix and the expected calibration error; multi-label predictions (a;b) one class at a time, with exact "
        "match and Hamming accuracy."
    ),
    evaluation_options=EVALUATE_OPTIONS,
    evaluation_epilog=EVALUATE_EPILOG,
    out_of_fold=f"{HERE}.crossval:score_out_of_fold",
)
