"""``train(task, plugin, data, options)``: the one entry point that trains any task's plugin.

The task's recipe (from the task table) reads the data and supplies the training step; the engine
(:class:`mitk.training.loop.Trainer`) does the rest. A run folder remembers everything needed to resume it
exactly: the plugin and its resolved settings (``last.safetensors``), the training options and the data
source (``training_state.pt``), and the training/validation split (``split.json``).

Started by ``torchrun`` (``WORLD_SIZE`` > 1), every process joins the process group after the arguments are
checked, reads the data and the resume state, and waits for the others; then rank 0 alone prepares the run
folder and writes it (:mod:`mitk.training.distributed`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitk.enums import Task
from mitk.errors import CheckpointError, InputError, PluginError, UsageError
from mitk.io.atomic import write_text_atomic
from mitk.plugin_manager import get_registry
from mitk.taskspecs import get_task
from mitk.training import distributed
from mitk.training.data import Datalist, make_dataset, pipeline, read_case_image
from mitk.training.folder import RUN_FILES, SPLIT_NAME, check_output_dir, prepare_output_dir
from mitk.training.loop import (
    ModelSpec,
    ResumePoint,
    Trainer,
    TrainingOptions,
    TrainingRun,
    check_optimisation,
    load_resume_point,
    resumed_options,
    unwrapped_errors,
)
from mitk.training.recipe import TrainingRecipe

SPLIT_FORMAT = 1
_NOT_PATHS = ("name",)


def train(task: Task | str, *, plugin: str | None, data: str | Path | None, output_dir: str | Path,
          options: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
          overwrite: bool = False, console: Any = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          on_ready: Callable[[str], None] | None = None, datalist: Datalist | None = None,
          plan: str | Path | bool | None = None, init: str | Path | None = None,
          init_skip_mismatched: bool = False) -> TrainingRun:
    """Train ``plugin`` for ``task`` on ``data`` and write the run folder ``output_dir``.

    ``options`` holds :class:`~mitk.training.loop.TrainingOptions` fields (``None`` = not given: the default,
    or the saved value when resuming); ``overrides`` the plugin settings. A resumed run keeps its plugin,
    settings, options, data and split; flags that contradict them are refused (``epochs``, ``device``,
    ``num_workers`` and ``cache`` may change). ``on_ready(line)`` reports the data once loaded, ``on_epoch(row)``
    each epoch. Under torchrun, ``options["batch_size"]`` is the global batch (divisible by ``WORLD_SIZE``).
    ``datalist``: the split to train on instead of the one the recipe draws (a fold, :mod:`mitk.training.folds`).

    ``plan``: a plan file (:mod:`mitk.training.planning`) whose settings lie between the plugin's defaults and
    ``overrides`` and whose batch size applies when none is given; ``None`` uses ``mitk-plan.json`` beside the
    data when it exists and is for this plugin, ``False`` none. ``init``: a checkpoint (or bundle folder) whose
    layers start the network (:mod:`mitk.training.finetune`); mismatched layers are refused unless
    ``init_skip_mismatched``.
    """
    from mitk.runner.model import resolve_device

    world = distributed.torchrun_world()
    spec = get_task(task)
    recipe: TrainingRecipe = spec.load_recipe()
    output_dir = Path(output_dir)
    given = dict(options or {})
    check_output_dir(output_dir, resume, overwrite)
    point: ResumePoint | None = None
    if resume:
        point = load_resume_point(output_dir)
        plugin, data = _resumed_identity(point, spec.name, plugin, data, overrides)
        training_options = resumed_options(point.options, given)
        if training_options.epochs <= point.epoch:
            raise UsageError(f"the run has finished {point.epoch} epochs already; give a larger --epochs "
                             "to continue it")
        if init is not None:
            raise UsageError("a resumed run continues from its own weights: drop --init")
        plan_document = None
    else:
        plan_document = _plan_for(plan, data, plugin, on_ready, spec.name)
        if plan_document is not None and given.get("batch_size") is None:
            given["batch_size"] = plan_document.get("training", {}).get("batch_size")
        training_options = TrainingOptions.from_dict(given)
    if world is not None:
        distributed.per_rank_batch(training_options.batch_size, world)
    if not plugin:
        raise UsageError("--plugin is required (see `mitk plugins list`)")
    if not data:
        raise UsageError("--data is required")
    entry = get_registry().get(plugin, spec.task)
    instance = entry.load()
    if not getattr(instance, "trainable", False):
        raise PluginError(f"plugin {plugin!r} cannot be trained (it has no trainable network)")

    if point is not None:
        datalist = load_split(output_dir, recipe) or recipe.read_datalist(
            Path(data), seed=training_options.seed, validation_fraction=training_options.validation_fraction)
        config = instance.resolve_config(point.checkpoint.config)
    else:
        _check_settings(instance, plugin, overrides)
        planned = _planned_settings(instance, plugin, plan_document)
        if datalist is None:
            datalist = recipe.read_datalist(Path(data), seed=training_options.seed,
                                            validation_fraction=training_options.validation_fraction)
        config = instance.resolve_config(recipe.found_config(datalist), planned, overrides)
        if plan_document is not None:
            config["plan"] = {"file": plan_document["path"], "settings": planned,
                              "training": plan_document.get("training", {})}
    check_optimisation(config)
    _refuse_writing_over_data(output_dir, Path(data), datalist, [Path(init)] if init is not None else [])
    config["training"] = {k: v for k, v in vars(training_options).items()
                          if k not in ("device", "num_workers", "loggers")}
    device = (resolve_device(training_options.device) if world is None
              else distributed.rank_device(world, training_options.device))
    initial = None
    if init is not None:
        from mitk.training.finetune import match_weights

        initial = match_weights(init, instance.network(config).state_dict(), init_skip_mismatched)
        config["init"] = initial.record()
    with distributed.process_group(world, device) as backend:  # no group for a single process
        loader = recipe.case_loader(instance, config)
        step = instance.training_step(config) or recipe.training_step(instance, config)
        workers = max(1, training_options.num_workers)
        with unwrapped_errors():
            if not training_options.cache:  # check every case now, not deep inside a loader worker
                for case in datalist.training + datalist.validation:
                    loader(case)
            train_dataset = make_dataset(datalist.training,
                                         pipeline(loader, instance.training_transforms(config)),
                                         training_options.cache, workers=workers)
            val_dataset = make_dataset(datalist.validation,
                                       pipeline(loader, instance.validation_transforms(config)),
                                       training_options.cache, workers=workers)
        if on_ready is not None:
            on_ready(recipe.describe(datalist, config))
        distributed.barrier()  # every rank has checked the folder and read the data: rank 0 may now write
        if world is None or world.is_main:
            prepare_output_dir(output_dir, resume, overwrite)
            if point is None:
                save_split(output_dir, datalist)
        expects = point.checkpoint.expects if point is not None else training_profile(datalist)
        model = ModelSpec(task=spec.name, plugin_name=plugin, plugin_version=entry.version, plugin=instance,
                          config=config, expects=expects)
        trainer = Trainer(model, step, train_dataset, val_dataset, training_options, output_dir, device=device,
                          extra_state={"data": str(Path(data).resolve())}, console=console, on_epoch=on_epoch,
                          collate=recipe.collate(), world=world, backend=backend,
                          initial_state=initial.state if initial is not None else None)
        return trainer.fit(point)


PROFILED_CASES = 64
"""Training images read for the model's expectations (evenly spread over the training list)."""
PROFILED_KEYS = ("image", "moving")


