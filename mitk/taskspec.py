"""What a task is made of, written as data: :class:`TaskSpec` (one row of the task table) and :class:`Option`.

A task's package declares one :class:`TaskSpec` and registers it through the ``mitk_register_tasks`` hook
(:mod:`mitk.hookspecs`); mitk's own four tasks do the same (:mod:`mitk.tasks.table`). Parts are named as
``"package.module:attribute"`` strings and imported only when used, so that reading the table (``mitk --help``)
imports no torch or monai. The host builds everything else from the row: the CLI verbs (``mitk <task>``,
``mitk train <task>``, ``mitk evaluate <task>``), the Python API's ``model.<task>`` and ``mitk.<task>``, plugin
checks, and the derived-output suffixes that folder inputs skip.

Options are declared the way pytest's ``addoption`` declares them: the task says what it takes (:class:`Option`),
the CLI builds the parser. The batch options every task verb shares are declared once, in :mod:`mitk.options`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.errors import UsageError

if TYPE_CHECKING:
    from mitk.plugin import TaskPlugin


def import_part(reference: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class Option:
    """One command-line parameter, as data: the host turns it into a Typer option or argument."""

    name: str
    """The Python name the value is passed under (``probabilities``)."""
    flags: tuple[str, ...] = ()
    """``("--probabilities",)``, ``("--output", "-o")`` or ``("--multi-label/--single-label",)``; empty for an
    argument."""
    type: Any = bool
    """The value's type as Typer reads it (``bool``, ``str | None``, ``Path | None``, ``list[str]`` …)."""
    default: Any = None
    help: str = ""
    metavar: str | None = None
    argument: bool = False
    """A positional argument instead of an option."""
    required: bool = False


@dataclass
class VerbPlan:
    """What a task's verb makes of its parsed options (:attr:`TaskSpec.verb`), for the host's batch runner."""

    inputs: list[str]
    """The command-line inputs, expanded by the host into cases."""
    job_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task's batch job (:attr:`TaskSpec.job`) besides the model and output policy."""
    also_inputs: tuple[Path, ...] = ()
    """Further files the batch reads (a fixed image, masks): never written over."""
    on_record: Callable[[Any], None] | None = None
    """Sees each case's record as it is kept (wherever the executor ran the case)."""
    finish: Callable[[], None] | None = None
    """Runs after the batch, also when some cases failed (e.g. writes a CSV of the records)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: its parts, their contracts, and the options of its verbs."""

    name: str
    """The task's name: its verb (``mitk segment``), its API call (``model.segment``), its plugins' ``task``."""
    summary: str
    """One line for help texts."""
    plugin_base: str
    """The class every plugin of this task subclasses."""
    runner: str
    """A class (or a function returning one of several classes, as detection picks a fused runner for an ensemble
    or ``tta``) built from a ``LoadedModel``; calling the runner maps an :class:`~mitk.image.Image` (two for
    registration: fixed, moving) to the task's result type. The Python API's call for the task."""
    job: str
    """``make_job(model, policy, **job_options) -> process(case) -> CaseOutcome``: the batch job of the verb."""
    result: str
    """The typed result class."""
    suffix: str
    """The main output's name suffix, e.g. ``_seg`` for ``ct_seg.nii.gz``."""
    extension: str
    """The main output's extension."""
    verb: str
    """``prepare(values) -> VerbPlan``: checks the verb's parsed options (a dict by :attr:`Option.name`, the
    shared batch options included) and says what to run; refusals are :class:`~mitk.errors.UsageError`."""
    verb_help: str = ""
    """The verb's help text (default: :attr:`summary`)."""
    options: tuple[Option, ...] = ()
    """The verb's own options; one named like a shared option (``output``, ``inputs`` …) replaces it."""
    arguments: tuple[Option, ...] | None = None
    """The verb's positional arguments (default: the shared ``INPUTS``)."""
    image_companions: tuple[str, ...] = ()
    """Suffixes of the images written beside the main output on the input's grid (``_prob``): folder inputs skip
    them too."""
    image_output: bool = True
    """True when the main output is an image on the input's grid (folder inputs skip such files)."""
    takes_fixed: bool = False
    """True for registration: every input is aligned to one fixed image."""
    image_channels: bool = False
    """True when an input may be a 4-D image with channels last (one 3-D volume otherwise)."""
    recipe: str | None = None
    """The training recipe (:class:`mitk.training.recipe.TrainingRecipe`), or None when not trainable."""
    evaluation: str | None = None
    """``evaluate(**values) -> exit code``: the body of ``mitk evaluate <task>``, or None."""
    evaluation_help: str = ""
    evaluation_epilog: str = ""
    evaluation_options: tuple[Option, ...] = ()
    """The options of ``mitk evaluate <task>``; the shared ``--json`` and ``--overwrite`` are
    :data:`mitk.options.JSON` and :data:`mitk.options.OVERWRITE`, listed here by the tasks that take them."""
    out_of_fold: str | None = None
    """``score(cases, results, config) -> dict``: the pooled scores of a fold run's out-of-fold predictions
    (``mitk evaluate crossval RUN --predict``, :mod:`mitk.training.out_of_fold`), or None."""

    @property
    def task(self) -> str:
        """The task's name (as :attr:`name`)."""
        return self.name

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
