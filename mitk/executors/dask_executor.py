"""The Dask executor: cases run on Dask distributed workers (``--executor dask``, extra ``mitk[dask]``).

``--scheduler tcp://HOST:PORT`` connects to a running cluster; without it a local cluster of ``--workers N``
processes (one thread each) is started for the batch and stopped after it. The recipe is sent to every worker
once, as a worker plugin (so workers that join or restart get it too); each worker loads the model on its
first case and keeps it (:func:`mitk.executors.job_once_loaded`).
Workers write the outputs themselves (atomically, as a local run does), so every worker must see the
output paths; the records come back here and the command writes the manifest and the progress.

At most one case per worker thread is in flight, so a worker that dies (a plugin ending its process, out of
memory) takes only the case it was running with it. Dask runs that case again on another worker, up to its
``distributed.scheduler.allowed-failures`` (3 by default); after that the case is recorded as failed
("worker died while processing …") and the other cases go on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mitk.errors import MitkError, UsageError
from mitk.executors import Executor, ExecutorOptions, JobRecipe, ModelSummary

if TYPE_CHECKING:
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseRecord

EXTRA_HINT = "pip install 'mitk[dask]'"
LOCAL_CLUSTER_CONFIG = {
    # No dashboard, so no use for the workers' statistical profiler, which samples every thread's stack every
    # 10 ms: 4-9 % of each U-Net case on a 2-core machine (measured).
    "distributed.worker.profile.enabled": False,
    # Housekeeping that competes with the cases for the same cores: the event loops' responsiveness check
    # (20 ms), the dashboard's system sampling (500 ms), the nanny's memory check (100 ms). Together they took
    # 7 % of a core in the command and 3.5 % in each worker over a 20-second run (measured, 2 workers); at these
    # rates the command's CPU time halved and each worker's event-loop thread's fell by a third.
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}
"""Dask settings of the local cluster mitk starts for ``--workers N`` (a running cluster's are its own)."""
CONNECT_TIMEOUT_S = 30
RECORD_WAIT_S = 10.0
"""How long a finished case's record may trail its completion notice before the result is fetched instead."""


def _require_distributed() -> None:
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"--executor dask needs dask and distributed: {EXTRA_HINT}") from None


