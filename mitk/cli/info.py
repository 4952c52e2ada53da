"""``mitk info``: geometry and intensity summary of an image, or the series in a DICOM folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import JsonOption, SeriesOption, emit_json
from mitk.errors import UsageError

IncludeDescriptionsOption = Annotated[bool, typer.Option(
    "--include-descriptions",
    help="Also show the free-text SeriesDescription, ProtocolName and StudyDescription. Left out by default: "
         "DICOM PS3.15's de-identification profile removes them, as they can hold a name.")]


def describe_image(image: Any, include_descriptions: bool = False) -> dict[str, Any]:
    """Geometry, dtype and range of ``image``; for DICOM, its non-identifying summary.

    The summary's free-text descriptions (SeriesDescription, ProtocolName, StudyDescription) are added
    only with ``include_descriptions``.
    """
    import numpy as np

    array = image.array
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    document: dict[str, Any] = {
        "path": str(image.path) if image.path else None,
        "format": image.meta.get("format"),
        "shape": list(image.shape),
        "spacing": [round(s, 6) for s in image.spacing],
        "orientation": image.orientation,
        "affine": [[round(float(v), 6) for v in row] for row in image.affine],
        "affine_space": "RAS",
        "dtype": str(array.dtype),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
    }
    header = image.meta.get("nifti_header")
    if header is not None:
        document["qform_code"] = int(header["qform_code"])
        document["sform_code"] = int(header["sform_code"])
    for key in ("itk", "photo"):  # the file format, pixel type and where the pixel spacing came from
        if image.meta.get(key):
            document[key] = dict(image.meta[key])
    dicom = image.meta.get("dicom_summary")
    if dicom:
        document["dicom"] = dict(dicom)
        source = image.meta.get("dicom")
        if include_descriptions and source is not None and source.headers:
            from mitk.io.dicom.sidecar import descriptions

            document["dicom"].update(descriptions(source.headers[0]))
    return document


WeightsInfoOption = Annotated[Path | None, typer.Option(
    "--weights", help="Instead of an image, describe a model: a MONAI bundle folder (what its metadata declares: "
                      "task, channels, labels, spacing, licence), an nnU-Net model folder (dataset, labels, "
                      "channels, configuration, target spacing, folds, trainer) or a mitk checkpoint.")]


def info(
    path: Annotated[Path | None, typer.Argument(help="A NIfTI, NRRD, MetaImage, PNG or JPEG file, a DICOM file, "
                                                               "DICOM folder or zip.")] = None,
    series: SeriesOption = None,
    include_descriptions: IncludeDescriptionsOption = False,
    weights: WeightsInfoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Geometry and intensities of an image: shape, spacing, orientation code, affine, dtype, range.

    The orientation code names where each voxel axis points, e.g. RAS or LPS. For DICOM, adds the
    non-identifying acquisition parameters (modality, manufacturer, kVp, TR/TE...).

    For a DICOM folder holding several series, lists them (index, UID, modality, slices, size, spacing,
    orientation); pick one with --series. The free-text descriptions appear, in the table and in --json
    alike, only with --include-descriptions.
    """
    from mitk.io.reader import load_image, looks_like_dicom

    if weights is not None:
        if path is not None:
            raise UsageError("give an image or --weights, not both")
        print_document(describe_weights(weights), as_json)
        return
    if path is None:
        raise UsageError("give an image (or --weights MODEL to describe a model)")
    if looks_like_dicom(path) and series is None and (path.is_dir() or path.suffix.lower() == ".zip"):
        from mitk.io.dicom import list_series

        listing = list_series(path)
        if len(listing.series) != 1:
            _print_series(listing, as_json, include_descriptions)
            return
    print_document(describe_image(load_image(path, series=series), include_descriptions), as_json)


def describe_weights(weights: Path) -> dict[str, Any]:
    """What a model declares: a MONAI bundle folder's metadata, an nnU-Net model folder's dataset, plans and
    folds, or a mitk checkpoint's task, plugin and metrics."""
    from mitk.bundles import is_bundle
    from mitk.nnunet import is_model_folder
    from mitk.runner.fit import bundle_expectations

    if is_model_folder(weights):
        from mitk.nnunet.loading import describe_model_folder

        return describe_model_folder(weights)

    if is_bundle(weights):
        from mitk.bundles import read_bundle
        from mitk.bundles.loading import describe_bundle

        return {**describe_bundle(weights), "expects": bundle_expectations(read_bundle(weights).metadata)}
    from mitk.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(weights)
    return {"path": str(weights), "task": checkpoint.task, "plugin": checkpoint.plugin,
            "plugin_version": checkpoint.plugin_version, "tensors": len(checkpoint.state_dict),
            "metrics": checkpoint.metrics,
            "expects": checkpoint.expects or "not recorded (trained before mitk recorded it: inputs not checked)"}


def print_document(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(document)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from mitk.console import PathCell

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in document.items():
        if key == "affine":
            value = "\n".join("  ".join(f"{v:10.4f}" for v in row) for row in value)
        elif isinstance(value, list):
            value = " × ".join(str(v) for v in value) if key in ("shape", "spacing") else str(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        # file names and header text are never markup; a long path loses its middle, never its file name
        table.add_row(key, PathCell(value) if key == "path" else Text(str(value)))
    Console().print(table)


def _print_series(listing: Any, as_json: bool, include_descriptions: bool) -> None:
    rows = [s.to_dict() for s in listing.series]
    if not include_descriptions:
        for row in rows:
            row.pop("description", None)
    if as_json:
        emit_json({"path": str(listing.path), "series": rows, "skipped_files": listing.skipped_files})
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{listing.path}: {len(rows)} series"), box=None)
    columns = ("index", "uid", "modality", *(("description",) if include_descriptions else ()), "slices", "size",
               "spacing", "orientation", "volume")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(str(row.get(c) or "")) for c in columns))
    console = Console()
    console.print(table)
    if listing.skipped_files:
        console.print(f"{listing.skipped_files} non-DICOM file(s) skipped")
