"""Out-of-fold predictions of a fold run: every case predicted by the fold that validated it (and so never trained
on it), the pooled predictions scored by the task (:attr:`mitk.taskspec.TaskSpec.out_of_fold`).

This is nnU-Net's cross-validation summary: one score over all the cases, each predicted by a model that did
not see it, rather than the mean of the folds' scores on a few cases each. ``mitk evaluate crossval RUN
--predict`` runs it (``--tta`` adds the test-time flips to every prediction); in Python::

    from mitk.training.out_of_fold import out_of_fold
    scores = out_of_fold("run/")          # {"task", "cases", "folds", "scores": {...}, "passes": ...}
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from mitk.errors import InputError, UsageError
from mitk.training.folds import FOLDS_NAME, case_id, fold_dir

BEST_NAME = "best.safetensors"


def read_split(run_dir: Path) -> tuple[Path, int, list[list[str]]]:
    """The data source, seed and validation case names per fold that ``folds.json`` records."""
    path = run_dir / FOLDS_NAME
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a folds run: no {FOLDS_NAME} (train with --folds K)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return Path(document["source"]), int(document["seed"]), [[str(c) for c in fold] for fold in document["cases"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("not a folds file written by mitk train --folds (source, seed, cases)", path) from None


def out_of_fold(run_dir: str | os.PathLike[str], *, tta: bool = False, device: str | None = None
                ) -> dict[str, Any]:
    """Predict each fold's validation cases with that fold's best checkpoint and score them pooled."""
    from mitk.io.reader import require_volume
    from mitk.runner.model import load_model, resolve_task
    from mitk.taskspecs import get_task, import_part
    from mitk.training.data import read_case_image

    run_dir = Path(run_dir)
    source, seed, folds = read_split(run_dir)
    checkpoints = [fold_dir(run_dir, k) / BEST_NAME for k in range(len(folds))]
    missing = [path.parent.name for path in checkpoints if not path.is_file()]
    if missing:
        raise UsageError(f"{run_dir}: no best checkpoint for {', '.join(missing)}: out-of-fold predictions need "
                         "every fold trained")
    if not source.exists():
        raise InputError("the data the folds were drawn from is gone (folds.json's source)", source)
    spec = get_task(resolve_task(None, checkpoints[0]))
    first = load_model(spec.name, None, checkpoints[0], device=device)
    if spec.out_of_fold is None or spec.recipe is None:
        raise UsageError(f"{spec.name}: no out-of-fold scoring for this task")
    datalist = spec.load_recipe().read_datalist(source, seed=seed, validation_fraction=0.2)
    by_name = {case_id(case, source): case for case in datalist.training + datalist.validation}
    unknown = sorted({name for fold in folds for name in fold} - set(by_name))
    if unknown:
        raise InputError(f"the data no longer lists {len(unknown)} case(s) of the split, e.g. {unknown[0]}", source)
    runner_class = import_part(spec.runner)
    accepted = inspect.signature(runner_class).parameters
    options = {name: value for name, value in (("tta", tta), ("uncertainty", True)) if name in accepted}
    if tta and "tta" not in accepted:
        raise UsageError(f"{spec.name}: the runner takes no tta")
    cases, results, passes = [], [], None
    for fold, names in enumerate(folds):
        model = first if fold == 0 else load_model(spec.name, None, checkpoints[fold], device=device)
        runner = runner_class(model, **options)
        for name in names:
            case = by_name[name]
            image = require_volume(read_case_image(case["image"]), channels=spec.image_channels)
            result = runner(image)
            passes = getattr(result, "pass_counts", None) or getattr(result, "passes", None) or passes
            cases.append(case)
            results.append(result)
    scores = import_part(spec.out_of_fold)(cases, results, first.config)
    return {"task": spec.name, "cases": len(results), "folds": len(folds), "tta": tta,
            "passes_per_case": passes if isinstance(passes, (int, dict)) else 1, "scores": scores}
