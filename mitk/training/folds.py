"""Cross-validation: K folds of one data set, each trained as a normal run in ``RUN/fold_i``.

``mitk train TASK ... --folds K`` reads the data once, deals every case into one of K folds and trains fold
0..K-1: fold i validates on its own cases and trains on the others. ``--fold i`` trains one fold (for job arrays):
the split is drawn from the data and the seed alone, so every job draws the same. ``RUN/folds.json`` records it:
the seed, the grouping and each fold's cases. Cases of one group (a ``group``/``patient`` key, or, without one,
images with the same content: :func:`mitk.training.splits.same_content_groups`) stay in one fold; a task that
stratifies (classification: by class) spreads each stratum evenly over the folds. ``mitk <task> --weights RUN``
then averages every fold's best checkpoint (:mod:`mitk.runner.ensemble`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mitk.errors import InputError, OutputExistsError, UsageError
from mitk.io.atomic import write_text_atomic
from mitk.training.data import Datalist, read_case_image
from mitk.training.folder import LAST_NAME, STATE_NAME, check_output_dir
from mitk.training.splits import GROUP_KEYS, case_group, same_content_groups, units_of

FOLDS_FORMAT = 1
FOLDS_NAME = "folds.json"
FOLD_PREFIX = "fold_"


def fold_dir(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / f"{FOLD_PREFIX}{fold}"


def case_id(case: dict[str, Any], source: Path) -> str:
    """A case's name in ``folds.json``: its (first) image's path relative to the data's folder."""
    image = case["image"][0] if isinstance(case["image"], list) else case["image"]
    base = source if source.is_dir() else source.parent
    path = Path(str(image))
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def fold_groups(cases: Sequence[dict[str, Any]], datalist: Datalist) -> tuple[list[str | None], str | None]:
    """The group of each case and how groups were found: a group key of the data (``group``, ``patient`` …), the
    same content (``same-content``, warned about by :func:`same_content_groups`) or none."""
    named = [case_group(case) for case in cases]
    if any(group is not None for group in named):
        key = next(k for k in GROUP_KEYS if any(case.get(k) not in (None, "") for case in cases))
        return named, key
    found = datalist.extra.get("content_groups")  # the recipe looked already (classification)
    if isinstance(found, dict):
        groups = [found.get(json.dumps(case["image"])) for case in cases]
    else:
        groups = same_content_groups(cases, lambda image: read_case_image(image).array, Path(datalist.source))
    return groups, "same-content" if any(groups) else None


def assign_folds(cases: Sequence[dict[str, Any]], folds: int, seed: int, groups: Sequence[str | None],
                 stratum: Callable[[dict[str, Any]], str] | None = None) -> list[int]:
    """The fold of each case: units (a group, or a case alone) shuffled with ``seed`` per stratum, largest
    first, each into the fold with the fewest cases of its stratum, then the fewest cases (then the lowest)."""
    units = units_of(cases, groups)
    if len(units) < folds:
        raise InputError(f"{len(cases)} cases in {len(units)} groups cannot make {folds} folds")
    strata: dict[str, list[list[int]]] = {}
    for unit in units:
        strata.setdefault(stratum(cases[unit[0]]) if stratum else "", []).append(unit)
    generator = random.Random(seed)
    totals = [0] * folds
    assigned = [0] * len(cases)
    for name in sorted(strata):
        members = strata[name]
        generator.shuffle(members)
        members.sort(key=len, reverse=True)  # stable: the shuffle orders units of one size
        counts = [0] * folds
        for unit in members:
            target = min(range(folds), key=lambda f: (counts[f], totals[f], f))
            counts[target] += len(unit)
            totals[target] += len(unit)
            for index in unit:
                assigned[index] = target
    if min(totals) == 0:
        raise InputError(f"cannot make {folds} folds with a case in each from {len(units)} groups")
    return assigned


def fold_split(datalist: Datalist, folds: int, seed: int,
               stratum: Callable[[dict[str, Any]], str] | None = None) -> tuple[list[Datalist], dict[str, Any]]:
    """Each fold's :class:`Datalist` (its validation: its own cases; its training: the others) and the
    ``folds.json`` document. A given validation list joins the training cases before the folds are dealt."""
    cases = datalist.training + datalist.validation
    if folds < 2:
        raise UsageError("--folds needs at least 2 folds")
    groups, grouping = fold_groups(cases, datalist)
    assigned = assign_folds(cases, folds, seed, groups, stratum)
    source = Path(datalist.source)
    splits = [Datalist(source=source, training=[c for c, f in zip(cases, assigned, strict=True) if f != fold],
                       validation=[c for c, f in zip(cases, assigned, strict=True) if f == fold],
                       labels=datalist.labels, held_out=True, extra=dict(datalist.extra))
              for fold in range(folds)]
    document = {"format": FOLDS_FORMAT, "folds": folds, "seed": seed, "grouping": grouping,
                "source": str(source.resolve()),
                "cases": [[case_id(c, source) for c, f in zip(cases, assigned, strict=True) if f == fold]
                          for fold in range(folds)]}
    return splits, document


