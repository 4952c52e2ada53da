"""``mitk report``: the summary, the provenance of each run, a section per case, evaluation results; written as one
self-contained HTML file, or (large batches) a summary with thumbnails and one file per case beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mitk.errors import InputError, OutputExistsError, UsageError
from mitk.report import curves, figures
from mitk.report.page import document, esc, figure, table
from mitk.report.records import ReportCase, load_cases
from mitk.report.sections import Section, section

PER_CASE_ABOVE = 50
"""More cases than this: one file per case, linked from a summary with thumbnails (unless told otherwise)."""
MAX_EVALUATION_ROWS = 2000

PROVENANCE_ROWS = ("plugin", "plugin_version", "plugin_package", "plugin_package_version", "weights",
                   "device", "threads", "interop_threads", "seed")


@dataclass
class ReportResult:
    """What was written and what it says."""

    path: Path
    cases: int
    records: int
    failed: int
    problems: int
    case_files: list[Path] = field(default_factory=list)


@dataclass
class Group:
    """The records of one input (one per task run on it)."""

    title: str
    cases: list[ReportCase]
    sections: list[Section] = field(default_factory=list)


def group_cases(cases: Sequence[ReportCase]) -> list[Group]:
    groups: dict[str, Group] = {}
    for case in cases:
        provenance = case.provenance or {}
        key = str(provenance.get("input_path") or case.input or f"{case.source}#{id(case)}")
        if key not in groups:
            groups[key] = Group(case.name if case.input else case.source, [])
        groups[key].cases.append(case)
    return list(groups.values())


def check_target(output: Path, sources: Sequence[Path], overwrite: bool, case_folder: Path | None) -> None:
    for source in sources:
        if not source.exists():
            raise InputError("no such file or folder", source)
        if source.resolve() == output.resolve():
            raise UsageError(f"the report {output} would replace its own input; name another file")
    if output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"the report is HTML: name it .html, not {output.name}")
    if output.exists() and not overwrite:
        raise OutputExistsError("output exists already (pass --overwrite to replace it)", output)
    if case_folder is not None and case_folder.exists() and any(case_folder.iterdir()) and not overwrite:
        raise OutputExistsError("the per-case folder exists already (pass --overwrite to replace it)", case_folder)


def build_report(sources: Sequence[Path], output: Path, *, evaluation: Sequence[Path] = (),
                 per_case: bool | None = None, overwrite: bool = False, title: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ReportResult:
    """Write the report of the batches in ``sources`` (output folders or manifests) to ``output``."""
    from mitk.io.atomic import write_text_atomic

    sources = [Path(s) for s in sources]
    for source in sources:
        if not source.exists():
            raise InputError("no such file or folder", source)
    cases, source_problems, runs = load_cases(sources)
    groups = group_cases(cases)
    split = per_case if per_case is not None else len(groups) > PER_CASE_ABOVE
    case_folder = output.with_name(output.name.rsplit(".", 1)[0] + "_cases") if split else None
    check_target(output, [*sources, *evaluation], overwrite, case_folder)
    inputs = [p for s in sources for p in ([s] if s.is_file() else [])]
    case_files: list[Path] = []
    for number_, group in enumerate(groups, 1):
        group.sections = [section(case, pictures=True, thumbnails=split)
                          for case in group.cases]
        if split and case_folder is not None:
            target = case_folder / f"case-{number_:05d}.html"
            body = f'<p><a href="../{esc(output.name)}">← summary</a></p>' + group_html(group, number_)
            write_text_atomic(target, document(f"{group.title} — mitk report", body), overwrite=overwrite,
                              inputs=inputs)
            case_files.append(target)
            for part in group.sections:  # the summary keeps thumbnails only
                part.html = ""
        if progress is not None:
            progress(number_, len(groups))
    body = summary_html(title or "mitk report", groups, source_problems, runs, sources,
                        case_folder.name if case_folder is not None else None)
    if not split:
        body += "".join(group_html(group, n) for n, group in enumerate(groups, 1))
    body += evaluation_html(evaluation)
    write_text_atomic(output, document(title or "mitk report", body), overwrite=overwrite, inputs=inputs)
    failed = sum(case.status == "failed" for case in cases)
    warnings = sum(len(part.problems) for group in groups for part in group.sections) + len(source_problems)
    return ReportResult(output, len(groups), len(cases), failed, warnings, case_files)


def group_html(group: Group, number_: int) -> str:
    parts = [f'<section class="case" id="case-{number_}"><h2>Case {number_}: {esc(group.title)}</h2>']
    for case, part in zip(group.cases, group.sections, strict=True):
        parts.append(f"<h3>{esc(case.task)} <span class='{esc(case.status)}'>{esc(case.status)}</span> "
                     f"<span class='small'>record {esc(case.source)}"
                     f"{'; ' + esc(case.run) if case.run else ''}</span></h3>")
        if case.record.get("error"):
            parts.append(f'<div class="error">{esc(case.record.get("error"))}</div>')
        parts += [f'<div class="problem">{esc(problem)}</div>' for problem in part.problems]
        parts.append(part.html)
        digest = ((case.provenance or {}).get("input_digest") or {})
        if digest:
            parts.append(f"<p class='small'>input sha256 ({esc(digest.get('kind'))}): "
                         f"<code>{esc(digest.get('sha256'))}</code></p>")
    return "".join(parts) + "</section>"


def summary_html(title: str, groups: Sequence[Group], source_problems: Sequence[str],
                 runs: dict[str, dict[str, Any]], sources: Sequence[Path], case_folder: str | None) -> str:
    records = [(group, n, case, part) for n, group in enumerate(groups, 1)
               for case, part in zip(group.cases, group.sections, strict=True)]
    statuses: dict[str, int] = {}
    for _, _, case, _ in records:
        statuses[case.status] = statuses.get(case.status, 0) + 1
    counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    parts = [f"<h1>{esc(title)}</h1>",
             f"<p>{len(groups)} case(s), {len(records)} record(s): {esc(counts) or 'none'}. "
             f"Read from {esc(', '.join(s.name for s in sources))}.</p>"]
    failures = [(n, group, case) for group, n, case, _ in records if case.status == "failed"]
    if failures:
        parts.append("<h2>Failures</h2><ul>" + "".join(
            f"<li><a href='{link(n, case_folder)}'>{esc(group.title)}</a> ({esc(case.task)}): "
            f"<span class='failed'>{esc(case.record.get('error') or 'failed')}</span></li>"
            for n, group, case in failures) + "</ul>")
    warnings = [*(("", problem) for problem in source_problems),
                *((group.title, problem) for group, _, _, part in records for problem in part.problems)]
    warnings += [(group.title, f"registration: {w}") for group, _, case, _ in records
                 for w in (case.record.get("registration") or {}).get("warnings") or []]
    if warnings:
        parts.append(f"<h2>Warnings ({len(warnings)})</h2><ul>" + "".join(
            f"<li>{esc(where) + ': ' if where else ''}{esc(what)}</li>" for where, what in warnings[:500]) + "</ul>")
        if len(warnings) > 500:
            parts.append(f"<p>… and {len(warnings) - 500} more, in the case sections.</p>")
    parts.append(provenance_html(runs))
    thumbs = case_folder is not None
    rows = []
    for group, n, case, part in records:
        name = f"<a href='{link(n, case_folder)}'>{esc(group.title)}</a>"
        thumb = f'<img src="{part.thumbnail}" alt="thumbnail of case {n}">' if thumbs and part.thumbnail else ""
        rows.append([(name, group.title), case.task, (f"<span class='{esc(case.status)}'>{esc(case.status)}</span>",
                     case.status), (esc(part.key), part.key_value), case.record.get("seconds"), case.run or "",
                     len(part.problems), *( [thumb] if thumbs else [])])
    headers = ["case", "task", "status", "finding", "seconds", "run", "warnings", *(["thumbnail"] if thumbs else [])]
    parts.append("<h2>Cases</h2><p class='small'>Click a column heading to sort.</p>"
                 + table(headers, rows, sortable=True, numeric=(4, 6), raw=(0, 2, 3, 7), table_id="cases"))
    return "".join(parts)


def link(number_: int, case_folder: str | None) -> str:
    return f"{case_folder}/case-{number_:05d}.html" if case_folder else f"#case-{number_}"


def provenance_html(runs: dict[str, dict[str, Any]]) -> str:
    if not runs:
        return "<h2>Provenance</h2><p class='warn'>No record carries provenance.</p>"
    names = list(runs)
    rows: list[list[Any]] = [[key, *(runs[n].get(key) for n in names)] for key in PROVENANCE_ROWS]
    rows.append(["weights sha256", *(((runs[n].get("weights_digest") or {}).get("sha256")) for n in names)])
    for library in ("mitk", "torch", "monai", "numpy", "python", "platform"):
        rows.append([library, *((runs[n].get("versions") or {}).get(library) for n in names)])
    rows.append(["deterministic", *(json.dumps(runs[n].get("deterministic"), sort_keys=True) for n in names)])
    settings = "".join(f"<details><summary>{esc(n)}: settings after defaults, and the command's options</summary>"
                       f"<pre>{esc(json.dumps({'settings': runs[n].get('settings'), 'overrides': (runs[n].get('invocation') or {}).get('overrides'), 'options': (runs[n].get('invocation') or {}).get('options')}, indent=1, default=str))}</pre></details>"  # noqa: E501
                       for n in names)
    return "<h2>Provenance</h2><div class='wide'>" + table(["", *names], rows) + "</div>" + settings


def evaluation_html(folders: Sequence[Path]) -> str:
    """Every CSV (as a sortable table), PNG (plots) and JSON (summary) that ``mitk evaluate`` wrote."""
    import csv

    parts: list[str] = []
    for folder in folders:
        files = sorted(folder.rglob("*")) if folder.is_dir() else [folder]
        parts.append(f"<h2>Evaluation: {esc(folder.name)}</h2>")
        for path in files:
            try:
                if path.suffix == ".csv":
                    with path.open(newline="", encoding="utf-8") as handle:
                        rows = list(csv.reader(handle))
                    if rows:
                        body = rows[1:MAX_EVALUATION_ROWS + 1]
                        numeric = [i for i in range(len(rows[0])) if all(_is_number(r[i]) for r in body if i < len(r))]
                        values = [[float(c) if i in numeric and c else c for i, c in enumerate(r)] for r in body]
                        parts.append(f"<h3>{esc(path.name)}</h3>" + table(rows[0], values, sortable=True,
                                                                          numeric=numeric))
                        plot = curves.dice_plot(body, rows[0])
                        if plot is not None:
                            parts.append(f"<figure>{plot}<figcaption>per-case Dice of {esc(path.name)}"
                                         "</figcaption></figure>")
                elif path.suffix == ".png":
                    parts.append(figure(figures.data_uri(path.read_bytes()), path.name, width=480))
                elif path.suffix == ".json":
                    document = json.loads(path.read_text(encoding="utf-8"))
                    parts.append(f"<h3>{esc(path.name)}</h3>")
                    parts += [f"<figure>{svg}<figcaption>{esc(name)} of {esc(path.name)}</figcaption></figure>"
                              for name, svg in curves.curves_in(document)]
                    parts.append(f"<pre>{esc(json.dumps(document, indent=1)[:20000])}</pre>")
            except (OSError, ValueError, UnicodeDecodeError) as error:
                parts.append(f'<div class="problem">{esc(path.name)} cannot be read ({esc(error)})</div>')
    return "".join(parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == ""
    return True


def default_output(source: Path) -> Path:
    """``report.html`` in the output folder, or beside the manifest."""
    return (source if source.is_dir() else source.parent) / "report.html"

