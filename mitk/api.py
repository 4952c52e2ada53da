"""The Python API: load a model once, run it on paths or on images in memory, get typed results.

``mitk.load(...)`` returns a :class:`Model`; its task call (``model.segment(image)``,
``model.classify(image)``, ``model.detect(image)``, ``model.register(fixed, moving)``) and the one-shot
helpers (``mitk.segment(image, plugin=..., weights=...)`` …) are made from the task table
(:mod:`mitk.taskspecs`): each task's call runs the runner class its row names. The CLI's task verbs load
their model through :func:`load` too and write through the same writers as the results' ``save``.

Importing this module imports no torch or monai; :func:`load` does.
"""

from __future__ import annotations

import collections
import concurrent.futures
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.errors import UsageError
from mitk.io.memory import as_image, is_path
from mitk.runner.fit import check_fit
from mitk.taskspecs import TaskSpec, get_task, import_part, iter_tasks

if TYPE_CHECKING:
    from mitk.image import Image
    from mitk.runner.model import LoadedModel

__all__ = ["Model", "as_image", "load", *(spec.name for spec in iter_tasks())]

INPUT_OPTIONS = ("affine", "series", "allow_resample")
"""Keyword arguments of a task call that say how to read an input (the rest go to the task's runner)."""


def load(plugin: str | None = None, *, weights: str | Path | list[str | Path] | None = None, task: str | None = None,
         device: str | None = "auto", settings: Mapping[str, Any] | None = None) -> Model:
    """Load a plugin (and its weights) once, for any number of images.

    ``plugin`` names a registered plugin (``mitk plugins list``); with ``weights`` alone, the mitk checkpoint
    names its plugin and task, as on the command line. ``weights`` may be an ensemble: a fold run folder
    (``mitk train ... --folds K``: every fold's best checkpoint) or a list of checkpoints, their probabilities
    averaged (``model.segment(image, tta=True)`` adds flips; see docs/precision.md). ``task`` is needed only
    for a checkpoint that does not describe itself. ``device``: ``"auto"`` (CUDA when available), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``.
    ``settings`` override the plugin's settings, nested (``{"network": {"channels": [8, 16]}}``) or with
    dotted keys (``{"network.channels": [8, 16]}``), like ``--set``. Raises the classes of :mod:`mitk.errors`.
    """
    from mitk.runner import model as runner_model

    resolved = runner_model.resolve_task(plugin, weights, task)
    loaded = runner_model.load_model(resolved, plugin, weights, runner_model.nested_settings(settings), device,
                                     caller="api")
    return Model(loaded)


