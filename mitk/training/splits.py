"""Training/validation splits that keep a patient's images together.

A case may name its ``group`` (or ``patient``): every case of a group goes to the same side of a split that mitk
draws, and a validation list that shares a group with the training list is warned about. Without groups, cases
whose images have the same content (the same decoded pixels, or the same picture re-encoded: a lossy JPEG 2000 of
a radiograph) are found and kept together in the same way, with a warning that names them.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError

GROUP_KEYS = ("group", "patient", "patient_id", "subject")
"""Case keys (CSV columns) that name the group a case belongs to, the first present wins."""
THUMBNAIL = 32
"""Pictures are compared as THUMBNAIL² block means (volumes as (THUMBNAIL/2)³), normalised to zero mean and unit
length."""
SAME_PICTURE = 0.999
"""Correlation of two thumbnails above which two images of one shape are taken for the same picture."""
MAX_COMPARED = 4000
"""Near-duplicates are looked for among at most this many images of one shape (exact copies among all)."""
LOG = logging.getLogger("mitk.training")


def case_group(case: dict[str, Any]) -> str | None:
    """The group a case names (``group``, ``patient``, ``patient_id`` or ``subject``), or None."""
    for key in GROUP_KEYS:
        value = case.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def units_of(cases: Sequence[dict[str, Any]], groups: Sequence[str | None] | None = None) -> list[list[int]]:
    """Case indices in split units: one unit per group, in order of first appearance; an ungrouped case alone."""
    groups = list(groups) if groups is not None else [case_group(c) for c in cases]
    units: list[list[int]] = []
    where: dict[str, int] = {}
    for index, group in enumerate(groups):
        if group is None:
            units.append([index])
        elif group in where:
            units[where[group]].append(index)
        else:
            where[group] = len(units)
            units.append([index])
    return units


def grouped_hold_out(cases: list[dict[str, Any]], seed: int, fraction: float,
                     stratum: Callable[[dict[str, Any]], str] | None = None,
                     groups: Sequence[str | None] | None = None) -> set[int]:
    """The indices to hold out for validation: per stratum (all cases one stratum by default; a group belongs to
    the stratum of its first case), a seeded shuffle of its units, taken while the held-out cases stay within
    ``round(fraction × cases)`` (at least one unit), never every unit of a stratum. Without groups this is a
    seeded shuffle of the cases, the first ``round(fraction × n)`` held out."""
    units = units_of(cases, groups)
    strata: dict[str, list[int]] = {}
    for number, unit in enumerate(units):
        strata.setdefault(stratum(cases[unit[0]]) if stratum else "", []).append(number)
    generator = random.Random(seed)
    chosen: set[int] = set()
    for name in sorted(strata):
        members = strata[name]
        generator.shuffle(members)
        if len(members) < 2:
            continue
        size = sum(len(units[m]) for m in members)
        target = min(size - 1, max(1, round(fraction * size)))
        held = 0
        for position, member in enumerate(members):
            if held >= target or position == len(members) - 1:
                break
            if held == 0 or held + len(units[member]) <= target:
                chosen.update(units[member])
                held += len(units[member])
    return chosen


def warn_shared_groups(training: list[dict[str, Any]], validation: list[dict[str, Any]], source: Path) -> int:
    """Warn when a group has cases on both sides of a given split; returns the number of such groups."""
    shared = sorted({g for c in training if (g := case_group(c)) is not None}
                    & {g for c in validation if (g := case_group(c)) is not None})
    if shared:
        LOG.warning("%s: %d group(s) have cases in both the training and the validation list (e.g. %r): "
                    "validation scores will be optimistic", source, len(shared), shared[0])
    return len(shared)


def _fingerprint(array: np.ndarray) -> tuple[str, tuple[int, ...], np.ndarray]:
    """(hash of the decoded pixels, spatial shape, normalised thumbnail) of an image array."""
    from skimage.transform import resize

    values = np.asarray(array)
    digest = hashlib.sha256(str((values.shape, values.dtype.str)).encode() + np.ascontiguousarray(values).tobytes())
    spatial = np.squeeze(np.asarray(values, dtype=np.float32))
    if spatial.ndim > 3:
        spatial = spatial.reshape(*spatial.shape[:3], -1).mean(axis=-1)  # channels → one intensity
    if spatial.ndim == 3 and spatial.shape[-1] in (3, 4) and min(spatial.shape[:2]) > 16:
        spatial = spatial.mean(axis=-1)  # a colour picture
    shape = tuple(int(n) for n in spatial.shape)
    side = THUMBNAIL if spatial.ndim <= 2 else THUMBNAIL // 2  # 32² pictures, 16³ volumes
    factors = [max(1, n // side) for n in spatial.shape]  # block means first: cheap on a 2000² radiograph
    cropped = spatial[tuple(slice(0, n - n % f) for n, f in zip(spatial.shape, factors, strict=True))]
    blocks = cropped.reshape([v for n, f in zip(cropped.shape, factors, strict=True) for v in (n // f, f)])
    reduced = blocks.mean(axis=tuple(range(1, blocks.ndim, 2)))
    thumbnail = resize(reduced, (side,) * spatial.ndim, order=1, anti_aliasing=False,
                       preserve_range=True).ravel().astype(np.float32)
    thumbnail = thumbnail - thumbnail.mean()
    norm = float(np.linalg.norm(thumbnail))
    return digest.hexdigest(), shape, thumbnail / norm if norm > 0 else thumbnail


def same_content_groups(cases: Sequence[dict[str, Any]], read: Callable[[Any], np.ndarray],
                        source: Path) -> list[str | None]:
    """A group name per case for cases whose images show the same picture (identical decoded pixels, or
    thumbnails correlated above :data:`SAME_PICTURE` at one shape), None for a case alike to no other; warns
    once with the count and an example."""
    prints = [_fingerprint(read(case["image"])) for case in cases]
    parent = list(range(len(cases)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def join(first: int, second: int) -> None:
        parent[root(second)] = root(first)

    by_hash: dict[str, int] = {}
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, (digest, shape, _) in enumerate(prints):
        if digest in by_hash:
            join(by_hash[digest], index)
        else:
            by_hash[digest] = index
        by_shape.setdefault(shape, []).append(index)
    for members in by_shape.values():
        if 1 < len(members) <= MAX_COMPARED:
            matrix = np.stack([prints[m][2] for m in members])
            similar = np.argwhere(np.triu(matrix @ matrix.T, k=1) > SAME_PICTURE)
            for a, b in similar:
                join(members[a], members[b])
    roots = [root(i) for i in range(len(cases))]
    sizes = np.bincount(roots, minlength=len(cases))
    groups = [f"same-content-{r}" if sizes[r] > 1 else None for r in roots]
    repeated = [i for i in range(len(cases)) if sizes[roots[i]] > 1]
    if repeated:
        first = repeated[0]
        twin = next(i for i in repeated if i != first and roots[i] == roots[first])
        LOG.warning("%s: %d images show the same picture as another case (same decoded pixels or the same image "
                    "re-encoded), e.g. %s and %s: they are kept in one split; name each case's patient in a "
                    "'group' column to control this", source, len(repeated), Path(str(_first(cases[first]))).name,
                    Path(str(_first(cases[twin]))).name)
    return groups


def _first(case: dict[str, Any]) -> Any:
    image = case["image"]
    return image[0] if isinstance(image, list) else image


def split_by_groups(cases: list[dict[str, Any]], seed: int, fraction: float, source: Path,
                    stratum: Callable[[dict[str, Any]], str] | None = None,
                    groups: Sequence[str | None] | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, validation) from :func:`grouped_hold_out`; refuses a split that would leave a side empty."""
    if len(cases) < 2:
        raise InputError(f"{len(cases)} training case(s): need at least 2 to hold one out for validation, "
                         'or give a "validation" list', source)
    chosen = grouped_hold_out(cases, seed, fraction, stratum, groups)
    if not chosen:
        what = "class" if stratum else "split"
        raise InputError(f"cannot hold out a validation set: no {what} has two groups of cases (a group, a "
                         "patient or one picture); give a validation list", source)
    return ([c for i, c in enumerate(cases) if i not in chosen], [c for i, c in enumerate(cases) if i in chosen])
