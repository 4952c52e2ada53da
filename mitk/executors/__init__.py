"""Executors: what runs a batch's cases, in this process or on other machines.

Every task verb expands its inputs, checks its outputs, then hands an executor two things:

- a :class:`JobRecipe`: a picklable description of the model to load (task, plugin, weights, device,
  settings) and of how to build the per-case job from it (``build(model) -> job``, a module-level function
  or a :func:`functools.partial` of one);
- the cases, as :class:`mitk.io.inputs.Case`.

The executor loads the model once per process that runs cases (:meth:`Executor.load`), runs the job on every
case and yields one :class:`~mitk.runner.batch.CaseRecord` per case, in any order (:meth:`Executor.run`).
The command keeps the records: the manifest, the progress, the summary and the exit code are the same
whichever executor ran the cases. SIGINT/SIGTERM close the generator :meth:`Executor.run` returned: put
the cancelling of work sent elsewhere in its ``finally``.

A plugin adds an executor through the ``mitk_register_executors`` hook (:mod:`mitk.hookspecs`)::

    @hookimpl
    def mitk_register_executors(register):
        register("my-cluster", factory="my_package.executor:MyExecutor", summary="...")

``factory(options)`` receives the command's :class:`ExecutorOptions`. Code that runs cases in another
process calls :func:`run_case_once_loaded`: it loads the recipe's model once per process and keeps it; with
``--debug`` a failed case's traceback comes back with its record, and the command prints it (it never reaches
the manifest or the JSON: :func:`mitk.runner.batch.keep_records`).
"""

from __future__ import annotations

import json
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitk.io.inputs import Case
    from mitk.registry import ExecutorEntry
    from mitk.runner.batch import CaseJob, CaseRecord
    from mitk.runner.model import LoadedModel

DEFAULT_EXECUTOR = "local"


@dataclass(frozen=True)
class ExecutorOptions:
    """What the command line says about where cases run (``--executor``, ``--scheduler``, ``--workers``)."""

    workers: int | None = None
    """Processes of a local cluster (an executor that starts one); None: the executor's default."""
    scheduler: str | None = None
    """Address of a running scheduler (``tcp://HOST:PORT``), for executors that connect to one."""
    debug: bool = False
    """``--debug``: log tracebacks of failed cases."""
    log_error: Callable[[str], None] | None = field(default=None, compare=False)
    """Where the host logs a traceback (``--debug``)."""


@dataclass(frozen=True)
class ModelSummary:
    """What the batch document says about the model that ran the cases."""

    name: str
    version: str | None
    device: str


@dataclass
class JobRecipe:
    """What to load and how to build the per-case job from it; picklable, so it can travel to workers."""

    task: str
    plugin: str | None
    weights: Path | None
    device: str
    settings: dict[str, Any]
    """Plugin setting overrides, nested (as ``--set`` parses them)."""
    build: Callable[[LoadedModel], CaseJob]
    """``build(model) -> job``: a module-level function or a partial of one (closures do not pickle)."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tells this batch's recipe apart from any other in a long-lived worker."""

    def load_model(self) -> LoadedModel:
        """Load the model as ``mitk.load`` does (raises the classes of :mod:`mitk.errors`)."""
        from mitk.runner.model import load_model, nested_settings, resolve_task

        task = resolve_task(self.plugin, self.weights, self.task)
        return load_model(task, self.plugin, self.weights, nested_settings(self.settings), self.device)

    @property
    def model_key(self) -> str:
        """Equal for recipes that load the same model."""
        return json.dumps([self.task, self.plugin, str(self.weights), self.device, self.settings], sort_keys=True,
                          default=str)


def build_job(task: str, model: LoadedModel, policy: Any, *args: Any, **options: Any) -> CaseJob:
    """The task's batch job for ``model`` (the ``job`` of its row in the task table): a module-level function, so
    that ``functools.partial(build_job, task, policy=..., ...)`` pickles and can travel to workers."""
    from mitk.runner.batch import with_provenance
    from mitk.taskspecs import get_task, import_part

    request = options.pop("provenance_request", None)  # what the command asked for: kept in each record
    make_job = import_part(get_task(task).job)
    job: CaseJob = make_job(model, policy, *args, **options)
    return with_provenance(job, model, task, invocation={**(request or {}), **invocation_of(policy, options)})


