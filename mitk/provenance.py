"""Provenance: what a record needs to say for a run to be checked and repeated.

Each case record of a batch (``--manifest``, ``--json``, and the ``_class.json`` / ``_boxes.json`` records) carries
a ``provenance`` mapping: the sha256 of its input (for DICOM: of the pixel data and the geometry, never of the
identifying headers), and the run's plugin, versions, weights digest, every setting after defaults, device,
threads, seed and determinism flags (:func:`run_provenance`). Nothing in it identifies a patient.

Hashing streams each file in 1 MiB chunks and happens once per input per process (a cache keyed by path, size and
modification time). This module never imports torch or MONAI: their state is read only when the caller has
imported them already.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
PROVENANCE_KEY = "provenance"
PROVENANCE_VERSION = 1

DICOM_GEOMETRY = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
                  "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration",
                  "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                  "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept")
"""The attributes hashed with a DICOM instance's pixel data: what fixes its voxels and their place, and nothing
that names the patient, the study or the institution."""

_digests: dict[tuple[str, int, int], dict[str, Any]] = {}
_weights_digests: dict[tuple[str, int, int, int, int], dict[str, Any]] = {}
"""A weights file's digest by its absolute path and identity (device, inode, size, modification time): a file
rewritten in place is hashed again. The warm worker (:mod:`mitk.serve`) fills it for the models it keeps."""
_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mitk_provenance", default=None)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_instance_digest(path: Path) -> str | None:
    """sha256 of one DICOM instance's geometry attributes and pixel data; None when it holds no pixels."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, force=False)
    except Exception:
        return None
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        return None
    digest = hashlib.sha256()
    transfer = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "")
    digest.update(f"TransferSyntaxUID={transfer}\n".encode())
    for keyword in DICOM_GEOMETRY:
        value = dataset.get(keyword)
        if value is not None:
            digest.update(f"{keyword}={list(value) if isinstance(value, pydicom.multival.MultiValue) else value}\n"
                          .encode())
    element = dataset["PixelData"] if "PixelData" in dataset else dataset["FloatPixelData"]
    raw = element.value
    digest.update(raw if isinstance(raw, bytes) else bytes(raw))
    return digest.hexdigest()


def dicom_digest(paths: list[Path]) -> dict[str, Any]:
    """One digest for the DICOM instances among ``paths``: the sorted per-instance digests hashed together, so the
    order files are listed in (and their names) do not matter."""
    instances = sorted(d for d in (_dicom_instance_digest(p) for p in paths) if d is not None)
    digest = hashlib.sha256("\n".join(instances).encode()).hexdigest()
    return {"kind": "dicom", "sha256": digest, "instances": len(instances),
            "covers": "pixel data and geometry of each instance"}