class Model:
    """A plugin loaded once, with its task's call: ``model.segment(image)`` for a segmentation plugin,
    ``model.classify``, ``model.detect``, ``model.register(fixed, moving)`` for the others (one per row of
    the task table; calling another task's method is a :class:`~mitk.errors.UsageError`). ``model(...)``
    is the same as the task's call.

    An image is anything :func:`~mitk.io.memory.as_image` accepts: a path (NIfTI; DICOM file, folder or zip
    with ``series=``), a nibabel image, a ``SimpleITK.Image``, a MONAI ``MetaTensor``, an :class:`~mitk.image.Image`,
    or a numpy array with ``affine=``. A list of inputs gives a list of results; an iterator (a generator,
    ``Path.glob``) gives an iterator that reads and runs one input at a time. ``workers=N`` (or
    ``executor=``, a thread pool of yours) reads inputs in N threads while the model runs. A bad input
    raises (naming its file); with ``errors="skip"`` it is left out with a :class:`~mitk.errors.MitkWarning`
    and the batch goes on, as on the command line.

    Thread safety: a ``Model`` may be shared by threads. Calls run the network one image at a time (a lock);
    reading inputs and writing results run in parallel. For parallel inference, load one model per thread.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        """The plugin, its resolved settings and network (:class:`mitk.runner.model.LoadedModel`)."""
        self.spec: TaskSpec = get_task(loaded.task)
        self._runners: dict[tuple[tuple[str, str], ...], Callable[..., Any]] = {}
        self._lock = threading.RLock()

    def __getattr__(self, task: str) -> Callable[..., Any]:
        """A task's call for a task registered after this module was imported (a plugin's, or a test's)."""
        spec = None if task.startswith("_") else _registered(task)
        if spec is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {task!r}")
        return _task_method(spec).__get__(self, type(self))

    @property
    def plugin(self) -> str:
        """The plugin's registered name."""
        return self.loaded.name

    @property
    def task(self) -> str:
        """The task's name (a row of the task table)."""
        return self.loaded.task

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    @property
    def settings(self) -> dict[str, Any]:
        """The plugin's resolved settings (defaults, then the checkpoint's, then yours)."""
        return self.loaded.config

    def __repr__(self) -> str:
        weights = f" weights={str(self.loaded.checkpoint)!r}" if self.loaded.checkpoint else ""
        return f"<mitk.Model {self.task} plugin={self.plugin!r}{weights} device={self.device!r}>"

    def __call__(self, *inputs: Any, **options: Any) -> Any:
        """The model's task call (``model.segment(...)`` for a segmentation model)."""
        return self._run(self.spec, *inputs, **options)

    def runner(self, **options: Any) -> Callable[..., Any]:
        """The task table's runner for this model (built once per set of ``options``)."""
        # Plain values (numbers, names, paths) key the cache; an image or array does not: two masks of the same
        # shape can share a repr (numpy abbreviates), so such a call builds its own runner.
        plain = all(isinstance(value, (str, int, float, bool, type(None), os.PathLike)) or
                    (isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value))
                    for value in options.values())
        key = tuple(sorted((name, repr(value)) for name, value in options.items()))
        with self._lock:
            if not plain or key not in self._runners:
                runner_class = import_part(self.spec.runner)
                try:
                    inspect.signature(runner_class).bind(self.loaded, **options)
                except TypeError:
                    accepted = [name for name in inspect.signature(runner_class).parameters if name != "model"]
                    raise UsageError(f"{self.task}: unknown option(s) {', '.join(sorted(options))} (the "
                                     f"runner takes: {', '.join(accepted) or 'none'}; and affine, series, "
                                     "allow_resample, workers, executor, errors)") from None
                runner = runner_class(self.loaded, **options)
                if not plain:
                    return runner
                self._runners[key] = runner
            return self._runners[key]

    def _run(self, spec: TaskSpec, *inputs: Any, workers: int | None = None,
             executor: concurrent.futures.Executor | None = None, errors: str = "raise", **options: Any) -> Any:
        """Run the row ``spec`` of the task table on ``inputs`` (what each task's method calls)."""
        if errors not in ("raise", "skip"):
            raise UsageError(f"errors= must be 'raise' or 'skip', not {errors!r}")
        if spec.task != self.task:
            raise UsageError(f"plugin {self.plugin!r} is a {self.task} plugin: call "
                             f"model.{self.task}(...), not model.{spec.name}(...)")
        expected = 2 if spec.takes_fixed else 1
        if len(inputs) != expected:
            what = "a fixed and a moving image (or a list of moving images)" if spec.takes_fixed else "one image " \
                   "(or a list or iterator of images)"
            raise UsageError(f"model.{spec.name}() takes {what}, got {len(inputs)} positional arguments")
        reading = {name: options.pop(name) for name in INPUT_OPTIONS if name in options}
        runner = self.runner(**options)
        fixed: Image | None = None
        if spec.takes_fixed:
            fixed = self._read(spec, inputs[0], reading)
        items = inputs[-1]
        from mitk.io.atomic import model_files
        from mitk.results import describe_origin

        others = (*((fixed.path,) if fixed is not None and fixed.path is not None else ()),
                  *model_files(self.loaded.checkpoint))  # result.save never writes over the model either

        def one(item: Any) -> Any:
            image = self._read(spec, item, reading)
            check_fit(self.loaded.expects, image)  # refuse, or warn (MitkWarning), before the network runs
            with self._lock:
                result = runner(fixed, image) if fixed is not None else runner(image)
            describe_origin(result, image, self.plugin, others)
            return result

        batch = isinstance(items, list | tuple | Iterator)
        if not batch:
            if workers is not None or executor is not None or errors != "raise":
                raise UsageError("workers=, executor= and errors= are for a list or an iterator of inputs")
            return one(items)
        stream = _stream(items, one if errors == "raise" else _skipping(one), workers, executor)
        if errors == "skip":
            stream = (result for result in stream if result is not _SKIPPED)
        return list(stream) if isinstance(items, list | tuple) else stream

    @staticmethod
    def _read(spec: TaskSpec, item: Any, reading: dict[str, Any]) -> Image:
        from mitk.io.reader import require_volume

        image = as_image(item, **reading)
        return require_volume(image, channels=spec.image_channels)


