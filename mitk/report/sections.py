"""One case's section of a report, per task: the figures, the tables and what went wrong.

A picture that cannot be drawn (the input moved, an output damaged) becomes a problem of the case, never a
stopped report.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitk.report import figures
from mitk.report.page import esc, figure, number, table
from mitk.report.records import ReportCase

MAX_BOX_CROPS = 8


@dataclass
class Section:
    """A case's HTML, its thumbnail (a data URI, or None), and its key figure for the summary table."""

    html: str
    thumbnail: str | None = None
    key: str = ""
    key_value: float | None = None
    problems: list[str] = field(default_factory=list)


def load(path: Path, series: Any = None) -> Any:
    """An image through mitk's readers (NIfTI, DICOM, pictures): never torch."""
    from mitk.io.reader import load_image

    return load_image(path, series=series if isinstance(series, str) else None)


def options(case: ReportCase) -> dict[str, Any]:
    return dict(((case.provenance or {}).get("invocation") or {}).get("options") or {})


def input_image(case: ReportCase, problems: list[str]) -> Any:
    """The case's input image, or None with a problem saying why."""
    path = case.path(case.input) or case.path((case.provenance or {}).get("input_path"))
    if path is None:
        problems.append("the input is not where the record says: no pictures")
        return None
    try:
        return load(path, options(case).get("series"))
    except Exception as error:  # the report goes on whatever the reader says
        problems.append(f"the input cannot be read ({first_line(error)}): no pictures")
        return None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def section(case: ReportCase, pictures: bool, thumbnails: bool) -> Section:
    """The section of ``case``: its task's findings, with pictures unless ``pictures`` is False."""
    problems: list[str] = []
    builder = {"segment": segmentation, "classify": classification, "detect": detection,
               "register": registration}.get(case.task)
    if case.status in ("failed", "damaged", "no record") or builder is None:
        result = Section("", key=case.status)
    else:
        try:
            result = builder(case, problems, pictures, thumbnails)
        except Exception as error:  # a record of an unexpected shape: say so, go on
            problems.append(f"this record cannot be shown ({first_line(error)})")
            result = Section("")
    result.problems = [*case.problems, *problems]
    return result


def segmentation(case: ReportCase, problems: list[str], pictures: bool, thumbnails: bool) -> Section:
    labels = [row for row in case.record.get("labels") or [] if isinstance(row, dict)]
    area = any("area_mm2" in row for row in labels)
    unit, key = ("mm²", "area_mm2") if area else ("mL", "volume_ml")
    rows = [[row.get("label"), row.get("name"), row.get("voxels"), row.get(key), row.get("mean_intensity")]
            for row in labels]
    total = sum(float(row.get(key) or 0.0) for row in labels)
    html = table(["label", "name", "voxels" if not area else "pixels", f"{'area' if area else 'volume'} ({unit})",
                  "mean intensity"], rows, numeric=(2, 3, 4))
    thumbnail = None
    image = input_image(case, problems) if pictures or thumbnails else None
    output = case.path(case.record.get("output"))
    if image is not None and output is None:
        problems.append("the label map is not where the record says: no overlay")
    elif image is not None and output is not None:
        try:
            label_map = load(output).array
            if pictures:
                html += "".join(figure(figures.data_uri(png), name)
                                for name, png in figures.label_views(image.array, image.affine, label_map))
            if thumbnails:
                thumbnail = figures.data_uri(figures.label_views(image.array, image.affine, label_map,
                                                                 figures.THUMB_PIXELS, ("axial",))[0][1])
        except Exception as error:
            problems.append(f"the overlay cannot be drawn ({first_line(error)})")
    return Section(html, thumbnail, f"{number(total)} {unit} in {len(labels)} label(s)", total)


def classification(case: ReportCase, problems: list[str], pictures: bool, thumbnails: bool) -> Section:
    probabilities = case.record.get("probabilities") or {}
    predicted = case.record.get("predicted")
    rows = sorted(([name, float(p)] for name, p in probabilities.items()), key=lambda row: -row[1])
    bars = [[name, p, f'<span style="display:inline-block;height:10px;width:{round(p * 200)}px;'
             f'background:#3b6fb6"></span>'] for name, p in rows]
    html = f"<p>predicted: <b>{esc(predicted)}</b></p>" + table(["class", "probability", ""], bars, numeric=(1,),
                                                                 raw=(2,))
    thumbnail = None
    for value in case.record.get("explanation") or []:
        path = case.path(value)
        if path is not None and path.suffix == ".png":
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            if pictures:
                html += figure(uri, "Grad-CAM overlay (as written by mitk classify --explain)", width=384)
            thumbnail = uri
        elif path is None:
            problems.append(f"the Grad-CAM file {Path(str(value)).name} is missing")
    if thumbnail is None and thumbnails:
        image = input_image(case, problems)
        if image is not None:
            thumbnail = figures.data_uri(figures.label_views(image.array, image.affine, None, figures.THUMB_PIXELS,
                                                             ("axial",))[0][1])
    top = rows[0][1] if rows else None
    return Section(html, thumbnail, f"{predicted} ({number(top, 3)})" if rows else str(predicted), top)


