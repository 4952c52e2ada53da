"""The batch contract: one record per input, one bad input never stops the others, honest exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
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
    interrupted: str | None = None
    """The signal that stopped the batch (``SIGINT``, ``SIGTERM``), or None when it ran to the end."""
    not_done: list[str] = field(default_factory=list)
    """Inputs not processed because the batch was interrupted (the case in progress was dropped)."""

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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a command cleanly (SIGKILL cannot be caught; its temporary files are cleaned later)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command; ``report`` holds the cases a batch finished before it."""

    def __init__(self, signum: int = signal.SIGINT, report: BatchReport | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.report = report

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class _SignalLatch:
    """Turns the first SIGINT/SIGTERM into :class:`Interrupted`, or holds it while a record is being kept."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.holding = False
        self.delivered = False
        """Whether :class:`Interrupted` was raised already: the records an executor still hands over while it
        stops (cases its workers finished) are then kept, not cut off after the first."""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping: a second signal must not break the clean-up of the first
        self.received = signum
        if not self.holding:
            self.delivered = True
            raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Finish the enclosed steps, then raise any signal that arrived meanwhile."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.received is not None and not self.delivered:
            self.delivered = True
            raise Interrupted(self.received)


@contextlib.contextmanager
def stop_on_signals(handler: Callable[[int, FrameType | None], None] | None = None) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM raise :class:`Interrupted` (or call ``handler``); restored after.

    A signal ignored on entry stays ignored; outside the main thread signals cannot be caught, and nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    # A shell starts background jobs with SIGINT ignored (Ctrl-C is for the foreground job): keep it so.
    previous = {number: signal.signal(number, handler or raise_interrupted) for number in STOP_SIGNALS
                if signal.getsignal(number) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Finish the enclosed steps (files that belong together), then act on a SIGINT/SIGTERM that arrived
    meanwhile as the handler in place before would have (raise :class:`Interrupted`, ``KeyboardInterrupt``, or
    end the process)."""
    latch = _SignalLatch()
    latch.holding = True
    with stop_on_signals(latch):
        yield
    if latch.received is not None:
        signal.raise_signal(latch.received)


def with_provenance(job: CaseJob, model: Any, task: str, invocation: dict[str, Any] | None = None) -> CaseJob:
    """``job`` whose records carry the case's :mod:`mitk.provenance` (input digest, plugin, versions, settings,
    weights digest, …): in the outcome's details, and in any record file the job writes meanwhile. A skipped case
    gets none: its output came from an earlier run. ``invocation`` (what the command asked for: plugin, weights,
    ``--set`` values, the job's options and other inputs) is kept as it is, with the other inputs' digests, so that
    ``mitk replay`` can run the case again."""
    from mitk.plugin_manager import get_registry
    from mitk.provenance import PROVENANCE_KEY, case_provenance, input_digest, recording, run_provenance

    distribution = None
    with contextlib.suppress(Exception):
        distribution = get_registry().get(model.name).distribution
    run = run_provenance(model, task, distribution)
    if invocation is not None:
        digests = {}
        for path in invocation.get("also_inputs", ()):
            with contextlib.suppress(OSError):
                digests[path] = input_digest(path)
        run["invocation"] = {**invocation, "also_input_digests": digests}

    def process(case: Case) -> CaseOutcome:
        provenance = case_provenance(run, case.path)
        try:
            with recording(provenance):
                outcome = job(case)
        except BaseException as error:  # a failed case's record carries it too (see run_case)
            with contextlib.suppress(AttributeError, TypeError):
                setattr(error, FAILED_PROVENANCE, provenance)
            raise
        if not outcome.skipped:
            outcome.details.setdefault(PROVENANCE_KEY, provenance)
        return outcome

    return process


FAILED_PROVENANCE = "mitk_provenance"
"""Attribute under which :func:`with_provenance` hands a failed case's provenance to :func:`run_case`."""


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

    Expected failures (:class:`MitkError`) and ordinary OS conditions (disk full, read-only, permissions,
    out of memory) become a one-line error on the record; anything else too, as ``internal error``, with the
    traceback logged only when ``debug``. SIGINT or SIGTERM (or ``KeyboardInterrupt``) drop the current case
    (its writers remove their temporary files) and raise :class:`Interrupted` carrying the report so far.
    """
    pending = list(cases)
    records = (run_case(case, process, debug, log_error) for case in pending)
    return keep_records(pending, records, on_record=on_record, manifest=manifest)


TRACEBACK_KEY = "mitk_traceback"
"""Record detail under which a case run in another process returns its traceback (``--debug``); taken out by
:func:`keep_records`."""


def keep_records(
    cases: Iterable[Case],
    records: Iterator[CaseRecord],
    *,
    on_record: Callable[[CaseRecord], None] | None = None,
    manifest: IO[str] | None = None,
    log_error: Callable[[str], None] | None = None,
) -> BatchReport:
    """Keep the records an executor yields for ``cases`` (one each, in any order): in the report, the
    manifest and through ``on_record``, each one whole. A traceback that came with a record (a case run in
    another process under ``--debug``) goes to ``log_error``, never into the report or the manifest.

    SIGINT or SIGTERM stop the iteration: ``records`` is closed (a generator's ``finally`` cancels the work it
    sent out), and :class:`Interrupted` carries the report so far, with the inputs that have no record as
    ``not_done``.
    """
    pending = list(cases)
    report = BatchReport()
    latch = _SignalLatch()
    stopped: int | None = None
    with stop_on_signals(latch):
        try:
            for record in records:
                with latch.held():  # a record is kept whole: in the report, the manifest and on the screen
                    sent = record.details.pop(TRACEBACK_KEY, None)
                    if sent and log_error is not None:
                        log_error(str(sent))
                    report.records.append(record)
                    if manifest is not None:
                        manifest.write(json.dumps(record.to_dict()) + "\n")
                        manifest.flush()
                    if on_record is not None:
                        on_record(record)
        except KeyboardInterrupt as interrupt:
            stopped = interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT
            latch.received = latch.received or stopped  # a second signal must not break the clean-up
            close = getattr(records, "close", None)
            if close is not None:
                close()
    if stopped is not None:
        report.interrupted = signal.Signals(stopped).name
        done = Counter(record.input for record in report.records)
        for case in pending:
            if done[str(case.path)] > 0:
                done[str(case.path)] -= 1
            else:
                report.not_done.append(str(case.path))
        raise Interrupted(stopped, report) from None
    return report


def run_case(case: Case, process: Callable[[Case], CaseOutcome], debug: bool,
             log_error: Callable[[str], None] | None) -> CaseRecord:
    """Run ``process`` on one case: its record, never an exception (except :class:`Interrupted`)."""
    started = time.perf_counter()
    record = CaseRecord(input=str(case.path))
    try:
        try:
            outcome = process(case)
        except BaseException as error:  # the record of a failed case keeps the provenance of its attempt
            provenance = getattr(error, FAILED_PROVENANCE, None)
            if isinstance(provenance, dict):
                from mitk.provenance import PROVENANCE_KEY

                record.details = {PROVENANCE_KEY: provenance}
            raise
        record.output = str(outcome.output) if outcome.output is not None else None
        record.details = outcome.details
        record.status = "skipped" if outcome.skipped else "ok"
    except OutputExistsError as error:
        record.status, record.error = "failed", str(error)
        record.output = error.path
    except Interrupted:
        raise
    except (SystemExit, KeyboardInterrupt) as error:  # plugin code: a real signal arrives as Interrupted
        record.status = "failed"
        record.error = _with_path(f"plugin error: {type(error).__name__} raised while processing the case "
                                  "(a plugin must not end the process)", case.path)
        if debug and log_error is not None:
            log_error(traceback.format_exc())
    except (MitkError, OSError, MemoryError) as error:
        record.status, record.error = "failed", _with_path(describe_error(error), case.path, error)
        if debug and log_error is not None:
            log_error(traceback.format_exc())
    except Exception as error:
        record.status = "failed"
        record.error = _with_path(failure_text(error), case.path)
        if debug and log_error is not None:
            log_error(traceback.format_exc())
    record.seconds = round(time.perf_counter() - started, 3)
    return record


MESSAGE_LIMIT = 300
"""Characters kept of a library's message: the first line of a CUDA or pluggy error can run long."""


def describe_error(error: BaseException) -> str:
    """One line for a user: mitk's own message, an OS condition with the file it concerns, running out of memory
    (``not enough memory for …``), or the first line of a library's message (MONAI's "applying transform"
    wrapper is replaced by the error it wraps)."""
    if isinstance(error, MitkError):
        return _first_line(str(error))
    memory = describe_out_of_memory(error)
    if memory is not None:
        return memory
    if isinstance(error, OSError):
        reason = error.strerror or _first_line(str(error)) or type(error).__name__
        names = [name for name in (error.filename, error.filename2) if name is not None]
        return ": ".join([*map(os.fsdecode, names), reason]) if names else reason
    if _too_deep(error):
        return "the input is nested too deeply to read (" + _first_line(str(error))[:MESSAGE_LIMIT] + ")"
    while (isinstance(error, RuntimeError) and str(error).startswith("applying transform")
           and error.__cause__ is not None):
        error = error.__cause__
    if is_ordinary(error):
        return describe_error(error)
    message = _first_line(str(error))
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def is_ordinary(error: BaseException) -> bool:
    """Whether ``error`` is an ordinary condition (mitk's own, the OS's, running out of memory, an input nested
    too deeply to parse) rather than a bug, which is reported as ``internal error``."""
    while (isinstance(error, RuntimeError) and str(error).startswith("applying transform")
           and error.__cause__ is not None):
        error = error.__cause__
    return (isinstance(error, (MitkError, OSError)) or describe_out_of_memory(error) is not None
            or _too_deep(error))


def failure_text(error: BaseException) -> str:
    """:func:`describe_error`, marked ``internal error:`` unless the error is ordinary (:func:`is_ordinary`)."""
    return describe_error(error) if is_ordinary(error) else f"internal error: {describe_error(error)}"


_NUMPY_OOM = re.compile(r"Unable to allocate (?P<size>[\d.]+ \w+) for an array with shape (?P<shape>\(.*?\)) "
                        r"and data type (?P<dtype>\w+)")
_TORCH_OOM = re.compile(r"(?:not enough memory|can't allocate memory): you tried to allocate (?P<bytes>\d+) bytes")
_CUDA_OOM = re.compile(r"out of memory\. Tried to allocate (?P<size>[\d.]+ \w+)")


def describe_out_of_memory(error: BaseException) -> str | None:
    """``not enough memory for …`` for numpy's and Python's ``MemoryError``, torch's CPU allocator failure and
    CUDA's out-of-memory error; None for anything else."""
    from mitk.io.limits import format_bytes

    message = _first_line(str(error))
    if isinstance(error, MemoryError):
        found = _NUMPY_OOM.search(message)
        if found:
            return (f"not enough memory for an array of {found['size']} (shape {found['shape']}, "
                    f"{found['dtype']})")
        return "not enough memory" + (f" for this case ({message})" if message else " for this case")
    if not isinstance(error, RuntimeError):
        return None
    found = _TORCH_OOM.search(message)
    if found:
        return f"not enough memory for {format_bytes(int(found['bytes']))} (torch could not allocate it)"
    if type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in message:
        found = _CUDA_OOM.search(message)
        return f"not enough GPU memory for {found['size']}" if found else "not enough GPU memory for this case"
    return None


def _too_deep(error: BaseException) -> bool:
    """A ``RecursionError`` raised while parsing nested data (``json``'s decoder): an input, not a bug."""
    return isinstance(error, RecursionError) and "decoding" in str(error)


def _first_line(message: str) -> str:
    return next((text.strip() for text in message.splitlines() if text.strip()), "")


def _with_path(message: str, path: Path, error: BaseException | None = None) -> str:
    """``message`` naming the case's input, unless it names that input or (an OS error) the file concerned."""
    message = _first_line(message) or "failed"
    if str(path) in message or (isinstance(error, OSError) and error.filename is not None):
        return message
    return f"{path}: {message}"
