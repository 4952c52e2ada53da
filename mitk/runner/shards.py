"""Sharded batches: ``--shard I/N`` picks a stable part of a batch, and shard manifests are merged back.

Two splits (``--shard-by``), both computed by every shard of a job array from the same arguments, without
talking to the others:

- ``hash`` (the default): a case belongs to shard ``sha256(path) mod N``, where ``path`` is the input's path as
  the command line expanded it, normalised (``a/./b`` and ``a//b`` are ``a/b``). Each case's shard depends on
  its own path only, so adding files to a cohort never moves the cases already there to another shard; the
  shards' sizes vary by chance (about ±√(cases/N) each).
- ``order``: the inputs sorted by that path, dealt out in turn (nnU-Net's ``-part_id``/``-num_parts``), so
  the shards differ by at most one case. Every shard must list the same inputs: each header records a digest
  of the listing, and :func:`merge_manifests` refuses shards whose listings differ.

A sharded run's manifest starts with a header line naming what the shard was assigned, and every record it
appends carries its shard, so that :func:`merge_manifests` can tell finished, failed and missing cases apart.
No torch here: ``mitk manifest merge`` is a fast command.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.errors import InputError, UsageError

if TYPE_CHECKING:
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseRecord

MANIFEST_FORMAT = 1
"""Version of the manifest header (``{"mitk_manifest": 1, ...}``); a reader refuses a newer one."""
HEADER_KEY = "mitk_manifest"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
SPLITS = ("hash", "order")


# ---------------------------------------------------------------------------------------------------
# Choosing a shard's cases
# ---------------------------------------------------------------------------------------------------


def shard_key(path: str | os.PathLike[str]) -> str:
    """The string a case is hashed by: its path as expanded, normalised (not resolved: symlinks and mount
    points stay as written, so every node of a cluster computes the same key from the same arguments)."""
    return os.path.normpath(os.fspath(path))


def shard_of(path: str | os.PathLike[str], count: int) -> int:
    """The 0-based shard of ``count`` that ``path`` belongs to."""
    digest = hashlib.sha256(shard_key(path).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: ``--shard 3/10`` is the fourth of ten."""

    index: int
    count: int
    by: str = "hash"
    """The split: ``hash`` or ``order`` (see the module's documentation)."""

    @classmethod
    def parse(cls, text: str, by: str = "hash") -> Shard:
        """``"I/N"`` with ``0 <= I < N`` (``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``), else a usage error."""
        if by not in SPLITS:
            raise UsageError(f"--shard-by must be {' or '.join(SPLITS)}, not {by!r}")
        match = _SHARD.match(text)
        if match is None:
            raise UsageError(f"--shard expects I/N with whole numbers, e.g. 0/4, not {text!r}")
        index, count = int(match[1]), int(match[2])
        if count < 1:
            raise UsageError(f"--shard {text}: the number of shards must be at least 1")
        if index >= count:
            raise UsageError(f"--shard {text}: the shard index counts from 0, so it must be below {count}")
        return cls(index, count, by)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def stamp(self, records: Iterator[CaseRecord]) -> Iterator[CaseRecord]:
        """The records of this shard's cases, each carrying its shard (closing this closes ``records``)."""
        try:
            for record in records:
                record.details["shard"] = self.index
                yield record
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()

    def select(self, cases: Sequence[Case]) -> list[Case]:
        """This shard's cases of the whole batch ``cases``, in their original order."""
        if self.by == "hash":
            return [case for case in cases if shard_of(case.path, self.count) == self.index]
        mine = set(sorted_keys(cases)[self.index::self.count])
        return [case for case in cases if shard_key(case.path) in mine]


# ---------------------------------------------------------------------------------------------------
# Writing a shard's manifest
# ---------------------------------------------------------------------------------------------------


def sorted_keys(cases: Sequence[Case]) -> list[str]:
    """The batch's distinct normalised input paths, sorted: what an ``order`` split deals out."""
    return sorted({shard_key(case.path) for case in cases})


def listing_digest(cases: Sequence[Case]) -> str:
    """sha256 of the batch's sorted, normalised input paths: equal for shards that listed the same inputs."""
    return hashlib.sha256("\n".join(sorted_keys(cases)).encode("utf-8", "surrogateescape")).hexdigest()


