"""``plan_data(data, plugin, budget)``: fingerprint a data set and plan a plugin of any task `mitk plan` knows.

Segmentation: :mod:`mitk.training.fingerprint` and :mod:`mitk.training.planning` (nnU-Net's rules);
classification: :mod:`mitk.training.planning_classify`; detection: :mod:`mitk.training.planning_detect`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mitk.training.planning import Budget, make_plan, planned_task


def plan_data(data: str | Path, plugin: str, budget: Budget) -> dict[str, Any]:
    """Fingerprint the data set ``data`` (a datalist or folder of ``plugin``'s task) and plan ``plugin``."""
    task = planned_task(plugin)
    if task == "segment":
        from mitk.training.fingerprint import fingerprint_datalist

        return make_plan(fingerprint_datalist(data), plugin, budget)
    from mitk.plugin_manager import get_registry

    instance = get_registry().get(plugin, task).load()
    if task == "classify":
        from mitk.training.planning_classify import plan_classify

        return plan_classify(data, plugin, instance, budget)
    from mitk.training.planning_detect import plan_detect

    return plan_detect(data, plugin, instance, budget)
