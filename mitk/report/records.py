"""What a report is made from: the records of a manifest, or the records and outputs found in a folder.

Nothing here stops at bad input: a line that is not JSON, a record file that cannot be read, an output without a
record, a failed case, records of different runs mixed in one place; each becomes a problem of its case.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_SUFFIXES = {"_class.json": "classify", "_boxes.json": "detect"}
IMAGE_SUFFIXES = {"_seg.nii.gz": "segment", "_seg.nii": "segment", "_warped.nii.gz": "register",
                  "_warped.nii": "register"}
DETAIL_KEYS = {"labels": "segment", "boxes": "detect", "probabilities": "classify", "registration": "register"}


@dataclass
class ReportCase:
    """One record (one input of one task), with what the report must say about it."""

    input: str
    task: str
    record: dict[str, Any]
    source: str
    """Where the record was read (``manifest.jsonl:12``, a record file), for the reader."""
    base: Path
    """The folder relative paths in the record are read from."""
    problems: list[str] = field(default_factory=list)
    run: str | None = None
    """The run this record belongs to (``segment run 1``), set by :func:`mark_runs`."""

    @property
    def status(self) -> str:
        return str(self.record.get("status") or ("ok" if self.record else "no record"))

    @property
    def name(self) -> str:
        return Path(self.input).name if self.input else "(unknown input)"

    @property
    def provenance(self) -> dict[str, Any] | None:
        value = self.record.get("provenance")
        return value if isinstance(value, dict) else None

    def path(self, value: Any) -> Path | None:
        """A path named by the record, resolved as the run saw it; None when it is not there."""
        if not isinstance(value, str) or not value:
            return None
        candidate = Path(value)
        bases = [self.base]
        provenance = self.provenance or {}
        cwd = (provenance.get("invocation") or {}).get("cwd")
        if isinstance(cwd, str):
            bases.insert(0, Path(cwd))
        for base in ([Path()] if candidate.is_absolute() else [*bases, Path.cwd()]):
            found = base / candidate
            if found.exists():
                return found
        return None


def task_of(record: dict[str, Any], name: str = "") -> str:
    provenance = record.get("provenance")
    if isinstance(provenance, dict) and isinstance(provenance.get("task"), str):
        return str(provenance["task"])
    for suffix, task in {**RECORD_SUFFIXES, **IMAGE_SUFFIXES}.items():
        if name.endswith(suffix) or str(record.get("output") or "").endswith(suffix):
            return task
    for key, task in DETAIL_KEYS.items():
        if key in record:
            return task
    return "unknown"


def read_manifest(path: Path) -> tuple[list[ReportCase], list[str]]:
    """The records of a manifest (JSON lines), and the problems of the file itself."""
    cases: list[ReportCase] = []
    problems: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return [], [f"{path.name}: cannot be read ({error.strerror or error})"]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            cases.append(ReportCase(input="", task="unknown", record={"status": "damaged"},
                                    source=f"{path.name}:{number}", base=path.parent,
                                    problems=[f"line {number} of {path.name} is not a JSON record (damaged or cut "
                                              "short); its case cannot be shown"]))
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number} of {path.name} is not a record")
            continue
        if "mitk_manifest" in record:
            continue  # a shard's header line
        cases.append(ReportCase(input=str(record.get("input") or ""), task=task_of(record), record=record,
                                source=f"{path.name}:{number}", base=path.parent))
    tasks = {case.task for case in cases if case.task != "unknown"}
    if len(tasks) == 1:  # a failed case's record says no task; its manifest's other records do
        for case in cases:
            if case.task == "unknown" and case.record.get("status") == "failed":
                case.task = next(iter(tasks))
    return cases, problems


def read_folder(folder: Path) -> tuple[list[ReportCase], list[str]]:
    """The records of the manifests in ``folder``, then its record files and outputs that no manifest names."""
    cases: list[ReportCase] = []
    problems: list[str] = []
    for manifest in sorted(folder.rglob("*.jsonl")):
        found, trouble = read_manifest(manifest)
        cases += found
        problems += trouble
    named = {str(p.resolve()): case for case in cases for p in [case.path(case.record.get("output"))]
             if p is not None}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        owner = named.get(str(path.resolve()))
        if owner is not None:
            if path.name.endswith(tuple(RECORD_SUFFIXES)):  # the manifest has the record: is the file whole?
                owner.problems += record_file(path, owner.task).problems
            continue
        task = next((t for s, t in RECORD_SUFFIXES.items() if path.name.endswith(s)), None)
        if task is not None:
            cases.append(record_file(path, task))
            continue
        task = next((t for s, t in IMAGE_SUFFIXES.items() if path.name.endswith(s)), None)
        if task is not None:
            cases.append(ReportCase(input="", task=task, record={"output": str(path), "status": "no record"},
                                    source=path.name, base=folder,
                                    problems=["no record names this output (no manifest in the folder): its input "
                                              "and provenance are unknown"]))
    return cases, problems


def record_file(path: Path, task: str) -> ReportCase:
    """A ``_class.json`` / ``_boxes.json`` record, or a case saying why it cannot be read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as error:
        reason = getattr(error, "strerror", None) or "not JSON: damaged or cut short"
        return ReportCase(input="", task=task, record={"output": str(path), "status": "damaged"}, source=path.name,
                          base=path.parent, problems=[f"{path.name}: the record cannot be read ({reason})"])
    record.setdefault("output", str(path))
    record.setdefault("status", "ok")
    return ReportCase(input=str(record.get("input") or ""), task=task, record=record, source=path.name,
                      base=path.parent)