def manifest_header(task: str, shard: Shard, inputs: Iterable[str], batch: Sequence[Case]) -> dict[str, Any]:
    """The first line a sharded run appends: what this shard was assigned out of the whole ``batch``."""
    header = {HEADER_KEY: MANIFEST_FORMAT, "task": task, "shard": shard.index, "shards": shard.count,
              "by": shard.by, "total": len(batch), "inputs": list(inputs)}
    if shard.by == "order":  # the split depends on the whole listing: merge checks every shard saw the same
        header["listing"] = listing_digest(batch)
    return header


def ends_mid_line(path: Path) -> bool:
    """Whether ``path`` ends inside a line (a killed run's last record, cut short): the next append must start
    a new line, or it would be glued to the broken one and both lost."""
    try:
        with path.open("rb") as existing:
            existing.seek(0, os.SEEK_END)
            if existing.tell() == 0:
                return False
            existing.seek(-1, os.SEEK_END)
            return existing.read(1) != b"\n"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------
# Merging shard manifests
# ---------------------------------------------------------------------------------------------------

DONE = ("ok", "skipped")
STATUSES = (*DONE, "failed", "missing")


@dataclass
class MergedCase:
    """The outcome of one input over every run that recorded it."""

    input: str
    shard: int | None
    status: str
    """``ok``, ``skipped`` (its output existed before any run here), ``failed`` or ``missing`` (assigned to a
    shard that has no record of it)."""
    record: dict[str, Any] | None = None


@dataclass
class MergeReport:
    """Shard manifests combined: the latest record of each case, and what is missing."""

    task: str | None = None
    shards: int | None = None
    """N of the split, or None when no manifest had a header (unsharded runs)."""
    by: str | None = None
    """The split (``hash`` or ``order``), None without shard headers."""
    listing: str | None = None
    """The digest of the inputs every shard of an ``order`` split listed."""
    seen: list[int] = field(default_factory=list)
    total: int | None = None
    """Inputs of the whole batch, as the shards' headers count them (None without headers)."""
    cases: list[MergedCase] = field(default_factory=list)
    damaged_lines: list[str] = field(default_factory=list)
    """``file:line`` of lines that are not JSON objects (a line cut short when a run was killed)."""

    @property
    def missing_shards(self) -> list[int]:
        return [] if self.shards is None else sorted(set(range(self.shards)) - set(self.seen))

    def count(self, status: str) -> int:
        return sum(case.status == status for case in self.cases)

    @property
    def unaccounted(self) -> int:
        """Inputs of the batch that no manifest names: those of shards that never ran."""
        return max(0, (self.total or 0) - len(self.cases))

    def summary(self) -> dict[str, int]:
        return {"cases": len(self.cases), **{status: self.count(status) for status in STATUSES},
                "in_shards_not_run": self.unaccounted}

    @property
    def complete(self) -> bool:
        """Every shard seen and every case done."""
        return not self.missing_shards and all(case.status in DONE for case in self.cases)

    @property
    def exit_code(self) -> int:
        """0 complete, 1 nothing succeeded, 3 some case failed or missing (or a shard never ran)."""
        if not any(case.status in DONE for case in self.cases):
            return 1
        return 0 if self.complete else 3

    def shards_to_rerun(self) -> list[int]:
        """Shards that never ran or have a failed or missing case."""
        unfinished = {case.shard for case in self.cases if case.status not in DONE and case.shard is not None}
        return sorted({*self.missing_shards, *unfinished})

    def by_shard(self) -> list[dict[str, Any]]:
        """One row per shard (seen or not) with its case counts; shard ``-`` holds the unsharded records."""
        indices: list[int | None] = [*sorted({*self.seen, *self.missing_shards,
                                              *(c.shard for c in self.cases if c.shard is not None)})]
        if any(case.shard is None for case in self.cases):
            indices.append(None)
        rows = []
        for index in indices:
            cases = [case for case in self.cases if case.shard == index]
            rows.append({"shard": "-" if index is None else index, "ran": index is None or index in self.seen,
                         "cases": len(cases), **{status: sum(c.status == status for c in cases)
                                                 for status in STATUSES}})
        return rows

    def lines(self) -> list[dict[str, Any]]:
        """The merged manifest: a header naming every input assigned, then one record per recorded case."""
        header = {HEADER_KEY: MANIFEST_FORMAT, "task": self.task, "shards": self.shards, "by": self.by,
                  **({"listing": self.listing} if self.listing is not None else {}), "merged": self.seen,
                  "total": self.total, "inputs": [case.input for case in self.cases]}
        return [header, *(case.record for case in self.cases if case.record is not None)]