def detection(case: ReportCase, problems: list[str], pictures: bool, thumbnails: bool) -> Section:
    boxes = sorted((b for b in case.record.get("boxes") or [] if isinstance(b, dict)),
                   key=lambda b: -float(b.get("score") or 0))
    system = case.record.get("coordinate_system", "RAS")
    image = input_image(case, problems) if (pictures or thumbnails) and boxes else None
    rows = []
    for index, box in enumerate(boxes):
        crop = ""
        if image is not None and pictures and index < MAX_BOX_CROPS:
            try:
                crop = figure(figures.data_uri(figures.box_crop(image.array, image.affine, box["box_voxel"])),
                              f"box {index + 1}, axial slice through its centre", width=120)
            except Exception as error:
                problems.append(f"box {index + 1}: no crop ({first_line(error)})")
        centre = ", ".join(number(v, 1) for v in box.get("centre_world_mm") or [])
        size = " × ".join(number(v, 1) for v in box.get("size_mm") or [])
        rows.append([index + 1, box.get("name", box.get("label")), float(box.get("score") or 0), centre, size, crop])
    html = (f"<p>{len(boxes)} box(es); world coordinates in mm ({esc(system)})"
            f"{'; crops of the first ' + str(MAX_BOX_CROPS) if len(boxes) > MAX_BOX_CROPS else ''}.</p>"
            + table(["#", "finding", "score", f"centre ({system}, mm)", "size (mm)", "crop"], rows,
                    numeric=(0, 2), raw=(5,)))
    thumbnail = None
    if thumbnails and image is not None and boxes:
        with_box = np.zeros(figures.volume_of(image.array).shape, np.int64)
        i0, j0, k0, i1, j1, k1 = (round(v) for v in boxes[0]["box_voxel"])
        with_box[max(i0, 0):max(i1, i0 + 1), max(j0, 0):max(j1, j0 + 1), max(k0, 0):max(k1, k0 + 1)] = 1
        thumbnail = figures.data_uri(figures.label_views(image.array, image.affine, with_box, figures.THUMB_PIXELS,
                                                         ("axial",))[0][1])
    top = float(boxes[0].get("score") or 0) if boxes else None
    return Section(html, thumbnail, f"{len(boxes)} box(es)" + (f", top {top:.2f}" if top is not None else ""),
                   float(len(boxes)))


QUALITY = ("metric", "transform", "similarity_identity", "similarity_initial", "similarity_final", "determinant",
           "scales", "init", "seconds")


def registration(case: ReportCase, problems: list[str], pictures: bool, thumbnails: bool) -> Section:
    quality = case.record.get("registration") or {}
    rows = [[name, quality[name]] for name in QUALITY if name in quality]
    rows += [[name, value] for name, value in quality.items() if name not in QUALITY and name != "warnings"
             and isinstance(value, (int, float, str))]
    html = table(["quality figure", "value"], [[n, number(v, 4) if isinstance(v, float) else esc(v)]
                                              for n, v in rows], raw=(1,))
    for warning in quality.get("warnings") or []:
        html += f'<div class="problem">registration warning: {esc(warning)}</div>'
    measured = case.record.get("sr_figures")
    if isinstance(measured, dict) and measured:  # mitk register --dicom-sr: the figures of its SR
        html += "<p class='small'>measured by mitk (in the DICOM SR):</p>" + table(
            ["figure", "value"], [[esc(k), number(v, 4) if isinstance(v, float) else esc(v)]
                                  for k, v in measured.items()], raw=(1,))
    matrix = case.record.get("matrix_ras")
    if matrix:
        html += "<details><summary>transform (RAS, moving from fixed)</summary><pre>" + esc(
            "\n".join("  ".join(f"{v: .5f}" for v in row) for row in matrix)) + "</pre></details>"
    thumbnail = None
    fixed_path = case.path(options(case).get("fixed_path"))
    warped_path = case.path(case.record.get("output"))
    if (pictures or thumbnails) and (fixed_path is None or warped_path is None):
        problems.append("the fixed image or the warped output is not where the record says: no overlay")
    elif pictures or thumbnails:
        try:
            fixed, warped = load(fixed_path), load(warped_path)  # type: ignore[arg-type]
            views = figures.checkerboard(fixed.array, warped.array, fixed.affine)
            if pictures:
                html += "".join(figure(figures.data_uri(png), name) for name, png in views)
            if thumbnails and views:
                thumbnail = figures.data_uri(views[0][1])
        except Exception as error:
            problems.append(f"the overlay cannot be drawn ({first_line(error)})")
    final = quality.get("similarity_final")
    return Section(html, thumbnail, f"{quality.get('metric', '')} {number(final, 3)}" if final is not None else "",
                   final if isinstance(final, (int, float)) else None)
