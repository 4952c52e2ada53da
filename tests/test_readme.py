"""The README tells the truth about what ships: its table of built-in plugins matches the registry."""

from __future__ import annotations

import re
from pathlib import Path

from mitk.plugin_manager import BUILTIN_DISTRIBUTION, build_plugin_manager
from mitk.taskspecs import TASKS

README = Path(__file__).resolve().parents[1] / "README.md"


def _table() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- builtin-plugins -->", 1)[1].split("<!-- /builtin-plugins -->", 1)[0]
    rows = [line.split("|")[1:-1] for line in block.strip().splitlines()[2:]]
    return {cells[0].strip(): re.findall(r"`([\w-]+)`", cells[1].split(":")[0].split("(")[0]) for cells in rows}


def test_readme_lists_exactly_the_builtin_plugins_per_task() -> None:
    registry = build_plugin_manager(autoload=False)[1]
    builtin: dict[str, list[str]] = {spec.name: [] for spec in TASKS.values()}
    for entry in registry:
        if entry.distribution == BUILTIN_DISTRIBUTION:
            builtin[entry.task.value].append(entry.name)
    assert {task: sorted(names) for task, names in _table().items()} == \
        {task: sorted(names) for task, names in builtin.items()}


def test_readme_train_and_evaluate_columns_match_the_task_table() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- builtin-plugins -->", 1)[1].split("<!-- /builtin-plugins -->", 1)[0]
    for line in block.strip().splitlines()[2:]:
        task, _, train, evaluate = (cell.strip() for cell in line.split("|")[1:-1])
        spec = TASKS[next(t for t in TASKS if t.value == task)]
        assert (train == f"`mitk train {task}`") == spec.trainable, task
        assert (evaluate == f"`mitk evaluate {task}`") == (spec.evaluation is not None), task


def test_main_command_plans_instead_of_hand_setting_spacing_patch_and_channels() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- main-command -->", 1)[1].split("<!-- /main-command -->", 1)[0]
    assert "mitk plan demo/data" in block and "mitk train segment" in block
    assert block.index("mitk plan") < block.index("mitk train")
    for hand_set in ("--patch-size", "spacing=", "network.channels", "network.strides"):
        assert hand_set not in block, hand_set
