"""Recently used models, kept loaded in the warm worker so that a per-file call skips building and loading them.

Each call runs in a child forked from the worker, so a model loaded by the child dies with it. Instead, a child
that loads a model from a weights file says so on its notes pipe (:mod:`mitk.serve.worker`); once the call has
answered, the worker loads the same model itself (one thread, so that no OpenMP pool exists at the next fork),
and the next children find it in their copy of the worker's memory. A child that finds its model there takes a
copy of its settings, so nothing a job changes reaches another job (each child's memory is its own anyway).

The key says everything the model depends on: task, plugin, the weights file's absolute path and identity
(device, inode, size, modification and change times: a file rewritten in place is a new key, so it is loaded
again), the ``--set`` settings, the device, the caller's ``MITK_*`` plugin switches. Only weights *files* on the
CPU are kept: folders (bundles, nnU-Net) and GPUs (a CUDA context must not exist before a fork) load per call.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
from collections import OrderedDict
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


def model_key(task: Any, plugin: str | None, weights: str | Path | None, overrides: dict[str, Any] | None,
              device: str | None, caller: str) -> str | None:
    """The cache key of one ``load_model`` call, or None when such a model is not kept."""
    if not isinstance(weights, (str, Path)) or not weights or device not in (None, "", "auto", "cpu"):
        return None  # an ensemble (a list of checkpoints) is loaded per call
    path = Path(weights).absolute()
    try:
        status = path.stat()
        settings = json.dumps(overrides or {}, sort_keys=True)
    except (OSError, TypeError, ValueError):
        return None
    if not path.is_file():
        return None
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            return None
    identity = [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
    return json.dumps([str(getattr(task, "value", task)), plugin, str(path), identity, settings, device or "auto",
                       caller, switches()])


class ModelCache:
    """The worker's models, least recently used first out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.notes_fd: int | None = None
        """In a child: where it tells the worker what it loaded (the write end of the notes pipe)."""

    # --- in a child -------------------------------------------------------------------------------------------

    def install(self, notes_fd: int | None) -> None:
        """Make :func:`mitk.runner.model.load_model` look here first (in this child only)."""
        import mitk.runner.model as runner_model

        self.notes_fd = notes_fd
        load = runner_model.load_model

        def load_model(task: Any, plugin: str | None, weights: Any,
                       overrides: dict[str, Any] | None = None, device: str | None = None,
                       caller: str = "cli") -> Any:
            key = model_key(task, plugin, weights, overrides, device, caller) if self.size else None
            if key is not None and key in self.models:
                self._note({"hit": True})
                kept = self.models[key]
                return dataclasses.replace(kept, config=copy.deepcopy(kept.config), metrics=copy.deepcopy(
                    kept.metrics), expects=copy.deepcopy(kept.expects), checkpoint=Path(str(weights)))
            model = load(task, plugin, weights, overrides, device, caller)
            if key is not None:
                self._note({"key": key, "load": [str(getattr(task, "value", task)), plugin,
                                                 str(Path(str(weights)).absolute()), overrides, device, caller]})
            return model

        runner_model.load_model = load_model

    def _note(self, note: dict[str, Any]) -> None:
        if self.notes_fd is None:
            return
        with contextlib.suppress(OSError, TypeError, ValueError):
            os.write(self.notes_fd, (json.dumps(note) + "\n").encode())

    # --- in the worker ----------------------------------------------------------------------------------------

    def take_notes(self, notes: bytes) -> None:
        """Count the hits and load the models a finished child loaded (skipping any whose file has changed)."""
        for line in notes.decode(errors="replace").splitlines():
            try:
                note = json.loads(line)
            except ValueError:
                continue
            if note.get("hit"):
                self.hits += 1
            elif isinstance(note.get("load"), list) and isinstance(note.get("key"), str):
                self._load(note["key"], note["load"])

    def _load(self, key: str, arguments: list[Any]) -> None:
        if key in self.models:
            self.models.move_to_end(key)
            return
        task, plugin, weights, overrides, device, caller = arguments
        if model_key(task, plugin, weights, overrides, device, caller) != key:
            return  # rewritten since, or the worker's plugin switches differ from the call's
        import torch

        import mitk.runner.model as runner_model

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # no OpenMP thread pool in the worker: a child forked after one would hang
        try:
            model = runner_model.load_model(task, plugin, weights, overrides, device, caller)
        except Exception:  # the child loaded it; if the worker cannot, calls just load it themselves
            return
        finally:
            torch.set_num_threads(threads)
        self.models[key] = model
        while len(self.models) > self.size:
            self.models.popitem(last=False)

    def describe(self) -> dict[str, int]:
        return {"models": len(self.models), "model_hits": self.hits, "model_capacity": self.size}
