"""Recently used models and modules, kept in the warm worker so that a per-file call skips loading them.

Each call runs in a child forked from the worker, so what the child loads dies with it. Instead, a child that
loads a model from weights files, or imports one of mitk's modules, says so on its channel
(:mod:`mitk.serve.child`); once the call has answered, the worker loads the same model or module itself (one
thread, so that no OpenMP pool exists at the next fork), and the next children find it in their copy of the
worker's memory. A child that finds its model there takes a copy of its settings, so nothing a job changes
reaches another job (each child's memory is its own anyway).

The key of a model says everything it depends on: task, plugin, and for each weights file (one, or each member
of an ensemble: a fold run, a list) its absolute path and identity (device, inode, size, modification and change
times: a file rewritten in place is a new key, so it is loaded again), the ``--set`` settings, the device, the
caller's ``MITK_*`` plugin switches. An ensemble is one model. Only weights *files* on the CPU are kept: model
folders (bundles, nnU-Net) and GPUs (a CUDA context must not exist before a fork) load per call. Modules are
mitk's own (``mitk``, ``mitk_*``), which do nothing when imported but define things.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CAPACITY_VARIABLE = "MITK_SERVE_MODELS"
DEFAULT_CAPACITY = 4


def capacity() -> int:
    """How many models the worker keeps (``MITK_SERVE_MODELS``, default 4; 0 keeps none)."""
    value = os.environ.get(CAPACITY_VARIABLE, "").strip()
    return int(value) if value.isdigit() else DEFAULT_CAPACITY


def switches() -> dict[str, str]:
    """The ``MITK_*`` variables that choose plugins (the worker's own ``MITK_SERVE*`` left out)."""
    return {key: value for key, value in sorted(os.environ.items())
            if key.startswith("MITK_") and not key.startswith("MITK_SERVE")}


def model_key(task: Any, plugin: str | None, weights: Any, overrides: dict[str, Any] | None,
              device: str | None, caller: str) -> str | None:
    """The cache key of one ``load_model`` call, or None when such a model is not kept."""
    from mitk.runner.ensemble import is_fold_run, member_weights

    if not weights or device not in (None, "", "auto", "cpu"):
        return None
    try:
        fold_run = is_fold_run(weights)
        members = [Path(member).absolute() for member in member_weights(weights)]
        files = []
        for member in members:
            status = member.stat()
            if not member.is_file():
                return None  # a model folder (bundle, nnU-Net): loaded per call
            files.append([str(member), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                          status.st_ctime_ns])
        settings = json.dumps(overrides or {}, sort_keys=True)
    except Exception:  # a missing file, an unreadable fold run, settings JSON cannot say: loaded per call
        return None
    if not files:
        return None
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            return None
    return json.dumps([str(getattr(task, "value", task)), plugin, fold_run, files, settings, device or "auto",
                       caller, switches()])


def _absolute(weights: Any) -> Any:
    """The same weights named from any folder: a fold run's folder, else the list of member files."""
    from mitk.runner.ensemble import is_fold_run, member_weights

    if is_fold_run(weights):
        return str(Path(weights).absolute())
    return [str(Path(member).absolute()) for member in member_weights(weights)]


def _as_named(kept: Any, weights: Any) -> Any:
    """A kept model as this call's own ``load_model`` would have returned it: its own copy of the settings, and
    the checkpoints named as the call named them."""
    from mitk.runner.ensemble import is_fold_run, member_weights

    members = member_weights(weights)
    ensemble = len(members) > 1 or is_fold_run(weights)
    return dataclasses.replace(
        kept, config=copy.deepcopy(kept.config), metrics=copy.deepcopy(kept.metrics),
        expects=copy.deepcopy(kept.expects), checkpoint=Path(weights) if is_fold_run(weights) else members[0],
        member_checkpoints=tuple(members) if ensemble else ())


def ours(module: str) -> bool:
    """mitk's own modules (the package and its plugins), which the worker may import for later calls."""
    return module == "mitk" or module.startswith(("mitk.", "mitk_"))


class ModelCache:
    """The worker's models, least recently used first out, and the modules its calls imported."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.failed_imports: set[str] = set()
        self.tell: Callable[[dict[str, Any]], None] | None = None
        """In a child: how it tells the worker what it loaded."""
        self.modules_before: set[str] = set()
        self.loading = 0

    # --- in a child -------------------------------------------------------------------------------------------

    def install(self, tell: Callable[[dict[str, Any]], None]) -> None:
        """Make :func:`mitk.runner.model.load_model` look here first (in this child only)."""
        import mitk.runner.model as runner_model

        self.tell = tell
        self.modules_before = set(sys.modules)
        load = runner_model.load_model

        def load_model(task: Any, plugin: str | None, weights: Any,
                       overrides: dict[str, Any] | None = None, device: str | None = None,
                       caller: str = "cli") -> Any:
            if self.loading:  # an ensemble's members, loaded by the ensemble: it is kept as one
                return load(task, plugin, weights, overrides, device, caller)
            key = model_key(task, plugin, weights, overrides, device, caller) if self.size else None
            if key is not None and key in self.models:
                self._note({"hit": key})
                return _as_named(self.models[key], weights)
            self.loading += 1
            try:
                model = load(task, plugin, weights, overrides, device, caller)
            finally:
                self.loading -= 1
            if key is not None:
                self._note({"key": key, "load": [str(getattr(task, "value", task)), plugin, _absolute(weights),
                                                 overrides, device, caller]})
            return model

        runner_model.load_model = load_model

    def finish(self) -> None:
        """Tell the worker which of mitk's modules this call imported."""
        imported = [name for name in sys.modules if name not in self.modules_before and ours(name)
                    and name not in self.failed_imports]
        if imported:
            self._note({"modules": imported})

    def _note(self, note: dict[str, Any]) -> None:
        if self.tell is not None:
            self.tell(note)

    # --- in the worker ----------------------------------------------------------------------------------------

    def take_notes(self, notes: list[dict[str, Any]]) -> bool:
        """Count the hits, load the models a finished child loaded (skipping any whose files have changed) and
        import its modules; True if the worker loaded or imported anything."""
        changed = False
        for note in notes:
            if isinstance(note.get("hit"), str):
                self.hits += 1
                if note["hit"] in self.models:
                    self.models.move_to_end(note["hit"])
            elif isinstance(note.get("load"), list) and isinstance(note.get("key"), str):
                changed = self._load(note["key"], note["load"]) or changed
            elif isinstance(note.get("modules"), list):
                changed = self._import([str(name) for name in note["modules"]]) or changed
        return changed

    def _import(self, names: list[str]) -> bool:
        """Import the modules a call imported (mitk's own: they only define things), so later calls have them."""
        fresh = [name for name in names if ours(name) and name not in sys.modules and name not in
                 self.failed_imports]
        for name in sorted(fresh, key=lambda name: name.count(".")):
            with _one_thread():
                try:
                    importlib.import_module(name)
                except Exception:  # the call imported it; the next ones will again
                    self.failed_imports.add(name)
        return bool(fresh)

    def _load(self, key: str, arguments: list[Any]) -> bool:
        if key in self.models:
            self.models.move_to_end(key)
            return False
        if not self.size:
            return False
        task, plugin, weights, overrides, device, caller = arguments
        if model_key(task, plugin, weights, overrides, device, caller) != key:
            return False  # rewritten since, or the worker's plugin switches differ from the call's
        import mitk.runner.model as runner_model

        with _one_thread():
            try:
                model = runner_model.load_model(task, plugin, weights, overrides, device, caller)
            except Exception:  # the child loaded it; if the worker cannot, calls just load it themselves
                return False
        self.models[key] = model
        from mitk.provenance import weights_digest

        for member in json.loads(key)[3]:  # the calls' provenance: each member file hashed once, here
            with contextlib.suppress(OSError):
                weights_digest(member[0])
        while len(self.models) > self.size:
            self.models.popitem(last=False)
        return True

    def describe(self) -> dict[str, int]:
        return {"models": len(self.models), "model_hits": self.hits, "model_capacity": self.size}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Work in the worker on one thread: no OpenMP thread pool may exist at the next fork (a child forked after
    one would hang in its first parallel region)."""
    if "torch" not in sys.modules:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
