"""``mitk boxes``: reference boxes from label maps, one per connected lesion, for ``mitk evaluate detect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, say
from mitk.errors import MitkError, UsageError

LABEL_MAP_ENDINGS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png", ".dcm")


def label_maps(paths: list[Path]) -> list[Path]:
    """The label maps named: files as given, and the label map files (or DICOM folders) in a folder."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and any(p.name.lower().endswith(LABEL_MAP_ENDINGS) for p in path.iterdir()):
            found.extend(sorted(p for p in path.iterdir() if not p.name.startswith(".")
                                and p.name.lower().endswith(LABEL_MAP_ENDINGS) and not p.name.lower().endswith(
                                    ".raw")))
        else:
            found.append(path)
    return found


def parse_names(text: str | None) -> dict[int, str]:
    """``"1=tumour,2=oedema"`` → ``{1: "tumour", 2: "oedema"}``."""
    names: dict[int, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        value, _, name = part.partition("=")
        try:
            names[int(value)] = name.strip() or value.strip()
        except ValueError:
            raise UsageError(f"--names expects VALUE=NAME pairs such as 1=tumour,2=oedema, got {part!r}") from None
    return names


def boxes(
    labels: Annotated[list[Path], typer.Argument(metavar="LABELS...", help="Label maps (NIfTI, DICOM, or any "
                                                 "format mitk reads), or folders of them.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", "-d", help="Folder for <case>_boxes.json "
                                             "(created).")],
    names: Annotated[str | None, typer.Option("--names", help="Class names of label values, e.g. "
                                              "1=tumour,2=oedema (default: the value).")] = None,
    min_voxels: Annotated[int, typer.Option("--min-voxels", help="Leave out components with fewer voxels.")] = 1,
    coordinates: Annotated[str, typer.Option("--coordinates", help="World convention of box_world_mm: RAS "
                                             "(default) or LPS.")] = "RAS",
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Turn label maps into reference boxes for `mitk evaluate detect`: one box per connected lesion (26-connected
    in 3-D, 8 in 2-D) of each label value, in voxel indices and world mm, with the grid (affine, shape).

    Writes <case>_boxes.json per label map, the case named after the file less a _label, _seg, _mask or _gt
    suffix. Exit status: 0 all written; 1 all failed; 2 usage error; 3 some failed (the others were written).
    """
    from mitk.evaluation.lesions import boxes_document, case_of_label_file, document_text
    from mitk.io.atomic import write_text_atomic
    from mitk.io.reader import load_image
    from mitk.runner.batch import describe_error

    system = coordinates.upper()
    if system not in ("RAS", "LPS"):
        raise UsageError(f"--coordinates must be RAS or LPS, not {coordinates!r}")
    if min_voxels < 1:
        raise UsageError("--min-voxels must be at least 1")
    class_names = parse_names(names)
    files = label_maps(labels)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError("not a folder", output_dir)
    targets: dict[Path, Path] = {}
    for path in files:
        target = output_dir / f"{case_of_label_file(path)}_boxes.json"
        if target in targets.values():
            raise UsageError(f"two label maps make {target.name}", path)
        targets[path] = target
    cases: list[dict[str, Any]] = []
    failed = 0
    for path, target in targets.items():
        try:
            document = boxes_document(load_image(path), class_names, min_voxels, system)
            output_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, document_text(document), overwrite=overwrite, inputs=files)
        except (MitkError, OSError, ValueError) as error:
            failed += 1
            say(f"{path}: {describe_error(error)}", label="failed", style="red")
            cases.append({"labels": str(path), "error": describe_error(error)})
            continue
        count = len(document["boxes"])
        values = sorted({b["label"] for b in document["boxes"]})
        cases.append({"labels": str(path), "output": str(target), "boxes": count, "label_values": values})
        if not as_json:
            say(f"{path} → {target} ({count} box{'es' if count != 1 else ''})", label="ok", style="green")
    code = 0 if not failed else 1 if failed == len(targets) else 3
    if as_json:
        emit_json({"cases": cases, "failed": failed, "exit_code": code})
    raise typer.Exit(code)
