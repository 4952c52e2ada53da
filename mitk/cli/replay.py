"""``mitk replay``: run the recorded cases of a manifest again and say, per case, whether the outputs are the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitk.cli.common import JsonOption, emit_json, message_text, stderr_console


def replay(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="The --manifest file of a finished batch.")],
    case: Annotated[list[str] | None, typer.Option(
        "--case", help="Replay only this input (its file name, or its path as recorded). Repeatable.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Run on this device instead of the recorded "
                                                                 "one.")] = None,
    keep: Annotated[Path | None, typer.Option("--keep", help="Keep the replayed outputs in this (new or empty) "
                                                              "folder.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-run recorded cases from their records alone; refuse a case whose input or weights changed (sha256).
    Exit status: 0 every replayed case identical (cases that failed in the recorded run are not replayed),
    1 otherwise."""
    import tempfile

    from mitk.errors import InputError, UsageError
    from mitk.report.records import read_manifest
    from mitk.report.replay import Replayed, replay_case

    if not manifest.is_file():
        raise InputError("no such manifest", manifest)
    cases, problems = read_manifest(manifest)
    if case:
        wanted = set(case)
        cases = [c for c in cases if c.name in wanted or c.input in wanted]
        if not cases:
            raise UsageError(f"no recorded case matches --case {', '.join(case)}")
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise UsageError(f"--keep {keep}: the folder is not empty")
    console = stderr_console()
    results: list[Replayed] = []
    models: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="mitk-replay-") as scratch:
        root = keep if keep is not None else Path(scratch)
        for number, item in enumerate(cases, 1):
            if not item.record or item.status == "damaged":
                results.append(Replayed(item.name, "refused", item.problems[0] if item.problems else "no record"))
            else:
                workdir = root / f"case-{number:05d}"
                workdir.mkdir(parents=True)
                results.append(replay_case(item.record, item.path, workdir, device, models))
            done = results[-1]
            text = f"{item.input or item.source}: {done.status}" + (f" ({done.reason})" if done.reason else "")
            console.print(message_text(text, label=None))
            for difference in done.differences[:10]:
                console.print(message_text(f"  {difference}", label=None))
    counts = {status: sum(r.status == status for r in results)
              for status in ("identical", "different", "refused", "failed", "not replayed")}
    if as_json:
        emit_json({"manifest": str(manifest), "summary": counts, "cases": [r.to_dict() for r in results],
                   "problems": problems})
    console.print(message_text("replay: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)}",
                               label=None))
    compared = len(results) - counts["not replayed"]
    raise typer.Exit(0 if compared and counts["identical"] == compared else 1)
