"""``mitk convert``: a DICOM series (file, folder or zip), NRRD, MetaImage or other image to NIfTI, NRRD,
MetaImage or PNG, with a non-identifying JSON sidecar for DICOM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import AllowResampleOption, JsonOption, OverwriteOption, SeriesOption, emit_json, say

IncludeDescriptionsOption = Annotated[bool, typer.Option(
    "--include-descriptions",
    help="Also write the free-text SeriesDescription, ProtocolName and StudyDescription to OUT.json. Left out "
         "by default: DICOM PS3.15's de-identification profile removes them, as they can hold a name.")]


def convert(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="A DICOM file, DICOM folder or zip, "
                                                                    "or a NIfTI, NRRD, MetaImage, PNG … file.")],
    output: Annotated[Path, typer.Argument(metavar="OUT.nii.gz", help="Output file: NIfTI (.nii.gz, .nii), NRRD "
                                           "(.nrrd), MetaImage (.mha) or PNG (one slice); a DICOM input's "
                                           "sidecar is written to OUT.json.")],
    series: SeriesOption = None,
    allow_resample: AllowResampleOption = False,
    include_descriptions: IncludeDescriptionsOption = False,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Convert a DICOM series or an image file to NIfTI (sform and qform code 1), NRRD or MetaImage with its
    exact geometry (the output's extension picks the format).

    Beside OUT.nii.gz, OUT.json records non-identifying acquisition parameters (modality, manufacturer,
    spacing, kVp, TR/TE...); never patient names, IDs, dates, UIDs, institution or staff, and the
    free-text descriptions only with --include-descriptions. Pick one of several series with --series
    (see `mitk info DIR`).
    """
    import contextlib
    import json

    from mitk.io.atomic import atomic_path, check_output
    from mitk.io.dicom.sidecar import descriptions, sidecar_document, sidecar_path
    from mitk.io.reader import load_for_conversion
    from mitk.io.writer import check_target, write_image

    check_target(output)  # a name mitk cannot write (or SimpleITK missing) is refused before anything is read
    sidecar = sidecar_path(output)
    inputs = (input_path,)
    check_output(output, overwrite, inputs)
    image = load_for_conversion(input_path, series=series, allow_resample=allow_resample)
    summary = image.meta.get("dicom_summary")
    if summary is not None:
        check_output(sidecar, overwrite, inputs)
        source = image.meta.get("dicom")
        if include_descriptions and source is not None and source.headers:
            summary = {**summary, **descriptions(source.headers[0])}
    # Both files are written to temporaries first and renamed only when both succeeded.
    with contextlib.ExitStack() as stack:
        nifti_temporary = stack.enter_context(atomic_path(output, overwrite=overwrite, inputs=inputs))
        if summary is not None:
            sidecar_temporary = stack.enter_context(atomic_path(sidecar, overwrite=overwrite, inputs=inputs))
            content = sidecar_document(summary, include_descriptions)
            sidecar_temporary.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        write_image(image.array, nifti_temporary, like=image)
    document = {
        "input": str(input_path), "output": str(output), "sidecar": str(sidecar) if summary is not None else None,
        "shape": list(image.shape), "spacing": [round(s, 6) for s in image.spacing],
        "orientation": image.orientation, "dtype": str(image.array.dtype),
        "series_index": summary.get("series_index") if summary else None,
        "resampled": summary.get("resampled") if summary else None,
    }
    if as_json:
        emit_json(document)
    else:
        shape = "×".join(str(n) for n in image.shape)
        say(f"wrote {output} ({shape}, {document['orientation']})" + (f" and {sidecar}" if summary else ""))

