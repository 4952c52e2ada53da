"""``mitk manifest merge``: combine the manifests of a sharded batch and report what is missing or failed.

A fast command: it reads JSON lines and never imports torch or monai.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import JsonOption, OverwriteOption, emit_json, plain, plain_table, say

app = typer.Typer(help="Work with batch manifests (--manifest files).", no_args_is_help=True)

LISTED = 20
"""Failed and missing cases listed for a human; ``--json`` lists them all."""


@app.command("merge", epilog="Exit status: 0 every shard ran and every case is done; 1 no case succeeded; "
                             "2 usage error; 3 some case failed or is missing.")
def merge(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests of the shards (a shard's reruns appended "
                                                         "to its file are read in order).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the merged manifest here: a "
                                                "header, then the latest record of each case.")] = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Combine shard manifests: shards seen and missing, cases ok, skipped, failed and missing.

    The latest record of a case wins; skipped after ok (a rerun with --skip-existing) counts as ok.
    """
    from mitk.io.atomic import InputFiles, check_output, write_text_atomic
    from mitk.runner.shards import merge_manifests

    paths = list(dict.fromkeys(manifests))
    inputs = InputFiles.of(paths)
    if output is not None:  # before reading anything
        check_output(output, overwrite, inputs)
    report = merge_manifests(paths)
    if output is not None:
        text = "".join(json.dumps(line) + "\n" for line in report.lines())
        write_text_atomic(output, text, overwrite=overwrite, inputs=inputs)
    summary = report.summary()
    exit_code = report.exit_code
    if as_json:
        emit_json({"task": report.task, "shards": report.shards, "shards_seen": report.seen,
                   "shards_missing": report.missing_shards, "complete": report.complete, "summary": summary,
                   "by_shard": report.by_shard(),
                   "failed": [_entry(case) for case in report.cases if case.status == "failed"],
                   "missing": [_entry(case) for case in report.cases if case.status == "missing"],
                   "damaged_lines": report.damaged_lines, "output": str(output) if output else None,
                   "exit_code": exit_code})
    else:
        _print_report(report)
    if report.damaged_lines:
        say(f"mitk: warning: {len(report.damaged_lines)} damaged line(s) skipped (a run killed while writing?), "
            f"first at {report.damaged_lines[0]}")
    seen = "" if report.shards is None else f"{len(report.seen)} of {report.shards} shards, "
    say(f"merged {len(paths)} manifest(s): {seen}{summary['cases']} cases: {summary['ok']} ok, "
        f"{summary['skipped']} skipped, {summary['failed']} failed, {summary['missing']} missing"
        + (f", {report.unaccounted} more in shards that never ran" if report.unaccounted else "")
        + (f" → {output}" if output else ""))
    rerun = report.shards_to_rerun()
    if rerun:
        say(f"to finish, rerun shard(s) {', '.join(map(str, rerun))} of {report.shards} with the same "
            "arguments and --skip-existing")
    raise typer.Exit(exit_code)


def _entry(case: Any) -> dict[str, Any]:
    error = case.record.get("error") if case.record else None
    return {"input": case.input, "shard": case.shard, "error": error}


def _print_report(report: Any) -> None:
    rows = report.by_shard()
    for row in rows:
        if not row["ran"]:  # what it holds is unknown
            row.update({column: None for column in row if column != "shard"}, ran="NO")
        else:
            row["ran"] = "yes"
    columns = ["shard", "ran", "cases", "ok", "skipped", "failed", "missing"]
    lines = [plain_table(rows, columns)] if rows else []
    for status in ("failed", "missing"):
        cases = [case for case in report.cases if case.status == status]
        if cases:
            lines.append(f"\n{status} ({len(cases)}):")
        for case in cases[:LISTED]:
            shard = "" if case.shard is None else f"[shard {case.shard}] "
            error = case.record.get("error") if case.record else None
            lines.append(f"  {shard}{plain(error or case.input)}")
        if len(cases) > LISTED:
            lines.append(f"  ... and {len(cases) - LISTED} more (--json lists them all)")
    if lines:
        typer.echo("\n".join(lines))