def invocation_of(policy: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The job's options as JSON (the names of those that are paths listed apart), and its other inputs."""
    paths = sorted(name for name, value in options.items() if isinstance(value, Path))
    also = [str(Path(path).absolute()) for path in getattr(policy, "also_inputs", ())]
    values = {name: (str(Path(value).absolute()) if name in paths else value) for name, value in options.items()}
    return {"options": json.loads(json.dumps(values, default=str)), "path_options": paths, "also_inputs": also,
            "cwd": str(Path.cwd())}


def summarize(model: LoadedModel) -> ModelSummary:
    return ModelSummary(name=model.name, version=model.version, device=str(model.device))


class Executor(ABC):
    """Runs one batch's cases. Built by its registered factory with the command's :class:`ExecutorOptions`;
    used as a context manager (:meth:`close` on exit)."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    @abstractmethod
    def load(self, recipe: JobRecipe) -> ModelSummary:
        """Make the recipe's model ready where cases will run, and describe it. A model that cannot load
        raises the classes of :mod:`mitk.errors` here, before any case runs (as a local run does)."""

    @abstractmethod
    def run(self, cases: list[Case]) -> Iterator[CaseRecord]:
        """Yield one record per case, in any order. A case that fails is a record with ``status="failed"``
        and a one-line ``error``, never a lost case. Cancel outstanding work in a ``finally``."""

    def close(self) -> None:
        """Release what the executor started (connections, worker processes); nothing by default."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class LocalExecutor(Executor):
    """In this process, one case after another: the model is loaded once, the job runs on each case."""

    _job: CaseJob | None = None

    def load(self, recipe: JobRecipe) -> ModelSummary:
        from mitk.runner.allocator import keep_freed_memory

        keep_freed_memory()
        model = recipe.load_model()
        self._job = recipe.build(model)
        return summarize(model)

    def run(self, cases: list[Case]) -> Iterator[CaseRecord]:
        from mitk.runner.batch import run_case

        if self._job is None:
            raise RuntimeError("LocalExecutor.run() before load()")
        for case in cases:
            yield run_case(case, self._job, self.options.debug, self.options.log_error)


def build_executor(entry: ExecutorEntry, options: ExecutorOptions) -> Executor:
    """A new executor for one batch from its registry entry, checked to be an :class:`Executor`."""
    from mitk.errors import MitkError, PluginError
    from mitk.registry import contained, describe, resolve_factory

    try:
        with contained():
            executor = resolve_factory(entry.factory)(options)
    except MitkError:
        raise  # the executor's own one-line message (a missing extra, a bad option)
    except ImportError as error:
        raise PluginError(f"executor {entry.name!r} could not be loaded: {describe(error)}") from error
    except Exception as error:
        raise PluginError(f"executor {entry.name!r} failed to build: {describe(error)}") from error
    if not isinstance(executor, Executor):
        raise PluginError(f"executor {entry.name!r}: its factory returned {type(executor).__qualname__}, "
                          "not a mitk.executors.Executor")
    return executor


# -------------------------------------------------------------------------------------------------
# The worker side: one model per process
# -------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_model: tuple[str, Any] | None = None
"""The model key and the model this process loaded last (one at a time: a worker serves one batch)."""
_job: tuple[str, Any, ModelSummary] | None = None
"""The recipe token, the job built from it and the model's summary."""


def job_once_loaded(recipe: JobRecipe) -> tuple[CaseJob, ModelSummary]:
    """The recipe's job and model summary, loading the model at most once per process (thread-safe)."""
    global _model, _job
    with _lock:
        if _job is not None and _job[0] == recipe.token:
            return _job[1], _job[2]
        if _model is None or _model[0] != recipe.model_key:
            _model = _job = None  # free the previous batch's model before loading another
            from mitk.runner.allocator import keep_freed_memory

            keep_freed_memory()
            _model = (recipe.model_key, recipe.load_model())
        model = _model[1]
        _job = (recipe.token, recipe.build(model), summarize(model))
        return _job[1], _job[2]


def run_case_once_loaded(recipe: JobRecipe | Callable[[], JobRecipe], case: Case, *, debug: bool = False,
                         details: dict[str, Any] | None = None) -> CaseRecord:
    """One case's record in a worker process: the model is loaded on the first case and kept. ``recipe`` may be
    a function that finds it (it is called inside the case, so that not finding it fails the case). A model that
    fails to load fails the case, with the same one-line errors as a local run (:func:`mitk.runner.batch.run_case`).
    ``details`` (e.g. the worker's name) are added to the record."""
    from mitk.runner.batch import TRACEBACK_KEY, run_case

    def job(each: Case) -> Any:
        found = recipe if isinstance(recipe, JobRecipe) else recipe()
        return job_once_loaded(found)[0](each)

    logged: list[str] = []
    record = run_case(case, job, debug, logged.append)  # logs only with debug
    record.details.update(details or {})
    if logged:  # the traceback travels with the record, to be shown where the command runs
        record.details[TRACEBACK_KEY] = "\n".join(logged)
    return record