def training_profile(datalist: Datalist) -> dict[str, Any]:
    """What the training images are (modality, colour, channels, dims, spacing and intensity ranges), saved in
    the checkpoint so that :mod:`mitk.runner.fit` can tell when an input is unlike them; at most
    :data:`PROFILED_CASES` images are read. Cases whose image cannot be read here are left out."""
    from mitk.runner.fit import training_expectations

    cases = datalist.training
    step = max(1, -(-len(cases) // PROFILED_CASES))
    images = []
    for case in cases[::step]:
        key = next((k for k in PROFILED_KEYS if case.get(k)), None)
        if key is None:
            continue
        try:
            images.append(read_case_image(case[key]))
        except (InputError, OSError, ValueError):
            continue
    return training_expectations(images)


def _resumed_identity(point: ResumePoint, task: str, plugin: str | None, data: str | Path | None,
                      overrides: dict[str, Any] | None) -> tuple[str, str]:
    """The interrupted run's plugin and data; refuses a different task, plugin, data or settings."""
    saved = point.checkpoint
    if overrides:
        raise UsageError("a resumed run keeps its settings: drop --set, --labels, --patch-size and --lr")
    if saved.task != task or not saved.plugin:
        raise CheckpointError(f"the run trained a {saved.task} model, not {task}", saved.path)
    if plugin and plugin != saved.plugin:
        raise CheckpointError(f"the run was trained with plugin {saved.plugin!r}, not {plugin!r}", saved.path)
    saved_data = str(point.extra.get("data") or "")
    if data and saved_data and Path(data).resolve() != Path(saved_data):
        raise UsageError(f"the run was trained on {saved_data}; a resumed run keeps its data (drop --data)")
    if not saved_data:
        raise CheckpointError("the training state does not name its data", saved.path)
    return saved.plugin, saved_data


def _refuse_writing_over_data(output_dir: Path, data: Path, datalist: Datalist, others: list[Path]) -> None:
    """No file of the run folder may be the datalist, a case file or one of ``others`` (the ``--init``
    checkpoint), with or without ``--overwrite``."""
    from mitk.io.atomic import InputFiles, refuse_inputs

    files = [data] if data.is_file() else []
    files += [path for path in others if path.is_file()]
    for case in datalist.training + datalist.validation:
        for key, value in case.items():
            for item in value if isinstance(value, list) else [value]:
                if key not in _NOT_PATHS and isinstance(item, str) and Path(item).is_file():
                    files.append(Path(item))
    inputs = InputFiles.of(files)
    for name in RUN_FILES:
        refuse_inputs(output_dir / name, inputs)


def _plan_for(plan: str | Path | bool | None, data: str | Path | None, plugin: str | None,
              on_ready: Callable[[str], None] | None, task: str = "segment") -> dict[str, Any] | None:
    """The plan to train with: ``plan`` itself, or (``None``) ``mitk-plan.json`` beside the data when it is for
    ``task`` and ``plugin``; its path under ``"path"``. An explicit plan for another task or plugin is refused."""
    from mitk.training.planning import default_plan_path, read_plan

    if plan is False or (plan is None and not data):
        return None
    explicit = plan is not None and plan is not True
    path = Path(str(plan)) if explicit else default_plan_path(str(data))
    if not explicit and not path.is_file():
        return None
    document = read_plan(path)
    if document["task"] != task:
        if explicit:
            raise UsageError(f"the plan {path} is for {document['task']} (plugin {document['plugin']!r}), not "
                             f"{task}")
        if on_ready is not None:
            on_ready(f"not using {path}: it plans {document['task']} (--no-plan hides this)")
        return None
    if plugin and document["plugin"] != plugin:
        if explicit:
            raise UsageError(f"the plan {path} is for plugin {document['plugin']!r}, not {plugin!r}")
        if on_ready is not None:
            on_ready(f"not using {path}: it plans for plugin {document['plugin']!r} (--no-plan hides this)")
        return None
    if on_ready is not None:
        on_ready(f"using the plan {path} (--no-plan to train without it)")
    return {**document, "path": str(path.resolve())}


def _planned_settings(plugin: Any, name: str, plan: dict[str, Any] | None) -> dict[str, Any]:
    """The plan's plugin settings, checked like ``--set`` (unknown or mistyped names refused)."""
    if plan is None:
        return {}
    from mitk.settings import check_overrides

    settings = dict(plan["settings"])
    check_overrides(plugin, settings, source=plan["path"], name=name)
    return settings


def _check_settings(plugin: Any, name: str, overrides: dict[str, Any] | None) -> None:
    """Refuse unknown or mistyped settings before any data is read."""
    from mitk.settings import check_overrides

    check_overrides(plugin, overrides, source="--set", name=name)


# -------------------------------------------------------------------------------------------------
# The saved split
# -------------------------------------------------------------------------------------------------


def save_split(output_dir: Path, datalist: Datalist) -> Path:
    """Write the run's training and validation cases (absolute paths) to ``split.json``."""
    document = {"format": SPLIT_FORMAT, "source": str(Path(datalist.source).resolve()),
                "held_out": datalist.held_out, "labels": datalist.labels,
                "training": [_absolute(case) for case in datalist.training],
                "validation": [_absolute(case) for case in datalist.validation]}
    return write_text_atomic(output_dir / SPLIT_NAME, json.dumps(document, indent=2), overwrite=True)


def load_split(output_dir: Path, recipe: TrainingRecipe) -> Datalist | None:
    """The split a run was started with, its cases checked again (their files must still exist); ``None`` for
    a run folder from before splits were saved (its split is drawn again from the saved seed)."""
    path = output_dir / SPLIT_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot resume: unreadable split ({error})", path) from None
    if not isinstance(document, dict) or document.get("format") != SPLIT_FORMAT:
        raise InputError("cannot resume: not a mitk split file", path)
    source = Path(document.get("source") or output_dir)
    training, validation = list(document.get("training") or []), list(document.get("validation") or [])
    for case in training + validation:
        recipe.check_case(case, source)
    labels = document.get("labels")
    return Datalist(source=source, training=training, validation=validation,
                    labels={int(k): str(v) for k, v in labels.items()} if labels else None,
                    held_out=bool(document.get("held_out")))


def _absolute(case: dict[str, Any]) -> dict[str, Any]:
    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, str) and Path(value).exists():
            return str(Path(value).resolve())
        return value

    return {key: value if key in _NOT_PATHS else resolve(value) for key, value in case.items()}
