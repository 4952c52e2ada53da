"""``mitk preview``: any label map drawn over its image, three views in radiological convention, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import OverwriteOption, say

MAX_LABELS = 1000
"""More distinct values than this is an image, not a label map (the largest atlases have a few hundred)."""


def read_label_names(path: Path) -> dict[int, str]:
    """Label names from a JSON object (``{"1": "liver"}``) or a lookup table of ``VALUE NAME ...`` lines
    (AAL's, FreeSurfer's and ITK-SNAP's label files have this shape; ``#`` starts a comment)."""
    import json

    from mitk.errors import InputError

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        try:
            return {int(key): str(value) for key, value in document.items()}
        except ValueError:
            raise InputError("label names must map label values (integers) to names", path) from None
    names: dict[int, str] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0].lstrip("-").isdigit():
            names[int(words[0])] = words[1].strip('"')
    if not names:
        raise InputError("no label names found (expected JSON or 'VALUE NAME' lines)", path)
    return names


def preview(
    image_path: Annotated[Path, typer.Argument(metavar="IMAGE", help="The image (NIfTI, DICOM, PNG...).")],
    labels_path: Annotated[Path, typer.Argument(metavar="LABELS", help="A label map on the image's grid.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The PNG to write.")],
    names: Annotated[Path | None, typer.Option(
        "--names", help="Label names: JSON ({\"1\": \"liver\"}) or 'VALUE NAME' lines (e.g. an atlas's lookup "
                        "table).")] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Draw LABELS over IMAGE: axial, coronal and sagittal views through the labels' centre, the patient's right
    on the left, a colour and a legend entry per label (readable for atlases of 100+ labels)."""
    import numpy as np

    from mitk.errors import InputError, UsageError
    from mitk.io.atomic import atomic_path
    from mitk.io.reader import load_image
    from mitk.preview import require_preview, save_overlay_png

    require_preview("mitk preview")
    if output.suffix.lower() != ".png":
        raise UsageError("the output must end in .png", output)
    inputs = (image_path, labels_path, *((names,) if names else ()))
    image, label_image = load_image(image_path), load_image(labels_path)
    label_map = np.asarray(label_image.array)
    if label_map.shape[:3] != np.asarray(image.array).shape[:3] or not np.allclose(
            label_image.affine, image.affine, atol=1e-3):
        raise InputError("the label map is not on the image's grid (shape or affine differ); resample it "
                         "first, e.g. with mitk warp --labels", labels_path)
    if not np.array_equal(label_map, np.round(label_map)):
        raise InputError("not a label map: it holds non-integer values", labels_path)
    count = len(np.unique(label_map)) - int(0 in label_map)
    if count > MAX_LABELS:
        raise InputError(f"not a label map: {count} distinct values (at most {MAX_LABELS} labels are drawn)",
                         labels_path)
    label_names = read_label_names(names) if names else {}
    with atomic_path(output, overwrite=overwrite, inputs=inputs) as temporary:
        save_overlay_png(image, label_map.astype(np.int64), label_names, temporary)
    say(f"wrote {output} ({count} label(s))")
