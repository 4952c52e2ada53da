"""Run the shell command lines of docs pages as a shell would: stdin is a JSON list of ``{"folder", "lines"}``, one
per page; each page's lines run in order in its folder and stop after the first that fails. Prints one JSON list
per page of ``{"text", "code", "stdout", "stderr", "cpu_seconds"}`` (this process's CPU time per command).

``mitk …`` (and ``python -m mitk …``) runs in this process, so torch and MONAI are imported once for all pages;
other programs run as subprocesses. Supported shell: ``VAR=value`` prefixes, ``> file`` redirection,
``*``/``?`` globs (a glob with no match stays as written, as in bash), ``#`` comments.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from helpers import invoke  # this script's folder (tests/) is first on sys.path

TIMEOUT = 300.0


def words(line: str) -> tuple[dict[str, str], list[str], str | None]:
    """Environment assignments, the argument vector and the file of a ``>`` redirection."""
    tokens = shlex.split(line, comments=True)
    env: dict[str, str] = {}
    while tokens and "=" in tokens[0] and tokens[0].split("=", 1)[0].isidentifier():
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    redirect = None
    if ">" in tokens:
        at = tokens.index(">")
        redirect = tokens[at + 1]
        tokens = tokens[:at] + tokens[at + 2:]
    argv: list[str] = []
    for token in tokens:
        matches = sorted(glob.glob(token)) if any(c in token for c in "*?") else []
        argv.extend(matches or [token])
    return env, argv, redirect


def run_line(line: str) -> dict[str, object]:
    started = time.process_time()
    env, argv, redirect = words(line)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        if argv[:1] == ["mitk"] or argv[:3] == ["python", "-m", "mitk"]:
            code, out, err = invoke(argv[1:] if argv[0] == "mitk" else argv[3:])
        else:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
            code, out, err = done.returncode, done.stdout, done.stderr
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if redirect is not None:
        Path(redirect).write_text(out, encoding="utf-8")
    return {"text": line, "code": code, "stdout": out, "stderr": err, "cpu_seconds": time.process_time() - started}


def main() -> None:
    results = []
    for page in json.loads(sys.stdin.read()):
        os.chdir(page["folder"])
        outcomes = []
        for line in page["lines"]:
            outcome = run_line(line)
            outcomes.append(outcome)
            if outcome["code"] != 0:
                break
        results.append(outcomes)
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