class DaskExecutor(Executor):
    """Cases as Dask tasks, one per case, on the workers of a scheduler or of a local cluster."""

    def __init__(self, options: ExecutorOptions) -> None:
        super().__init__(options)
        _require_distributed()
        if options.scheduler is not None and options.workers is not None:
            raise UsageError("give --scheduler (a running cluster) or --workers (a local one), not both")
        if options.workers is not None and options.workers < 1:
            raise UsageError("--workers must be at least 1")
        self._client: Any = None
        self._cluster: Any = None
        self._recipe: JobRecipe | None = None
        self._plugin_name: str | None = None

    def _connect(self) -> Any:
        from distributed import Client, LocalCluster

        if self.options.scheduler is not None:
            try:
                self._client = Client(self.options.scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as error:
                raise UsageError(f"cannot reach the Dask scheduler at {self.options.scheduler} "
                                 f"({' '.join(str(error).split()) or type(error).__name__})") from None
        else:
            import logging

            import dask

            workers = self.options.workers or max(1, (os.cpu_count() or 1))
            # Dask's own log lines (a worker restarted, a task failed) only with --debug: mitk reports each case.
            quiet = logging.WARNING if self.options.debug else logging.CRITICAL
            with dask.config.set(LOCAL_CLUSTER_CONFIG):
                # No dashboard. The scheduler still serves its HTTP routes (health, metrics): on a free loopback
                # port, not on 8787 (taken by any other Dask cluster, with a warning on the terminal).
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=quiet,
                                             scheduler_kwargs={"dashboard": False,
                                                               "dashboard_address": "127.0.0.1:0"})
            self._client = Client(self._cluster)
        return self._client

    def load(self, recipe: JobRecipe) -> ModelSummary:
        from mitk.runner.batch import describe_error

        client = self._connect()
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            where = (f"the Dask scheduler at {self.options.scheduler}" if self.options.scheduler is not None
                     else "the local Dask cluster")
            raise UsageError(f"{where} has no workers (waited {CONNECT_TIMEOUT_S} s)") from None
        try:
            outcomes = self._load_on_workers(client, recipe)
        except MitkError:
            raise
        except Exception as error:  # a worker without mitk, one that died while loading
            raise MitkError(f"the Dask workers could not load the model: {describe_error(error)}") from error
        for outcome in outcomes:
            if isinstance(outcome, tuple):
                import mitk.errors

                kind = getattr(mitk.errors, outcome[0], MitkError)
                raise (kind if isinstance(kind, type) and issubclass(kind, MitkError) else MitkError)(outcome[1])
        summary: ModelSummary = outcomes[0]
        return summary

    def _load_on_workers(self, client: Any, recipe: JobRecipe) -> list[Any]:
        """Install the recipe on every worker (and on workers that join later); every worker loads the model
        now, side by side, so that no case waits behind another worker's load."""
        from mitk.executors.dask_worker import RecipePlugin, load_on_worker

        self._recipe = recipe
        self._plugin_name = f"mitk-recipe-{recipe.token}"
        client.register_plugin(RecipePlugin(recipe), name=self._plugin_name)
        workers = list(client.nthreads()) or [None]
        futures = [client.submit(load_on_worker, recipe.token, key=f"mitk-load-{recipe.token}-{index}",
                                 workers=address, allow_other_workers=address is None)
                   for index, address in enumerate(workers)]
        outcomes: list[Any] = client.gather(futures)
        return outcomes

    def _threads(self) -> int:
        return max(1, sum(self._client.nthreads().values()))

    def run(self, cases: list[Case]) -> Iterator[CaseRecord]:
        import threading

        from distributed import as_completed

        from mitk.executors.dask_worker import records_topic, run_on_worker

        client = self._client
        if self._recipe is None:
            raise RuntimeError("DaskExecutor.run() before load()")
        token = self._recipe.token
        queue = iter(enumerate(cases))
        running: dict[Any, tuple[int, Case]] = {}
        finished = as_completed()
        arrived: dict[int, dict[str, Any]] = {}
        condition = threading.Condition()

        def on_event(event: tuple[float, dict[str, Any]]) -> None:  # on the client's event loop
            with condition:
                arrived.setdefault(event[1]["index"], event[1]["record"])  # the first run of a case counts
                condition.notify_all()

        def fill() -> None:
            """Keep one case in flight per worker thread (refreshed: workers come and go)."""
            wanted = self._threads()
            while len(running) < wanted:
                item = next(queue, None)
                if item is None:
                    return
                index, case = item
                future = client.submit(run_on_worker, token, case, self.options.debug, index,
                                       key=f"mitk-case-{token}-{index}", retries=0)
                running[future] = (index, case)
                finished.add(future)

        client.subscribe_topic(records_topic(token), on_event)
        try:
            fill()
            try:
                for future in finished:
                    index, case = running[future]
                    record = self._record(future, index, case, arrived, condition)
                    del running[future], future  # released: a worker that dies now does not run the case again
                    fill()
                    yield record
            except KeyboardInterrupt:  # SIGINT/SIGTERM while waiting: keep what the workers finished, then stop
                yield from self._finished_when_stopped(running, arrived, condition)
                raise
        finally:
            client.unsubscribe_topic(records_topic(token))
            if running:
                client.cancel(list(running), force=True)

    @staticmethod
    def _finished_when_stopped(running: dict[Any, tuple[int, Case]], arrived: dict[int, dict[str, Any]],
                               condition: Any) -> Iterator[CaseRecord]:
        """The records of the cases in ``running`` that their workers finished (their record arrived, or their
        task is done) when the batch was interrupted: their outputs are written, so they are recorded as done,
        not left out of the manifest. They leave ``running``; the rest are cancelled by the caller."""
        from mitk.runner.batch import CaseRecord

        for future, (index, _case) in list(running.items()):
            with condition:
                sent = arrived.pop(index, None)
            if sent is not None:
                record = CaseRecord(**sent)
            elif future.status == "finished":
                try:
                    record = future.result(timeout=RECORD_WAIT_S)
                except Exception:  # the result is lost with its worker: the case stays not done
                    continue
            else:
                continue
            del running[future]
            yield record

    @staticmethod
    def _record(future: Any, index: int, case: Case, arrived: dict[int, dict[str, Any]],
                condition: Any) -> CaseRecord:
        """The case's record: the one its worker sent, else the task's result, else why the task failed."""
        from distributed.scheduler import KilledWorker

        from mitk.runner.batch import CaseRecord, describe_error

        if future.status == "finished":
            with condition:
                condition.wait_for(lambda: index in arrived, timeout=RECORD_WAIT_S)
                sent = arrived.pop(index, None)  # None too when the record could not travel as an event
            if sent is not None:
                return CaseRecord(**sent)
        try:
            result: CaseRecord = future.result()
            return result
        except KilledWorker as error:
            return CaseRecord(input=str(case.path), status="failed",
                              error=f"{case.path}: worker died while processing the case "
                                    f"({error.allowed_failures + 1} workers died running it)")
        except Exception as error:  # the task itself could not run (a cancelled future, a lost result)
            return CaseRecord(input=str(case.path), status="failed",
                              error=f"{case.path}: executor error: {describe_error(error)}")

    def close(self) -> None:
        if self._client is not None:
            if self._plugin_name is not None and self._cluster is None:  # a long-lived cluster: leave it clean
                with contextlib.suppress(Exception):
                    self._client.unregister_worker_plugin(self._plugin_name)
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None