def input_digest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The digest of one input: a file's bytes (NIfTI, PNG, zip, …), or for DICOM (a file, or a folder of
    instances) the pixel data and geometry. Computed once per input and modification time in this process."""
    target = Path(path)
    stat = target.stat()
    files: list[Path] = []
    key: tuple[str, int, int] = (str(target.resolve()), stat.st_size, stat.st_mtime_ns)
    if target.is_dir():  # a folder's own time does not change when a file in it is rewritten
        files = sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith("."))
        listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        key = (key[0], len(files), hash(tuple(listing)))
    if key in _digests:
        return dict(_digests[key])
    if target.is_dir():
        found = dicom_digest(files)
    elif is_dicom_file(target):
        found = dicom_digest([target])
    else:
        found = {"kind": "file", "sha256": sha256_file(target), "bytes": stat.st_size}
    _digests[key] = found
    return dict(found)


def weights_digest(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """sha256 of a weights file, or of a model folder (each file's relative path and digest, hashed together)."""
    if path is None:
        return None
    target = Path(path)
    if not target.exists():
        return None
    if target.is_file():
        stat = target.stat()
        key = (str(target.absolute()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in _weights_digests:
            _weights_digests[key] = {"kind": "file", "sha256": sha256_file(target), "bytes": stat.st_size}
        return dict(_weights_digests[key])
    lines = [f"{p.relative_to(target).as_posix()} {sha256_file(p)}"
             for p in sorted(target.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return {"kind": "folder", "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(), "files": len(lines)}


@functools.lru_cache(maxsize=64)
def package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it (read once per process)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """mitk, torch, monai, numpy and Python, and the platform."""
    return {"mitk": package_version("mitk"), "torch": package_version("torch"), "monai": package_version("monai"),
            "numpy": package_version("numpy"), "python": platform.python_version(), "platform": platform.platform()}


def runtime_state(torch_used: bool = True) -> dict[str, Any]:
    """Threads, seed and determinism flags in force. Read from torch only when it is imported already (a classical
    plugin's run does not import it for this) and the run uses it (``torch_used``: in the warm worker of
    :mod:`mitk.serve`, torch is imported for every call, and a classical call records what a local one does)."""
    state: dict[str, Any] = {"threads": None, "interop_threads": None, "seed": None,
                             "deterministic": {"MITK_CPU_KERNELS": os.environ.get("MITK_CPU_KERNELS", "1"),
                                               "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                                               "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED")},
                             "cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch") if torch_used else None
    if torch is not None:
        with contextlib.suppress(Exception):
            state["threads"] = torch.get_num_threads()
            state["interop_threads"] = torch.get_num_interop_threads()
            state["seed"] = torch.initial_seed()
            state["deterministic"].update(
                algorithms=torch.are_deterministic_algorithms_enabled(),
                cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
                cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    return state


def jsonable(value: Any) -> Any:
    """``value`` as JSON would keep it (paths, tuples and other objects as text)."""
    return json.loads(json.dumps(value, default=str))


def run_provenance(model: Any, task: str, distribution: str | None = None) -> dict[str, Any]:
    """What a run shares across its cases, from a loaded model (:class:`mitk.runner.model.LoadedModel`) and the
    distribution that registered its plugin."""
    package = package_version(distribution) if distribution else None
    source = getattr(model, "checkpoint", None)
    return {
        "version": PROVENANCE_VERSION,
        "task": task,
        "plugin": model.name,
        "plugin_version": model.version,
        "plugin_package": distribution,
        "plugin_package_version": package,
        "weights": None if source is None else Path(source).name,
        "weights_digest": weights_digest(source),
        "settings": jsonable(model.config),
        "device": str(model.device),
        **runtime_state(torch_used=not getattr(model, "classical", False)),
        "versions": library_versions(),
    }


def case_provenance(run: dict[str, Any], input_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's provenance with this case's input digest (``input_digest``); an unreadable input gives None."""
    digest: dict[str, Any] | None
    try:
        digest = input_digest(input_path)
    except OSError:
        digest = None
    return {**run, "input_path": str(Path(input_path).absolute()), "input_digest": digest}


@contextlib.contextmanager
def recording(provenance: dict[str, Any]) -> Iterator[None]:
    """While inside, :func:`current` returns ``provenance``: record files written meanwhile include it."""
    token = _current.set(provenance)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> dict[str, Any] | None:
    """The provenance of the case being processed in this context, or None outside a batch."""
    return _current.get()


def note(key: str, value: Any) -> None:
    """Add ``value`` under ``key`` to the provenance of the case being processed (nothing outside a batch): a
    writer's own decision, such as UIDs it had to mint."""
    provenance = _current.get()
    if provenance is not None:
        provenance.setdefault(key, []).append(value)


def with_minted_uids(source: Any, path: Path | None, what: str) -> Any:
    """``source`` with the UIDs an anonymiser removed minted (:func:`mitk.io.dicom.uids.complete_uids`): a
    warning says which, and the case's provenance records them (``minted_uids``)."""
    import dataclasses
    import warnings

    from mitk.errors import MitkWarning
    from mitk.io.dicom.uids import complete_uids

    headers, minted = complete_uids(source.headers)
    if not minted:
        return source
    warnings.warn(MitkWarning(f"{path}: the DICOM series has no {', '.join(minted)}; minted for the {what} "
                              "(they reference no existing study or frame of reference)"), stacklevel=2)
    note("minted_uids", {"for": what, "keywords": minted})
    return dataclasses.replace(source, headers=headers)
