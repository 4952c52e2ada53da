"""The register task's row of the task table: its parts and the options of its verbs, as data."""

from __future__ import annotations

from pathlib import Path

from mitk.options import JSON
from mitk.taskspec import Option, TaskSpec

HERE = "mitk.tasks.register"

OPTIONS = (
    Option(
        "transform",
        ("--transform",),
        Path | None,
        None,
        ("Write the transform: .tfm/.txt/.mat (ITK, LPS), .json (RAS and LPS matrices), or .nii.gz (ITK displacement "
         "field on the fixed grid); its inverse goes beside it as <name>_inverse<ext> (a field: on the moving grid)."),
    ),
    Option(
        "inverse_warped",
        ("--inverse-warped",),
        bool,
        False,
        "Also write the fixed image on the moving grid through the inverse (<out>_inverse_warped.nii.gz).",
    ),
    Option(
        "preview",
        ("--preview",),
        bool,
        False,
        "Also write a checkerboard and edge overlay of fixed and warped images (<out>_preview.png).",
    ),
    Option(
        "fixed_series",
        ("--fixed-series",),
        str | None,
        None,
        "DICOM series of the fixed image (default: --series, applied to each image).",
    ),
    Option(
        "fixed_mask",
        ("--fixed-mask",),
        Path | None,
        None,
        "Label image (non-zero inside): the metric is sampled only there (affine, deformable).",
    ),
    Option(
        "moving_mask",
        ("--moving-mask",),
        Path | None,
        None,
        "Label image on the moving image: only samples mapped inside it count (one moving image).",
    ),
    Option(
        "dicom_sr",
        ("--dicom-sr",),
        bool,
        False,
        ("Also write the registration's quality as a TID 1500 DICOM SR (<out>_sr.dcm; the fixed image must be "
         "DICOM): similarity before/after, mask Dice, the affine's determinant and scales, folding."),
    ),
)
"""``mitk register``'s own options (the shared batch options are declared in :mod:`mitk.options`)."""
ARGUMENTS = (
    Option("fixed", type=Path, argument=True, required=True, help="Fixed image: the grid the output lives on."),
    Option("moving", type=list[str], argument=True, required=True, help="Moving image(s) to align to the fixed one."),
)

EVALUATE_OPTIONS = (
    Option(
        "warped_labels",
        ("--warped-labels",),
        Path | None,
        None,
        "Moving label map warped onto the fixed grid (mitk warp --labels).",
    ),
    Option("fixed_labels", ("--fixed-labels",), Path | None, None, "The fixed image's label map."),
    Option(
        "fixed_landmarks",
        ("--fixed-landmarks",),
        Path | None,
        None,
        "CSV of fixed-image landmarks: x,y,z world mm (optional name column).",
    ),
    Option(
        "moving_landmarks",
        ("--moving-landmarks",),
        Path | None,
        None,
        "CSV of the matching moving-image landmarks, same order or names.",
    ),
    Option(
        "transform",
        ("--transform", "-t"),
        list[Path] | None,
        None,
        ("Transform(s) from mitk register (a chain, in order): maps the fixed landmarks for TRE; a displacement field "
         "is also scored for folding."),
    ),
    Option("lps", ("--lps",), bool, False, "Landmark CSVs are in LPS (ITK, 3D Slicer), not RAS."),
    JSON,
)

EVALUATE_EPILOG = (
    "Give --warped-labels with --fixed-labels for Dice, --fixed-landmarks with --moving-landmarks and "
    "--transform for TRE; a displacement field among the transforms is also scored for folding. "
    "Exit status: 0 scored; 1 failure; 2 usage error."
)

TASK = TaskSpec(
    name="register",
    summary="Register moving images to a fixed image; write each on the fixed grid with its transform.",
    plugin_base=f"{HERE}.plugin:RegistrationPlugin",
    runner=f"{HERE}.runner:RegistrationRunner",
    job=f"{HERE}.runner:make_register_job",
    result=f"{HERE}.result:RegistrationResult",
    suffix="_warped",
    extension=".nii.gz",
    takes_fixed=True,
    verb=f"{HERE}.commands:prepare",
    verb_help="Register moving images to a fixed image; write each moving image resampled on the fixed grid.",
    options=OPTIONS,
    arguments=ARGUMENTS,
    recipe=f"{HERE}.recipe:RegistrationRecipe",
    evaluation=f"{HERE}.commands:evaluate",
    evaluation_help=("Score a registration: Dice per label, target registration error (mm), Jacobian determinant and "
                     "folding."),
    evaluation_options=EVALUATE_OPTIONS,
    evaluation_epilog=EVALUATE_EPILOG,
)