@dataclass
class _Manifest:
    headers: list[dict[str, Any]]
    records: list[dict[str, Any]]


def _valid_header(entry: dict[str, Any]) -> bool:
    """A header whose fields have the types a sharded run (or a merge) writes; anything else is a damaged line."""
    common = (isinstance(entry.get("inputs"), list) and all(isinstance(x, str) for x in entry["inputs"])
              and isinstance(entry.get("listing", ""), str))
    if "shard" not in entry and isinstance(entry.get("merged"), list):  # the header of a merge
        return (common and all(isinstance(index, int) for index in entry["merged"])
                and entry.get("by") in (*SPLITS, None)
                and all(entry.get(key) is None or isinstance(entry[key], int) for key in ("shards", "total"))
                and (entry.get("task") is None or isinstance(entry["task"], str)))
    whole = ("shard", "shards", "total")
    return (common and isinstance(entry.get("task"), str) and all(isinstance(entry.get(key), int) for key in whole)
            and entry.get("by", "hash") in SPLITS)


def _contradiction(entry: dict[str, Any]) -> str | None:
    """What a well-formed header says against itself (shard 7 of 4, a total below its own inputs), or None."""
    shards, total, inputs = entry.get("shards"), entry.get("total"), len(entry["inputs"])
    if shards is not None and shards < 1:
        return f"{shards} shards (a split has at least 1)"
    if "shard" in entry and shards is not None and not 0 <= entry["shard"] < shards:
        return f"shard {entry['shard']} of {shards} (shards count from 0 to {shards - 1})"
    merged = [index for index in entry.get("merged") or [] if shards is None or not 0 <= index < shards]
    if merged:
        return f"merged shard {merged[0]} of {shards}"
    if total is not None and total < inputs:
        return f"a total of {total} inputs, but it lists {inputs}"
    return None


def read_manifest(path: Path, damaged: list[str]) -> _Manifest:
    """Headers and records of one manifest file; lines that are not JSON objects are noted in ``damaged``."""
    try:
        content = path.read_bytes()
    except IsADirectoryError:
        raise InputError("is a folder, not a manifest", path) from None
    except FileNotFoundError:
        raise InputError("no such manifest", path) from None
    except OSError as error:
        raise InputError(f"cannot read the manifest ({error.strerror or error})", path) from None
    manifest, bad = _Manifest([], []), []
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # nested too deep: damaged too
            entry = None
        if isinstance(entry, dict) and HEADER_KEY in entry:
            version = entry[HEADER_KEY]
            if not isinstance(version, int) or version > MANIFEST_FORMAT:
                raise InputError(f"manifest format {version!r} is newer than this mitk reads "
                                 f"({MANIFEST_FORMAT}); upgrade mitk", path)
            if _valid_header(entry):
                problem = _contradiction(entry)
                if problem is not None:
                    raise InputError(f"line {number}: the header contradicts itself ({problem})", path)
                manifest.headers.append(entry)
            else:
                bad.append(f"{path}:{number}")
        elif isinstance(entry, dict) and isinstance(entry.get("input"), str) and "status" in entry:
            manifest.records.append(entry)
        else:
            bad.append(f"{path}:{number}")
    if not (manifest.headers or manifest.records):
        raise InputError("not a mitk manifest (no JSON records)" if bad else "empty manifest (no header and no "
                         "records)", path)
    damaged.extend(bad)
    return manifest


