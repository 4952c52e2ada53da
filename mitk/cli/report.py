"""``mitk report``: one self-contained HTML report over a batch's outputs (a folder, or its manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, say


def report(
    sources: Annotated[list[Path], typer.Argument(metavar="OUTPUT_DIR|MANIFEST...",
                                                  help="Output folders or manifests (.jsonl) of mitk batches.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The HTML file to write (default: "
                                                                        "report.html in the first folder).")] = None,
    evaluation: Annotated[list[Path] | None, typer.Option(
        "--evaluation", help="A folder (or file) of mitk evaluate outputs: tables and plots go in the report. "
                             "Repeatable.")] = None,
    per_case: Annotated[bool | None, typer.Option(
        "--per-case/--single-file", help="One HTML file per case, linked from a summary with thumbnails "
                                         "(default: above 50 cases).")] = None,
    title: Annotated[str | None, typer.Option("--title", help="The report's title.")] = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write a self-contained HTML report (summary, failures, warnings, provenance, a section per case)."""
    from mitk.report.build import build_report, default_output

    target = output if output is not None else default_output(sources[0])
    done = build_report(sources, target, evaluation=evaluation or [], per_case=per_case, overwrite=overwrite,
                        title=title)
    if as_json:
        emit_json({"report": str(done.path), "cases": done.cases, "records": done.records, "failed": done.failed,
                   "warnings": done.problems, "case_files": len(done.case_files)})
    say(f"report: {done.path} ({done.cases} case(s), {done.records} record(s), {done.failed} failed, "
        f"{done.problems} warning(s){f', {len(done.case_files)} case files' if done.case_files else ''})")
