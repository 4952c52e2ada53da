"""What a task brings to the one training engine: its recipe and its training step.

A :class:`TrainingRecipe` is a task's part of training, named in the task table
(its ``recipe``, :mod:`mitk.taskspec`): the datalist schema and how a case is read, the settings found from the data
(channels, label or class names), the default :class:`TrainingStep`, and the collate function. Everything
else — seeding, loaders, optimiser and schedule, mixed precision, validation cadence, best/last checkpoints,
resume, logs — is the engine's (:mod:`mitk.training.loop`, :mod:`mitk.training.train`), shared by all tasks.

A plugin may replace the recipe's step with its own (``TaskPlugin.training_step``), e.g. a detector whose
network returns its own losses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mitk.plugin import TrainingStep

if TYPE_CHECKING:

    from mitk.plugin import TaskPlugin
    from mitk.training.data import Datalist



class TrainingRecipe:
    """A task's part of training. Subclass it per task and name the subclass in the task table."""

    task: ClassVar[str]

    def read_datalist(self, source: Path, *, seed: int, validation_fraction: float) -> Datalist:
        """Read the training data description; hold out a seeded validation set when none is given."""
        raise NotImplementedError

    def stratum(self, case: dict[str, Any]) -> str:
        """The stratum a case belongs to, spread evenly over cross-validation folds (classification: its
        class); one stratum by default."""
        return ""

    def check_case(self, case: Mapping[str, Any], source: Path) -> None:
        """Refuse a case whose files are missing (used again when a run resumes from its saved split)."""

    def found_config(self, datalist: Datalist) -> dict[str, Any]:
        """Plugin settings found from the data (``in_channels``, label or class names); user settings win."""
        return {}

    def case_loader(self, plugin: TaskPlugin, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A deterministic dictionary transform that reads one datalist case into tensors."""
        raise NotImplementedError

    def training_step(self, plugin: TaskPlugin, config: dict[str, Any]) -> TrainingStep:
        """The default step for this task (a plugin's own ``training_step`` takes precedence)."""
        raise NotImplementedError

    def collate(self) -> Callable[[list[Any]], Any] | None:
        """The loaders' collate function; ``None`` keeps MONAI's ``list_data_collate``."""
        return None

    def describe(self, datalist: Datalist, config: dict[str, Any]) -> str:
        """One line for the user once the data is loaded."""
        summary = datalist.summary()
        held = " (held out)" if summary["held_out"] else ""
        return (f"training on {summary['training_cases']} cases, validating on "
                f"{summary['validation_cases']}{held}")