def merge_manifests(paths: Sequence[Path]) -> MergeReport:
    """Combine manifests (shards of one split, reruns appended, or an earlier merge).

    The latest record of a case wins, in the order given and line by line, except that ``skipped`` after
    ``ok`` keeps the ``ok`` record (a rerun with ``--skip-existing`` found the output the first run wrote).
    A case assigned by a shard's latest header but recorded nowhere is ``missing``.
    """
    report = MergeReport()
    manifests = [read_manifest(path, report.damaged_lines) for path in paths]
    tasks = {h["task"] for m in manifests for h in m.headers if h.get("task")}
    if len(tasks) > 1:
        raise UsageError(f"these manifests come from different tasks ({', '.join(sorted(tasks))})")
    counts = {h["shards"] for m in manifests for h in m.headers if isinstance(h.get("shards"), int)}
    if len(counts) > 1:
        raise UsageError("these manifests come from different splits "
                         f"({' and '.join(map(str, sorted(counts)))} shards); merge one split at a time")
    splits = {h.get("by", "hash") if "shard" in h else h.get("by") for m in manifests for h in m.headers} - {None}
    if len(splits) > 1:
        raise UsageError("these manifests come from different splits (--shard-by hash and order); "
                         "merge one split at a time")
    report.task = next(iter(tasks), None)
    report.shards = next(iter(counts), None)
    report.by = next(iter(splits), None)
    listings: dict[int, str] = {}
    assigned: dict[int | None, list[str]] = {}
    seen: set[int] = set()
    latest: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        for header in manifest.headers:
            shard = header.get("shard") if isinstance(header.get("shard"), int) else None
            if shard is not None:
                seen.add(shard)
            merged = [index for index in header.get("merged") or [] if isinstance(index, int)]
            seen.update(merged)
            if "listing" in header:  # a shard's own latest header, later in the list, overrides this
                listings.update((index, header["listing"]) for index in ([shard] if shard is not None else merged))
            inputs = [item for item in header.get("inputs") or [] if isinstance(item, str)]
            if shard is None:  # an unsharded run or an earlier merge: its inputs add up
                assigned[None] = [*assigned.get(None, []), *inputs]
            else:  # a shard's latest header says what it holds now
                assigned[shard] = inputs
        for record in manifest.records:
            latest[record["input"]] = record
            if record.get("status") == "ok":
                finished[record["input"]] = record
    if len(set(listings.values())) > 1:
        raise UsageError("the shards of this --shard-by order split listed different inputs (files were added "
                         "or removed between their runs), so some cases may belong to no shard or to two: "
                         "rerun every shard on the same inputs, or use --shard-by hash")
    report.listing = next(iter(set(listings.values())), None)
    shard_of_input = {name: shard for shard, names in assigned.items() for name in names}
    for name in sorted({*latest, *shard_of_input}):
        if name not in latest:
            report.cases.append(MergedCase(name, shard_of_input[name], "missing"))
            continue
        chosen = latest[name]
        status = str(chosen.get("status"))
        if status == "skipped" and name in finished:
            chosen, status = finished[name], "ok"
        shard = chosen.get("shard") if isinstance(chosen.get("shard"), int) else shard_of_input.get(name)
        report.cases.append(MergedCase(name, shard, status if status in (*DONE, "failed") else "failed",
                                       chosen))
    report.seen = sorted(seen)
    report.total = _agreed_total(manifests, assigned, report)
    return report


def _agreed_total(manifests: list[_Manifest], assigned: dict[int | None, list[str]], report: MergeReport
                  ) -> int | None:
    """The batch's total as every header gives it (each shard's latest); headers that disagree, or shards that
    all ran and list another number of inputs than that total, are refused."""
    latest: dict[int | None, int] = {}
    merges: list[int] = []
    for manifest in manifests:
        for header in manifest.headers:
            if isinstance(header.get("total"), int):
                if isinstance(header.get("shard"), int):
                    latest[header["shard"]] = header["total"]
                else:
                    merges.append(header["total"])
    totals = {*latest.values(), *merges}
    if len(totals) > 1:
        raise UsageError(f"these manifests disagree on the batch's total ({' and '.join(map(str, sorted(totals)))} "
                         "inputs): they are not the shards of one split; merge one split at a time")
    total = next(iter(totals), None)
    listed = sum(len(set(names)) for shard, names in assigned.items() if shard is not None)
    if (total is not None and latest and not merges and report.shards is not None and not report.missing_shards
            and listed != total):
        raise UsageError(f"the shards' headers give a total of {total} inputs but together list {listed}")
    return total
