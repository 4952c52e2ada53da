"""The worker side of the Dask executor (imports ``distributed``; used only when it is installed).

The batch's :class:`~mitk.executors.JobRecipe` reaches every worker once, as a :class:`RecipePlugin`; cases
name it by its token. A worker loads the model on the first case and keeps it for the others.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from mitk.errors import MitkError, UsageError
from mitk.executors import JobRecipe, ModelSummary, job_once_loaded, run_case_once_loaded

if TYPE_CHECKING:
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseRecord

_recipes: dict[str, JobRecipe] = {}
"""The recipes installed in this worker process, by token."""


class RecipePlugin(WorkerPlugin):
    """Installs a batch's recipe in each worker (the model itself loads on the worker's first case)."""

    def __init__(self, recipe: JobRecipe) -> None:
        self.recipe = recipe

    def setup(self, worker: Any) -> None:
        from mitk.runner.allocator import keep_freed_memory

        _recipes[self.recipe.token] = self.recipe
        keep_freed_memory(launcher=nanny_malloc_settings())

    def teardown(self, worker: Any) -> None:
        _recipes.pop(self.recipe.token, None)


def nanny_malloc_settings() -> dict[str, str]:
    """The malloc variables Dask's nanny sets in every worker it starts (``MALLOC_TRIM_THRESHOLD_=65536`` by
    default): Dask's setting, not the user's, so mitk's allocator settings replace it (see
    :mod:`mitk.runner.allocator`)."""
    import dask

    settings = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {str(name): str(value) for name, value in settings.items() if str(name).startswith("MALLOC_")}


def _recipe(token: str) -> JobRecipe:
    recipe = _recipes.get(token)
    if recipe is None:
        raise UsageError("this worker has not received the batch's recipe (its mitk plugin was removed)")
    return recipe


def load_on_worker(token: str) -> ModelSummary | tuple[str, str]:
    """Load the batch's model in this worker (kept for its cases) and describe it, or the error's class name
    and message (mitk's errors are re-raised by the client, with their exit codes)."""
    try:
        return job_once_loaded(_recipe(token))[1]
    except MitkError as error:
        return type(error).__name__, str(error)


def records_topic(token: str) -> str:
    """The event topic a batch's workers send their records on."""
    return f"mitk-records-{token}"


def run_on_worker(token: str, case: Case, debug: bool, index: int) -> CaseRecord:
    """One case's record, with the worker's name in its details. The record is also sent to the client as an
    event the moment the case ends, so that it is not lost (nor the case run again, over its own output) if
    this worker dies before the client fetches the result."""
    from dataclasses import asdict

    worker = get_worker()
    record = run_case_once_loaded(lambda: _recipe(token), case, debug=debug, details={"worker": str(worker.name)})
    try:
        worker.log_event(records_topic(token), {"index": index, "record": asdict(record)})
    except TypeError:  # details the event channel cannot carry: say so, and the client fetches the result
        worker.log_event(records_topic(token), {"index": index, "record": None})
    _wait_until_sent(worker)
    return record


SENT_MARGIN_S = 0.05
"""Time for the socket write of a small batch, once the worker's stream has taken it from its buffer."""


def _wait_until_sent(worker: Any, timeout: float = 2.0) -> None:
    """Return once the worker's batched stream has taken the record's event out of its buffer and had time to
    write it. The stream sends every few milliseconds in the background; a worker with one thread starts its
    next case at once, and if that case ends the process (a crash in plugin code) before the send, the record
    is lost and the scheduler runs this finished case again, over its own output. Without the stream's
    attributes (another ``distributed``), nothing is waited for."""
    stream: Any = getattr(worker, "batched_stream", None)
    if not isinstance(getattr(stream, "buffer", None), list):
        return
    deadline = time.monotonic() + timeout
    while stream.buffer and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(SENT_MARGIN_S)
