"""``mitk replay``: run the cases of a manifest again from their records alone, and compare the outputs.

Each record's provenance names the plugin, the weights, the ``--set`` values, the device, the job's options and
the digests of every input. A case is refused (one line, nothing run) when an input or the weights no longer have
the recorded digest. Otherwise it runs into a fresh folder and its outputs are compared with the recorded ones:
byte for byte, and where they differ, by value (largest absolute difference, share of voxels that differ).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import MitkError
from mitk.provenance import PROVENANCE_KEY, input_digest, weights_digest

TRANSIENT = {"input", "output", "status", "error", "seconds", "worker", "shard", PROVENANCE_KEY}
"""Record keys that are not results: they differ between runs by nature."""
TIMES = {"seconds"}
"""Keys of times, at any depth (a registration's own ``seconds``)."""


@dataclass
class Replayed:
    """The verdict on one recorded case."""

    input: str
    status: str
    """``identical``, ``different``, ``refused`` (a digest changed, or no provenance), ``failed`` (the replay
    failed), or ``not replayed`` (the case failed or was skipped in the recorded run)."""
    reason: str | None = None
    differences: list[str] = field(default_factory=list)
    files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "status": self.status, "reason": self.reason,
                "differences": self.differences, "files_compared": self.files}


def check_digests(provenance: dict[str, Any]) -> str | None:
    """Why the case cannot be replayed (an input or the weights changed or went missing), or None."""
    invocation = provenance.get("invocation") or {}
    expected = {provenance.get("input_path"): provenance.get("input_digest"),
                **(invocation.get("also_input_digests") or {})}
    for path, digest in expected.items():
        if not path or not digest:
            return "the record has no input digest"
        if not Path(path).exists():
            return f"{path}: the input is missing"
        if input_digest(path).get("sha256") != digest.get("sha256"):
            return f"{path}: the input's sha256 no longer matches the record"
    weights = invocation.get("weights_path")
    if weights:
        if not Path(weights).exists():
            return f"{weights}: the weights are missing"
        found = weights_digest(weights)
        if found is None or found.get("sha256") != (provenance.get("weights_digest") or {}).get("sha256"):
            return f"{weights}: the weights' sha256 no longer matches the record"
    return None


def results_of(record: dict[str, Any]) -> dict[str, Any]:
    """The record's findings: no times, statuses, provenance or file names."""
    return {key: value for key, value in record.items() if key not in TRANSIENT and not _names_a_file(value)}


def _names_a_file(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_names_a_file(v) for v in value)
    return isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).suffix != ""


def compare_values(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two records' findings differ, with the largest numeric difference."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            if key in TIMES:
                continue
            if key not in old or key not in new:
                found.append(f"{where}{key}: only in the {'replay' if key in new else 'record'}")
            else:
                found += compare_values(old[key], new[key], f"{where}{key}.")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for index, (a, b) in enumerate(zip(old, new, strict=True))
                for d in compare_values(a, b, f"{where}{index}.")]
    if old == new:
        return []
    numbers = (int, float)
    if isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool):
        return [f"{where.rstrip('.')}: {old} → {new} (difference {abs(float(new) - float(old)):.3g})"]
    return [f"{where.rstrip('.')}: {str(old)[:80]} → {str(new)[:80]}"]


def compare_files(recorded: Path, replayed: Path) -> list[str]:
    """Nothing when the two files are byte-identical; else what differs (images: by value)."""
    if recorded.read_bytes() == replayed.read_bytes():
        return []
    name = recorded.name
    if name.endswith((".nii.gz", ".nii")):
        from mitk.io.reader import load_image

        a, b = np.asarray(load_image(recorded).array), np.asarray(load_image(replayed).array)
        if a.shape != b.shape:
            return [f"{name}: shape {a.shape} → {b.shape}"]
        difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
        return [f"{name}: bytes differ; largest difference {float(difference.max()):.3g}, "
                f"{float(np.mean(difference > 0)) * 100:.3g}% of voxels differ"]
    if name.lower().endswith(".dcm"):
        differences = compare_dicom(recorded, replayed)
        return [f"{name}: {d}" for d in differences[:5]] if differences else []
    if name.endswith(".json"):
        try:  # a record file names its own run in its provenance: the findings must be the same
            return [f"{name}: {d}" for d in compare_values(results_of(json.loads(recorded.read_text())),
                                                             results_of(json.loads(replayed.read_text())))]
        except ValueError:
            pass
    return [f"{name}: bytes differ"]


FRESH_VRS = ("UI", "DA", "TM", "DT")
"""Values a DICOM writer makes new on every run (UIDs, creation dates and times): not findings."""


