"""The batch contract: one record per input, one bad input never stops the others, honest exit codes."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mitk.errors import MitkError, OutputExistsError
from mitk.io.inputs import Case

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_PARTIAL = 3


@dataclass
class CaseRecord:
    """What happened to one input."""

    input: str
    output: str | None = None
    status: str = "ok"
    """``ok``, ``skipped`` (output existed and ``--skip-existing`` was given) or ``failed``."""
    error: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        details = record.pop("details")
        record.update(details)
        return record


@dataclass
class CaseOutcome:
    """What a case processor returns: the output written and any task details for the record."""

    output: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


CaseJob = Callable[[Case], CaseOutcome]
"""What a task's ``make_job`` returns (see :attr:`mitk.taskspecs.TaskSpec.job`): one case in, its outcome out."""


@dataclass
class BatchReport:
    records: list[CaseRecord] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.records)

    @property
    def exit_code(self) -> int:
        """0 when all succeeded, 1 when all failed, 3 when some failed."""
        if not self.failed:
            return EXIT_OK
        return EXIT_FAILURE if self.failed == len(self.records) else EXIT_PARTIAL

    def summary(self) -> dict[str, int]:
        return {
            "total": len(self.records),
            "ok": sum(r.status == "ok" for r in self.records),
            "skipped": sum(r.status == "skipped" for r in self.records),
            "failed": self.failed,
        }


def run_batch(
    cases: Iterable[Case],
    process: CaseJob,
    *,
    on_record: Callable[[CaseRecord], None] | None = None,
    manifest: IO[str] | None = None,
    debug: bool = False,
    log_error: Callable[[str], None] | None = None,
) -> BatchReport:
    """Run ``process`` on every case and collect records.

    Expected failures (:class:`MitkError`) become a one-line error on the record; anything else too, as
    ``internal error``, with the traceback logged only when ``debug``. ``KeyboardInterrupt`` stops the
    batch (the writers have already removed any partial file).
    """
    report = BatchReport()
    for case in cases:
        started = time.perf_counter()
        record = CaseRecord(input=str(case.path))
        try:
            outcome = process(case)
            record.output = str(outcome.output) if outcome.output is not None else None
            record.details = outcome.details
            record.status = "skipped" if outcome.skipped else "ok"
        except OutputExistsError as error:
            record.status, record.error = "failed", str(error)
            record.output = error.path
        except MitkError as error:
            record.status, record.error = "failed", _with_path(str(error), case.path)
            if debug and log_error is not None:
                log_error(traceback.format_exc())
        except Exception as error:
            record.status = "failed"
            record.error = _with_path(f"internal error: {type(error).__name__}: {error}", case.path)
            if debug and log_error is not None:
                log_error(traceback.format_exc())
        record.seconds = round(time.perf_counter() - started, 3)
        report.records.append(record)
        if manifest is not None:
            manifest.write(json.dumps(record.to_dict()) + "\n")
            manifest.flush()
        if on_record is not None:
            on_record(record)
    return report


def _with_path(message: str, path: Path) -> str:
    message = message.splitlines()[0] if message else "failed"
    return message if str(path) in message else f"{path}: {message}"
