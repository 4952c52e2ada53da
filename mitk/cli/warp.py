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
        "--transform", "-t", help="Transform from mitk register or ITK: .tfm/.txt/.json or a displacement "
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
    series: SeriesOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Resample INPUT onto the reference grid through saved transforms (fixed-world → moving-world)."""
    import time

    import numpy as np

    from mitk.io.atomic import atomic_path, check_output
    from mitk.io.nifti import is_nifti, write_nifti
    from mitk.io.reader import load_image, require_volume
    from mitk.io.transforms import check_chain, read_transform
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

    def mapping(points: np.ndarray) -> np.ndarray:
        for step in chain:
            points = step.apply(points)
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
        emit_json({"input": str(input_path), "output": str(output), "reference": str(reference),
                   "transforms": [str(p) for p in transform], "interpolation": mode, "seconds": round(seconds, 3)})
    say(f"{input_path} → {output} ({seconds:.1f} s)", label="ok", style="green")
