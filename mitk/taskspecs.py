"""The task table: what each of mitk's tasks is made of, written as data.

One :class:`TaskSpec` per task names its plugin base class, the runner that turns one image (or a fixed and
a moving image) into a typed result, the batch job that writes that result, the suffixes of the files it
writes, its training recipe and its evaluation. The CLI verbs (``mitk segment``, ``mitk train segment``,
``mitk evaluate segment``), the derived-output suffixes that folder inputs skip, plugin checks and
``mitk plugins info`` all read this table, so adding a task is a row here plus the modules the row names.

Parts are named as ``"package.module:attribute"`` strings and imported only when used: this module stays
free of torch and monai so that ``mitk --help`` is fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mitk.enums import Task
from mitk.errors import UsageError

if TYPE_CHECKING:
    from mitk.tasks import TaskPlugin


def import_part(reference: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its parts and their contracts."""

    task: Task
    summary: str
    """One line for help texts."""
    plugin_base: str
    """The class every plugin of this task subclasses (:mod:`mitk.tasks`)."""
    runner: str
    """A class built from a ``LoadedModel``; calling it maps an :class:`~mitk.types.Image` (two for
    registration: fixed, moving) to the task's result type. The Python API's call for the task."""
    job: str
    """``make_job(model, policy, **options) -> process(case) -> CaseOutcome``: the batch job of the CLI verb."""
    result: str
    """The typed result class (:mod:`mitk.types`)."""
    suffix: str
    """The main output's name suffix, e.g. ``_seg`` for ``ct_seg.nii.gz``."""
    extension: str
    """The main output's extension."""
    companion_suffixes: tuple[str, ...] = ()
    """Suffixes of the files written beside the main output (``_prob``, ``_stats`` …)."""
    image_companions: tuple[str, ...] = ()
    """Those companions that are images on the input's grid (folder inputs skip them too)."""
    image_output: bool = True
    """True when the main output is an image on the input's grid (folder inputs skip such files)."""
    takes_fixed: bool = False
    """True for registration: every input is aligned to one fixed image."""
    image_channels: bool = False
    """True when an input may be a 4-D image with channels last (one 3-D volume otherwise)."""
    recipe: str | None = None
    """The training recipe (:class:`mitk.training.recipe.TrainingRecipe`), or None when not trainable."""
    evaluation: str | None = None
    """The scoring module for ``mitk evaluate <task>``, or None."""

    @property
    def name(self) -> str:
        return self.task.value

    @property
    def trainable(self) -> bool:
        return self.recipe is not None

    def base_class(self) -> type[TaskPlugin]:
        base: type[TaskPlugin] = import_part(self.plugin_base)
        return base

    def load_recipe(self) -> Any:
        if self.recipe is None:
            raise UsageError(f"the {self.name} task has no training recipe")
        return import_part(self.recipe)()


TASKS: dict[Task, TaskSpec] = {
    spec.task: spec
    for spec in (
        TaskSpec(
            task=Task.SEGMENT,
            summary="Segment images into integer label maps on each input's exact grid.",
            plugin_base="mitk.tasks:SegmentationPlugin",
            runner="mitk.runner.segment:SegmentationRunner",
            job="mitk.runner.segment:make_segment_job",
            result="mitk.types:SegmentationResult",
            suffix="_seg", extension=".nii.gz",
            companion_suffixes=("_prob", "_stats", "_preview"), image_companions=("_prob",),
            recipe="mitk.training.segment:SegmentationRecipe",
            evaluation="mitk.evaluation.segmentation",
        ),
        TaskSpec(
            task=Task.CLASSIFY,
            summary="Classify images: per-class probabilities and the predicted class.",
            plugin_base="mitk.tasks:ClassificationPlugin",
            runner="mitk.runner.classify:ClassificationRunner",
            job="mitk.runner.classify:make_classify_job",
            result="mitk.types:ClassificationResult",
            suffix="_class", extension=".json", image_output=False, image_channels=True,
            companion_suffixes=("_gradcam",), image_companions=("_gradcam",),
            recipe="mitk.training.classify:ClassificationRecipe",
            evaluation="mitk.evaluation.classification",
        ),
        TaskSpec(
            task=Task.DETECT,
            summary="Detect objects: boxes in voxel indices and world millimetres, with scores.",
            plugin_base="mitk.tasks:DetectionPlugin",
            runner="mitk.runner.detect:DetectionRunner",
            job="mitk.runner.detect:make_detect_job",
            result="mitk.types:DetectionResult",
            suffix="_boxes", extension=".json", image_output=False,
            companion_suffixes=("_preview",),
            recipe="mitk.training.detect:DetectionRecipe",
            evaluation="mitk.evaluation.detection",
        ),
        TaskSpec(
            task=Task.REGISTER,
            summary="Register moving images to a fixed image; write each on the fixed grid with its transform.",
            plugin_base="mitk.tasks:RegistrationPlugin",
            runner="mitk.runner.register:RegistrationRunner",
            job="mitk.runner.register:make_register_job",
            result="mitk.types:RegistrationResult",
            suffix="_warped", extension=".nii.gz", takes_fixed=True,
            recipe="mitk.training.register:RegistrationRecipe",
            evaluation="mitk.evaluation.registration",
        ),
    )
}


def get_task(task: Task | str) -> TaskSpec:
    """The spec of ``task``; a usage error names the known tasks."""
    try:
        return TASKS[Task(task)]
    except ValueError:
        known = ", ".join(t.value for t in TASKS)
        raise UsageError(f"unknown task {task!r} (known: {known})") from None


def iter_tasks() -> Iterator[TaskSpec]:
    return iter(TASKS.values())


def derived_suffixes() -> tuple[str, ...]:
    """Name suffixes of the image files mitk writes (main outputs and image companions)."""
    suffixes: list[str] = []
    for spec in TASKS.values():
        if spec.image_output:
            suffixes.append(spec.suffix)
        suffixes.extend(spec.image_companions)
    return tuple(dict.fromkeys(suffixes))