def save_folds(run_dir: Path, document: dict[str, Any]) -> Path:
    """Write ``folds.json``; one that records another split (other data, seed or folds) is refused."""
    path = Path(run_dir) / FOLDS_NAME
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved != document:
            raise OutputExistsError("the run folder records another cross-validation split (other data, seed or "
                                    "number of folds): use another folder or --overwrite", path)
        return path
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(document, indent=2), overwrite=True)


def check_run_dir(run_dir: Path, folds: int, chosen: Sequence[int], resume: bool, overwrite: bool) -> list[bool]:
    """Refuse before anything trains: a folder of another kind of run, or a fold folder in use. Returns, per
    chosen fold, whether it resumes (with ``resume``, a fold without a saved state starts)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError("output path exists and is not a folder", run_dir)
    if run_dir.is_dir() and not overwrite and not (run_dir / FOLDS_NAME).is_file() and any(
            p.name != FOLDS_NAME and not p.name.startswith(FOLD_PREFIX) for p in run_dir.iterdir()):
        raise OutputExistsError("run folder holds another run (not a fold run): use another folder", run_dir)
    resuming = []
    for fold in chosen:
        folder = fold_dir(run_dir, fold)
        again = resume and (folder / LAST_NAME).is_file() and (folder / STATE_NAME).is_file()
        check_output_dir(folder, again, overwrite)
        resuming.append(again)
    return resuming


def chosen_folds(folds: int | None, fold: int | None) -> list[int]:
    """The folds to train: all of ``--folds K``, or ``--fold I`` alone (which needs ``--folds``)."""
    if folds is None:
        if fold is not None:
            raise UsageError("--fold I needs --folds K (the number of folds the split is dealt into)")
        return []
    if folds < 2:
        raise UsageError("--folds needs at least 2 folds")
    if fold is not None and not 0 <= fold < folds:
        raise UsageError(f"--fold must be 0 to {folds - 1}, got {fold}")
    return [fold] if fold is not None else list(range(folds))


def train_folds(task: str, *, plugin: str | None, data: str | Path | None, output_dir: str | Path, folds: int,
                fold: int | None = None, options: dict[str, Any] | None = None,
                overrides: dict[str, Any] | None = None, resume: bool = False, overwrite: bool = False,
                console: Any = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
                on_ready: Callable[[str], None] | None = None,
                on_fold: Callable[[int], None] | None = None,
                start: dict[str, Any] | None = None) -> tuple[list[Any], Path]:
    """Train the chosen folds (all, or ``fold``) into ``output_dir/fold_i`` and write ``folds.json``; returns
    the :class:`~mitk.training.loop.TrainingRun` of each fold trained and the ``folds.json`` path. ``start``:
    the ``plan``/``init``/``init_skip_mismatched`` arguments of :func:`~mitk.training.train.train` for every
    fold that starts afresh."""
    from mitk.taskspecs import get_task
    from mitk.training.loop import TrainingOptions
    from mitk.training.train import train

    run_dir = Path(output_dir)
    chosen = chosen_folds(folds, fold)
    resuming = check_run_dir(run_dir, folds, chosen, resume, overwrite)
    if not data:
        saved = _saved_source(run_dir)
        if saved is None:
            raise UsageError("--data is required")
        data = saved
    seed = TrainingOptions.from_dict(dict(options or {})).seed
    recipe = get_task(task).load_recipe()
    datalist = recipe.read_datalist(Path(data), seed=seed, validation_fraction=0.2)
    splits, document = fold_split(datalist, folds, seed, stratum=recipe.stratum)
    folds_file = save_folds(run_dir, document)
    runs = []
    for index, again in zip(chosen, resuming, strict=True):
        if on_fold is not None:
            on_fold(index)
        runs.append(train(task, plugin=plugin, data=data, output_dir=fold_dir(run_dir, index), options=options,
                          overrides=None if again else overrides, resume=again, overwrite=overwrite,
                          console=console, on_epoch=on_epoch, on_ready=on_ready,
                          datalist=None if again else splits[index], **({} if again else dict(start or {}))))
    return runs, folds_file


def _saved_source(run_dir: Path) -> str | None:
    try:
        return str(json.loads((run_dir / FOLDS_NAME).read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