_SKIPPED = object()


def _skipping(one: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``one``, turning an input that fails as the CLI would record it into a :class:`MitkWarning`."""

    def tolerant(item: Any) -> Any:
        from mitk.errors import MitkError, MitkWarning
        from mitk.runner.batch import describe_error

        try:
            return one(item)
        except (MitkError, OSError, MemoryError) as error:
            name = f"{item}: " if is_path(item) and str(item) not in str(error) else ""
            warnings.warn(MitkWarning(f"skipped {name}{describe_error(error)}"), stacklevel=2)
            return _SKIPPED

    return tolerant


def _stream(items: Iterable[Any], one: Callable[[Any], Any], workers: int | None,
            executor: concurrent.futures.Executor | None) -> Iterator[Any]:
    """``one(item)`` for each item, in order; with workers, a bounded number of items are read ahead."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers= must be a positive integer, not {workers!r}")
    if executor is None and (workers is None or workers == 1):
        return (one(item) for item in items)
    return _parallel(items, one, workers or 2, executor)


def _parallel(items: Iterable[Any], one: Callable[[Any], Any], workers: int,
              executor: concurrent.futures.Executor | None) -> Iterator[Any]:
    pool = executor or concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mitk")
    window: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
    try:
        for item in items:
            window.append(pool.submit(one, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for future in window:
            future.cancel()
        if executor is None:
            pool.shutdown(wait=True, cancel_futures=True)


def _task_method(spec: TaskSpec) -> Callable[..., Any]:
    def method(self: Model, *inputs: Any, **options: Any) -> Any:
        return self._run(spec, *inputs, **options)

    method.__name__ = method.__qualname__ = spec.name
    method.__doc__ = _call_doc(spec, "model")
    return method


def _one_shot(spec: TaskSpec) -> Callable[..., Any]:
    def helper(*inputs: Any, plugin: str | None = None, weights: str | Path | None = None,
               device: str | None = "auto", settings: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return load(plugin, weights=weights, task=spec.task, device=device, settings=settings)._run(
            spec, *inputs, **options)

    helper.__name__ = helper.__qualname__ = spec.name
    helper.__module__ = "mitk"
    helper.__doc__ = _call_doc(spec, "mitk") + (
        "\n\nLoads the model for this call only (``plugin=``, ``weights=``, ``device=``, ``settings=`` as in "
        ":func:`mitk.load`); for many images, load once with :func:`mitk.load` or pass a list.")
    return helper


def _call_doc(spec: TaskSpec, owner: str) -> str:
    if spec.takes_fixed:
        call = f"{owner}.{spec.name}(fixed, moving, **options)"
        inputs = ("``fixed``: the image whose grid the output lives on; ``moving``: an image, or a list or "
                  "iterator of images, aligned to it.")
    else:
        call = f"{owner}.{spec.name}(image, **options)"
        inputs = "``image``: an image, or a list or iterator of images."
    result = spec.result.replace(":", ".")
    return (f"``{call}`` → :class:`~{result}`. {spec.summary}\n\n{inputs} Options: ``affine=`` (for an "
            "array), ``series=`` and ``allow_resample=`` (DICOM), ``workers=``/``executor=``/``errors=`` (batches), "
            f"and the runner's own (:class:`{spec.runner.replace(':', '.')}`).")


for _spec in iter_tasks():
    setattr(Model, _spec.name, _task_method(_spec))
    globals()[_spec.name] = _one_shot(_spec)


def _registered(task: str) -> TaskSpec | None:
    from mitk.plugin_manager import get_registry

    return get_registry().tasks.get(task)


def __getattr__(name: str) -> Any:
    """``mitk.api.<task>`` for a task registered after this module was imported."""
    spec = None if name.startswith("_") else _registered(name)
    if spec is None:
        raise AttributeError(f"module 'mitk.api' has no attribute {name!r}")
    return _one_shot(spec)