def run_identity(provenance: dict[str, Any] | None) -> str | None:
    """What must be equal for two records to come from the same run: plugin, its version, library versions,
    settings and weights (the digest of those, as text)."""
    if provenance is None:
        return None
    versions = dict(provenance.get("versions") or {})
    versions.pop("platform", None)
    key = [provenance.get(k) for k in ("task", "plugin", "plugin_version", "plugin_package_version", "settings",
                                       "weights_digest", "device")]
    return hashlib.sha256(json.dumps([key, versions], sort_keys=True, default=str).encode()).hexdigest()[:12]


def mark_runs(cases: list[ReportCase]) -> dict[str, dict[str, Any]]:
    """Name each record's run (``segment run 1``) and say so per case when a task's records come from more than
    one run; duplicate records of one input and task (appended manifests) are flagged. Returns the
    provenance of each run by name."""
    runs: dict[str, dict[str, Any]] = {}
    names: dict[tuple[str, str], str] = {}
    per_task: dict[str, int] = {}
    for case in cases:
        identity = run_identity(case.provenance)
        if identity is None:
            if case.status == "ok":
                case.problems.append("the record has no provenance (written by an older mitk, or not by a "
                                     "batch): it cannot be checked or replayed")
            continue
        if (case.task, identity) not in names:
            per_task[case.task] = per_task.get(case.task, 0) + 1
            names[(case.task, identity)] = f"{case.task} run {per_task[case.task]}"
            runs[names[(case.task, identity)]] = dict(case.provenance or {})
        case.run = names[(case.task, identity)]
    for case in cases:
        if case.run is not None and per_task.get(case.task, 0) > 1:
            case.problems.append(f"outputs of {per_task[case.task]} different {case.task} runs are mixed here "
                                 f"(plugin, versions, settings or weights differ); this record is from {case.run}")
    seen: dict[tuple[str, str], int] = {}
    for case in cases:
        if case.input:
            seen[(case.task, case.input)] = seen.get((case.task, case.input), 0) + 1
    for case in cases:
        count = seen.get((case.task, case.input), 0)
        if count > 1:
            case.problems.append(f"{count} records of this input for {case.task} (manifests appended to); each is "
                                 "shown")
    return runs


def load_cases(sources: Sequence[Path]) -> tuple[list[ReportCase], list[str], dict[str, dict[str, Any]]]:
    """The cases of manifest files and output folders, the problems of the sources, and the runs found: runs are
    told apart across all the sources, so that two manifests of different runs are said to be mixed."""
    cases: list[ReportCase] = []
    problems: list[str] = []
    for source in sources:
        found, said = read_folder(source) if source.is_dir() else read_manifest(source)
        cases += found
        problems += said
    return cases, problems, mark_runs(cases)