def dicom_content(path: Path) -> list[tuple[str, str]]:
    """Every element of a DICOM file but the UIDs, dates and times, as (keyword path, value) in file order."""
    import pydicom

    found: list[tuple[str, str]] = []

    def walk(dataset: Any, prefix: str) -> None:
        for element in dataset:
            where = f"{prefix}{element.keyword or element.tag}"
            if element.VR == "SQ":
                for index, item in enumerate(element.value):
                    walk(item, f"{where}.{index}.")
            elif element.VR not in FRESH_VRS:
                found.append((where, str(element.value)[:200]))

    walk(pydicom.dcmread(path), "")
    return found


def compare_dicom(recorded: Path, replayed: Path) -> list[str]:
    """Where two DICOM outputs (SEG, SR, RTSTRUCT) differ, their fresh UIDs, dates and times aside."""
    try:
        old, new = dicom_content(recorded), dicom_content(replayed)
    except Exception as error:  # a damaged file: say so, as for bytes
        return [f"cannot be compared as DICOM ({type(error).__name__})"]
    if old == new:
        return []
    if len(old) != len(new):
        return [f"{len(old)} → {len(new)} DICOM elements"]
    return [f"{a[0]}: {a[1][:40]} → {b[1][:40]}" for a, b in zip(old, new, strict=True) if a != b]


def recorded_files(record: dict[str, Any], resolve: Callable[[Any], Path | None]) -> dict[str, Path]:
    """The files a record names (output, companions), by file name."""
    found: dict[str, Path] = {}
    for key, value in record.items():
        if key in ("input", PROVENANCE_KEY):
            continue
        for item in value if isinstance(value, list) else [value]:
            path = resolve(item) if isinstance(item, str) and _names_a_file(item) else None
            if path is not None and path.is_file():
                found[path.name] = path
    return found


def replay_case(record: dict[str, Any], resolve: Callable[[Any], Path | None], workdir: Path,
                device: str | None, models: dict[str, Any]) -> Replayed:
    """Run one recorded case again in ``workdir`` and compare."""
    from mitk.io.inputs import Case

    name = str(record.get("input") or "")
    provenance = record.get(PROVENANCE_KEY)
    if record.get("status") != "ok":
        return Replayed(name, "not replayed", f"the case was {record.get('status')} in the recorded run")
    if not isinstance(provenance, dict) or "invocation" not in provenance:
        return Replayed(name, "refused", "the record has no provenance to replay from")
    reason = check_digests(provenance)
    if reason is not None:
        return Replayed(name, "refused", reason)
    job = job_for(provenance, workdir, device, models)
    case = Case(Path(provenance["input_path"]))
    try:
        outcome = job(case)
    except MitkError as error:
        return Replayed(name, "failed", str(error).splitlines()[0])
    differences = [f"record: {d}" for d in compare_values(results_of(record), results_of(outcome.details))]
    old = recorded_files(record, resolve)
    new = {p.name: p for p in workdir.rglob("*") if p.is_file()}
    files = 0
    for file_name, path in new.items():
        if file_name in old:
            files += 1
            differences += compare_files(old[file_name], path)
    for file_name in sorted(set(old) - set(new)):
        differences.append(f"{file_name}: recorded, not written by the replay")
    return Replayed(name, "identical" if not differences else "different", None, differences, files)


def job_for(provenance: dict[str, Any], workdir: Path, device: str | None, models: dict[str, Any]) -> Any:
    """The recorded job, writing into ``workdir`` (outputs the options name go there too)."""
    from functools import partial

    from mitk.executors import JobRecipe, build_job
    from mitk.io.atomic import model_files
    from mitk.io.inputs import Case
    from mitk.runner.outputs import OutputPolicy

    invocation = provenance["invocation"]
    also = tuple(Path(p) for p in invocation.get("also_inputs") or ())
    options: dict[str, Any] = {}
    for key, value in (invocation.get("options") or {}).items():
        if key in invocation.get("path_options", ()) and value is not None:
            path = Path(value)
            value = path if path in also else workdir / path.name  # an input, or an output (--transform)
        options[key] = value
    weights = Path(invocation["weights_path"]) if invocation.get("weights_path") else None
    policy = OutputPolicy(output_dir=workdir, also_inputs=also, model=model_files(weights))
    policy.prepare([Case(Path(provenance["input_path"]))])
    chosen = device or str(provenance.get("device") or invocation.get("device") or "cpu")
    recipe = JobRecipe(task=provenance["task"], plugin=invocation.get("plugin") or provenance.get("plugin"),
                       weights=weights, device=chosen, settings=invocation.get("overrides") or {},
                       build=partial(build_job, provenance["task"], policy=policy, **options))
    seed = provenance.get("seed")
    if isinstance(seed, int):  # the global seed the run had (in force for any random step of a plugin)
        import torch

        torch.manual_seed(seed)
    if recipe.model_key not in models:
        models.clear()  # one model at a time
        models[recipe.model_key] = recipe.load_model()
    return recipe.build(models[recipe.model_key])
