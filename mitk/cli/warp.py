"""``mitk warp``: apply saved transforms (affine, displacement field, or a chain) to any image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import JsonOption, OverwriteOption, SeriesOption, emit_json, say
from mitk.errors import UsageError

MODES = ("linear", "nearest", "labels")


def warp(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Image to warp (the moving image's space).")],
    transform: Annotated[list[Path], typer.Option(
        "--transform", "-t", help="Transform from mitk register, ITK or ANTs: .tfm/.txt/.mat/.json or a displacement "
                                  ".nii.gz. Repeat for a chain: reference points go through the first, then the "
                                  "next.")],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="Image whose grid the output takes "
                                                                      "(the fixed image).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output NIfTI file.")],
    labels: Annotated[bool, typer.Option("--labels", help="INPUT is a label map: label-wise linear "
                                                           "interpolation (see --interpolation).")] = False,
    interpolation: Annotated[str | None, typer.Option(
        "--interpolation", help="linear, nearest, or labels (label-wise linear). Default: linear; labels "
                                "with --labels.")] = None,
    invert: Annotated[bool, typer.Option(
        "--invert", help="Apply the inverse of the chain (moving-world → fixed-world): matrices inverted exactly, "
                         "displacement fields by fixed-point iteration; the reference is then the moving image's "
                         "grid.")] = False,
    series: SeriesOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Resample INPUT onto the reference grid through saved transforms (fixed-world → moving-world), or with
    --invert through their inverse (an image in the fixed image's space onto the moving image's grid)."""
    import time

    import numpy as np

    from mitk.io.atomic import atomic_path, check_output
    from mitk.io.nifti import is_nifti, write_nifti
    from mitk.io.reader import load_image, require_volume
    from mitk.io.transforms import check_chain, read_transform
    from mitk.runner.invert import InversionReport, Seeds, inverse_mapping
    from mitk.runner.resample import resample_through

    mode = interpolation or ("labels" if labels else "linear")
    if mode not in MODES:
        raise UsageError(f"--interpolation must be one of {', '.join(MODES)}, not {mode!r}")
    if not is_nifti(output):
        raise UsageError("the output must end in .nii or .nii.gz", output)
    inputs = (input_path, reference, *transform)
    check_output(output, overwrite, inputs)
    started = time.perf_counter()
    chain = [read_transform(path) for path in transform]
    check_chain(chain, transform)
    image = require_volume(load_image(input_path, series=series))
    grid = require_volume(load_image(reference, series=series))
    if mode != "linear" and image.array.dtype.kind == "f" and not np.array_equal(image.array,
                                                                                  np.round(image.array)):
        raise UsageError("label interpolation needs integer labels", input_path)

    report = InversionReport()
    steps = ([inverse_mapping(step.apply, step.fitted_matrix(), exact=step.matrix is not None, report=report,
                              seeds=None if step.field_affine is None or step.field is None
                              else Seeds(step.apply, step.field_affine, step.field.shape[:3]))
              for step in reversed(chain)] if invert else [step.apply for step in chain])

    def mapping(points: np.ndarray) -> np.ndarray:
        for step in steps:
            points = step(points)
        return points

    array = resample_through(image, grid, mapping, mode="bilinear" if mode == "linear" else mode)
    if mode == "linear" and image.array.dtype.kind in "iu":
        array = np.rint(array).astype(image.array.dtype)
    if mode == "nearest":
        array = array.astype(image.array.dtype)
    with atomic_path(output, overwrite=overwrite, inputs=inputs) as temporary:
        write_nifti(array, temporary, like=grid, description="mitk warp")
    seconds = time.perf_counter() - started
    if as_json:
        document = {"input": str(input_path), "output": str(output), "reference": str(reference),
                    "transforms": [str(p) for p in transform], "invert": invert, "interpolation": mode,
                    "seconds": round(seconds, 3)}
        if report.points:
            document.update(report.as_dict())
        emit_json(document)
    say(f"{input_path} → {output} ({seconds:.1f} s)", label="ok", style="green")
