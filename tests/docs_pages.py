"""Read the shell commands a docs page shows, and run them in order in one subprocess (tests/docs_driver.py).

A command is a ``$ …`` line inside a fenced block (continued with a trailing backslash); the lines under it up
to the next command or the end of the block are its transcript (what the page says it prints).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "docs_driver.py"
MARKED = re.compile(r"<!-- (?:docs-test: ([\w-]+)|([\w-]+):start) -->(.*?)<!-- (?:/docs-test|[\w-]+:end) -->",
                    re.DOTALL)


@dataclass
class Command:
    """One ``$`` line of a page: its text (continuations joined), line number, transcript and marked block."""

    page: str
    line: int
    text: str
    transcript: list[str] = field(default_factory=list)
    block: str | None = None


@dataclass
class Outcome:
    """What one command did: exit status and its output."""

    text: str
    code: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0


def fenced_blocks(text: str) -> list[tuple[int, int, list[str]]]:
    """``(offset, first line number, lines)`` of every fenced code block (a ``````` line opens and closes)."""
    blocks: list[tuple[int, int, list[str]]] = []
    offset, inside, opened = 0, False, (0, 0)
    body: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if line.strip().startswith("```"):
            if inside:
                blocks.append((opened[0], opened[1], body))
            inside, opened, body = not inside, (offset, number + 1), []
        elif inside:
            body.append(line.rstrip("\n"))
        offset += len(line)
    return blocks


def page_commands(page: Path, name: str | None = None) -> list[Command]:
    """Every ``$`` command of ``page`` in order, with the ``<!-- docs-test: X -->`` block it sits in, if any."""
    text = page.read_text(encoding="utf-8")
    name = name or page.name
    marked = [(m.start(), m.end(), m.group(1) or m.group(2)) for m in MARKED.finditer(text)]
    commands: list[Command] = []
    for offset, start_line, lines in fenced_blocks(text):
        current: Command | None = None
        index = 0
        while index < len(lines):
            line = lines[index].strip()
            if line.startswith("$ "):
                number = start_line + index
                joined = line[2:]
                while joined.endswith("\\") and index + 1 < len(lines):
                    index += 1
                    joined = joined[:-1].rstrip() + " " + lines[index].strip()
                block = next((label for begin, end, label in marked if begin <= offset < end), None)
                current = Command(name, number, joined, block=block)
                commands.append(current)
            elif current is not None and line:
                current.transcript.append(line)
            index += 1
    return commands


def run_pages(pages: list[tuple[list[str], Path]], timeout: float = 600.0,
              env: dict[str, str] | None = None) -> list[list[Outcome]]:
    """Run each page's command lines in order in its folder, all pages in one Python process
    (tests/docs_driver.py: ``mitk`` runs in-process, so torch and MONAI are imported once, not once per page or
    command); a page stops at its first failing command. Returns the outcomes of each page."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400", "MPLBACKEND": "Agg", **(env or {})}
    paths = [str(ROOT), str(ROOT / "plugins"), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    request = [{"folder": str(folder), "lines": lines} for lines, folder in pages]
    result = subprocess.run([sys.executable, str(DRIVER)], input=json.dumps(request), capture_output=True,
                            text=True, timeout=timeout, env=environment)
    if result.returncode != 0:
        raise AssertionError(f"the docs driver failed (exit {result.returncode}): {result.stderr[-3000:]}")
    return [[Outcome(**item) for item in page] for page in json.loads(result.stdout)]


@dataclass(frozen=True)
class PageRun:
    """How a page's commands are run and checked.

    ``stage`` puts the user's own files that the page takes as given (real images from tests/data) into the
    folder; ``before`` maps the start of a page command to shell lines run just before it (files a user would
    have made between the page's commands); ``skip`` maps the start of a command to the reason it is not run
    here; ``files`` must exist afterwards; ``printed`` are transcript lines of the page that must also be
    printed, verbatim, by the command they stand under; ``check(folder)`` asserts what else the page promises.
    """

    stage: Callable[[Path], None] | None = None
    before: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    printed: tuple[str, ...] = ()
    timeout: float = 300.0
    check: Callable[[Path], None] | None = None


def bare(text: str) -> str:
    """The command without leading ``VAR=value`` words: ``OMP_NUM_THREADS=1 torchrun …`` is a torchrun."""
    return re.sub(r"^(\w+=\S*\s+)+", "", text)


def skip_reason(command: Command, skip: dict[str, str], covered_blocks: set[str]) -> str | None:
    """Why ``command`` is not run by this harness, or ``None``."""
    if command.block is not None and command.block in covered_blocks:
        return f"block {command.block!r}: run by the test that reads that block"
    return next((reason for start, reason in skip.items() if bare(command.text).startswith(start)), None)


@dataclass
class PagePlan:
    """A page's commands to run (with the ``before`` lines put in) and the commands of the page among them."""

    page: Path
    run: PageRun
    folder: Path
    lines: list[str]
    shown: list[Command]


def plan_page(page: Path, run: PageRun, folder: Path, covered_blocks: Iterable[str] = (),
              never: dict[str, str] | None = None) -> PagePlan:
    """Check that the page still has the commands ``run`` names, stage the folder, and list what to run: every
    command not skipped (``run.skip``, ``never`` on any page, or in a block of ``covered_blocks``)."""
    commands = page_commands(page)
    for start in [*run.skip, *run.before]:
        assert any(bare(c.text).startswith(start) for c in commands), f"{page.name}: no command starts {start!r}"
    for line in run.printed:
        assert any(line in c.transcript for c in commands), f"{page.name} does not show {line!r}"
    if run.stage is not None:
        run.stage(folder)
    lines: list[str] = []
    shown: list[Command] = []
    pending = dict(run.before)
    for command in commands:
        if skip_reason(command, {**(never or {}), **run.skip}, set(covered_blocks)) is not None:
            continue
        for start in [start for start in pending if command.text.startswith(start)][:1]:
            lines.extend(pending.pop(start))  # before the first command that starts so
        lines.append(command.text)
        shown.append(command)
    return PagePlan(page, run, folder, lines, shown)


def page_failures(plan: PagePlan, outcomes: list[Outcome]) -> list[str]:
    """What went wrong on one page: a command that failed or never ran, a promised file or line missing."""
    name = plan.page.name
    for outcome in outcomes:
        if outcome.code != 0:
            return [f"{name}: `{outcome.text}` exited {outcome.code}:\n{outcome.stderr[-3000:]}"]
    if len(outcomes) != len(plan.lines):
        return [f"{name}: ran {len(outcomes)} of {len(plan.lines)} commands"]
    failures = [f"{name}: the page says {file} is written; it is not" for file in plan.run.files
                if not (plan.folder / file).exists()]
    by_text = {o.text: o for o in outcomes}
    for line in plan.run.printed:
        command = next(c for c in plan.shown if line in c.transcript)
        printed = by_text[command.text].stdout + by_text[command.text].stderr
        if line not in [row.strip() for row in printed.splitlines()]:
            failures.append(f"{name}: `{command.text}` did not print {line!r}:\n{printed[-2000:]}")
    if plan.run.check is not None and not failures:
        try:
            plan.run.check(plan.folder)
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    return failures


def check_pages(plans: list[PagePlan], timeout: float = 600.0) -> list[list[Outcome]]:
    """Run the planned pages (one process) and assert that each ran as its page says."""
    runnable = [plan for plan in plans if plan.lines]  # a page whose every command is skipped runs nothing
    results = run_pages([(plan.lines, plan.folder) for plan in runnable], timeout)
    failures = [failure for plan, outcomes in zip(runnable, results, strict=True)
                for failure in page_failures(plan, outcomes)]
    assert not failures, "\n\n".join(failures)
    return results


def check_page(page: Path, run: PageRun, folder: Path, covered_blocks: Iterable[str] = (),
               never: dict[str, str] | None = None) -> list[Outcome]:
    """:func:`plan_page` and :func:`check_pages` for one page; returns its outcomes."""
    plan = plan_page(page, run, folder, covered_blocks, never)
    results = check_pages([plan], run.timeout)
    return results[0] if results else []


def unrun_pages(docs: Path, pages: Iterable[str], elsewhere: Iterable[str]) -> list[str]:
    """Pages of ``docs`` that show commands yet are neither in ``pages`` nor read by another test."""
    known = {*pages, *elsewhere}
    return sorted(p.name for p in docs.glob("*.md") if page_commands(p) and p.name not in known)
