"""``mitk train``: train a plugin's network on a datalist and write a self-describing checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mitk.cli.common import STATE, JsonOption, OverwriteOption, SetOption, emit_json, parse_settings, plain
from mitk.errors import UsageError
from mitk.taskspecs import TaskSpec, iter_tasks

TRAIN_EPILOG = ("Writes RUN/best.safetensors (best validation score), RUN/last.safetensors, "
                "RUN/training_state.pt and RUN/split.json (for --resume), RUN/log.csv, RUN/log.json and "
                "RUN/training_curve.png (with --log: RUN/tensorboard/, RUN/mlruns/). Precedence: a flag on the "
                "command line (and --set) over --config FILE over the plugin's and mitk's defaults.")


def parse_patch_size(text: str | None) -> list[int] | None:
    """``"64"`` → ``[64, 64, 64]``; ``"96,96,64"`` → ``[96, 96, 64]``."""
    if text is None:
        return None
    try:
        sides = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--patch-size expects N or N,N,N, got {text!r}") from None
    if len(sides) == 1:
        sides *= 3
    if len(sides) != 3 or min(sides) < 1:
        raise UsageError(f"--patch-size expects N or N,N,N of positive integers, got {text!r}")
    return sides


def parse_label_names(text: str | None) -> dict[str, str] | None:
    """``"background,brain"`` → ``{"0": "background", "1": "brain"}``."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if len(names) < 2 or not all(names):
        raise UsageError("--labels expects the names of labels 0..N-1, background first, e.g. background,brain")
    return {str(value): name for value, name in enumerate(names)}


def _train_command(spec: TaskSpec) -> Callable[..., None]:
    """``mitk train <task>``: the same flags for every trainable task; the task's recipe does the rest."""
    task = spec.name

    def command(
        output_dir: Annotated[Path, typer.Option("--output-dir", "-d", help="Run folder for checkpoints and "
                                                 "logs (required).")],
        data: Annotated[Path | None, typer.Option("--data", help="The training data: a datalist JSON, an "
                                                  "image,label CSV (classify) or an imagesTr/labelsTr folder "
                                                  "(segment); a resumed run remembers it.")] = None,
        plugin: Annotated[str | None, typer.Option("--plugin", "-p", help="A trainable plugin of this task (see "
                                                   "`mitk plugins list`).")] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (passes over the training cases); "
                                                   "default 100; a resumed run may raise it.")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", help="Cases per batch; default 2. Under "
                                                       "torchrun the global batch, split over the processes.")]
        = None,
        patch_size: Annotated[str | None, typer.Option("--patch-size", help="Training patch (and sliding "
                                                       "window), e.g. 96 or 96,96,64.")] = None,
        learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate; default from "
                                                            "the plugin (optimizer.lr).")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed (same seed, same run on CPU); "
                                                 "default 0.")] = None,
        device: Annotated[str | None, typer.Option("--device", help="auto (default), cpu, cuda or cuda:N.")]
        = None,
        amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision (CUDA only; on by "
                                                 "default).")] = None,
        val_every: Annotated[int | None, typer.Option("--val-every", help="Validate every N epochs (and after "
                                                      "the last); default 1.")] = None,
        val_fraction: Annotated[float | None, typer.Option("--val-fraction", help="Share of the training "
                                                           "cases held out for validation when the data names "
                                                           "no validation list; default 0.2.")] = None,
        labels: Annotated[str | None, typer.Option("--labels", help="Names of labels 0..N-1, e.g. "
                                                   "background,liver,tumour.")] = None,
        settings: SetOption = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output-dir with its "
                                             "saved settings, options and split.")] = False,
        overwrite: OverwriteOption = False,
        num_workers: Annotated[int | None, typer.Option("--num-workers", help="Data-loading worker processes; "
                                                        "default 0.")] = None,
        cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help="Keep preprocessed cases in "
                                                   "memory (default on).")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="Options from a JSON or YAML file (keys: "
                                                    "the long flag names, plugin settings under `set`); flags "
                                                    "and --set given here win.")] = None,
        log: Annotated[str | None, typer.Option("--log", help="Also log each epoch to tensorboard and/or mlflow "
                                                "(comma-separated; extras mitk[tensorboard], mitk[mlflow]).")]
        = None,
        folds: Annotated[int | None, typer.Option("--folds", help="Cross-validation: deal the cases into K folds "
                                                  "(a group or the same image content kept in one) and train "
                                                  "RUN/fold_0 … fold_K-1, the split in RUN/folds.json; "
                                                  "`--weights RUN` then averages the folds.")] = None,
        fold: Annotated[int | None, typer.Option("--fold", help="With --folds K: train fold I only (job arrays; "
                                                 "every job draws the same split).")] = None,
        plan: Annotated[Path | None, typer.Option("--plan", help="Train with this plan file (`mitk plan`); "
                                                  "default: mitk-plan.json beside the data when it exists.")]
        = None,
        no_plan: Annotated[bool, typer.Option("--no-plan", help="Ignore mitk-plan.json beside the data.")] = False,
        init: Annotated[Path | None, typer.Option("--init", help="Start from the weights of this checkpoint (or "
                                                  "MONAI bundle folder), matched by layer name and shape.")]
        = None,
        init_skip_mismatched: Annotated[bool, typer.Option("--init-skip-mismatched", help="With --init: start "
                                                           "layers that do not match afresh instead of "
                                                           "refusing.")] = False,
        as_json: JsonOption = False,
    ) -> None:
        if resume and overwrite:
            raise UsageError("--resume and --overwrite contradict each other")
        if plan is not None and no_plan:
            raise UsageError("--plan and --no-plan contradict each other")
        if init_skip_mismatched and init is None:
            raise UsageError("--init-skip-mismatched needs --init CHECKPOINT")
        from mitk.cli.train_config import merge_settings, read_config

        given = read_config(config) if config is not None else {}

        def pick(flag: Any, key: str) -> Any:
            return flag if flag is not None else given.get(key)

        plugin, epochs, batch_size, seed = (pick(plugin, "plugin"), pick(epochs, "epochs"),
                                            pick(batch_size, "batch_size"), pick(seed, "seed"))
        device, amp, val_every, val_fraction = (pick(device, "device"), pick(amp, "amp"), pick(val_every, "val_every"),
                                                pick(val_fraction, "val_fraction"))
        num_workers, cache, patch_size, labels = (pick(num_workers, "num_workers"), pick(cache, "cache"),
                                                  pick(patch_size, "patch_size"), pick(labels, "labels"))
        learning_rate, log = pick(learning_rate, "lr"), pick(log, "log")
        data = data if data is not None else (Path(given["data"]) if given.get("data") else None)
        if log:
            from mitk.training.log import check_loggers

            check_loggers(log)  # a missing extra is named before anything loads
        overrides: dict[str, Any] = merge_settings(given.get("set") or {}, parse_settings(settings))
        if patch_size is not None:
            overrides["patch_size"] = parse_patch_size(patch_size)
        if labels is not None:
            overrides["labels"] = parse_label_names(labels)
        if learning_rate is not None:
            if learning_rate <= 0:
                raise UsageError("--lr must be positive")
            overrides.setdefault("optimizer", {})["lr"] = learning_rate
        options = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device, "amp": amp,
                   "val_every": val_every, "validation_fraction": val_fraction, "num_workers": num_workers,
                   "cache": cache, "loggers": log}

        start = {"plan": False if no_plan else plan, "init": init, "init_skip_mismatched": init_skip_mismatched}
        folds, fold = pick(folds, "folds"), pick(fold, "fold")
        if folds is not None or fold is not None:
            from mitk.training.folds import check_run_dir, chosen_folds

            chosen = chosen_folds(folds, fold)
            check_run_dir(output_dir, int(folds or 0), chosen, resume, overwrite)  # before loading torch
            run_fold_training(task, plugin=plugin, data=data, output_dir=output_dir, folds=int(folds or 0),
                              fold=fold, options=options, overrides=overrides, resume=resume, overwrite=overwrite,
                              as_json=as_json, start=start)
            return
        from mitk.training.folder import check_output_dir

        check_output_dir(output_dir, resume, overwrite)  # refuse a bad run folder before loading torch
        run_training(task, plugin=plugin, data=data, output_dir=output_dir, options=options, overrides=overrides,
                     resume=resume, overwrite=overwrite, as_json=as_json, start=start)

    command.__name__ = task
    command.__doc__ = (f"Train a {task} plugin's network on a datalist; the best checkpoint by validation score "
                       f"is for `mitk {task} --weights`.")
    return command


def run_training(task: str, *, plugin: str | None, data: Path | None, output_dir: Path, options: dict[str, Any],
                 overrides: dict[str, Any], resume: bool, overwrite: bool, as_json: bool,
                 start: dict[str, Any] | None = None) -> None:
    """Train, reporting progress to stderr and the outcome as text or JSON; ``start`` holds the ``plan``,
    ``init`` and ``init_skip_mismatched`` arguments of :func:`mitk.training.train.train`."""
    from mitk.cli.common import stderr_console
    from mitk.runner.allocator import keep_freed_memory
    from mitk.training.distributed import is_main_process
    from mitk.training.train import train

    console = stderr_console()
    main_process = is_main_process()  # under torchrun only rank 0 reports; the others print only errors
    if not main_process:
        STATE.quiet = True
    quiet = STATE.quiet

    def on_ready(line: str) -> None:
        if not quiet:
            console.print(line, markup=False)

    def on_epoch(row: dict[str, Any]) -> None:
        if quiet:
            return
        text = f"epoch {row['epoch']}: loss {row['loss']:.4f}, lr {row['lr']:.2e}"
        monitored = [(k, v) for k, v in row.items() if k.startswith("val_mean_") and v is not None]
        if monitored:
            text += ", " + ", ".join(f"{k[4:]} {v:.4f}" for k, v in monitored[:2])
        console.print(f"{text} ({row['seconds']:.1f} s)", markup=False)

    keep_freed_memory()
    try:
        run = train(task, plugin=plugin, data=data, output_dir=output_dir, options=options, overrides=overrides,
                    resume=resume, overwrite=overwrite, console=console, on_epoch=on_epoch, on_ready=on_ready,
                    **(start or {}))
    except KeyboardInterrupt as stop:
        _interrupted(task, output_dir, stop, console if main_process else None, as_json and main_process)
    document = {"task": task, **run.to_dict()}
    if not main_process:
        return
    if as_json:
        emit_json(document)
    elif not quiet:
        best = document["best_metric"]
        value = "n/a" if best["value"] is None else f"{best['value']:.4f}"
        console.print(f"best {best['name']} {value} at epoch {best['epoch']} → {document['checkpoint']}",
                      markup=False)


def run_fold_training(task: str, *, plugin: str | None, data: Path | None, output_dir: Path, folds: int,
                      fold: int | None, options: dict[str, Any], overrides: dict[str, Any], resume: bool,
                      overwrite: bool, as_json: bool, start: dict[str, Any] | None = None) -> None:
    """``--folds K`` (``--fold I``): train the folds one after the other, reporting each as :func:`run_training`."""
    from mitk.cli.common import stderr_console
    from mitk.runner.allocator import keep_freed_memory
    from mitk.training.folds import train_folds

    console, quiet = stderr_console(), STATE.quiet

    def say(line: str) -> None:
        if not quiet:
            console.print(line, markup=False)

    def on_epoch(row: dict[str, Any]) -> None:
        say(f"epoch {row['epoch']}: loss {row['loss']:.4f} ({row['seconds']:.1f} s)")

    keep_freed_memory()
    try:
        runs, folds_file = train_folds(task, plugin=plugin, data=data, output_dir=output_dir, folds=folds, fold=fold,
                                       options=options, overrides=overrides, resume=resume, overwrite=overwrite,
                                       console=console, on_epoch=on_epoch, on_ready=say,
                                       on_fold=lambda index: say(f"fold {index} of {folds}"), start=start)
    except KeyboardInterrupt as stop:
        _interrupted(task, output_dir, stop, console, as_json)
    summaries = [run.to_dict() for run in runs]
    document = {"task": task, "output_dir": str(output_dir), "folds": folds, "folds_file": str(folds_file),
                "runs": summaries}
    if as_json:
        emit_json(document)
        return
    for run in summaries:
        best = run["best_metric"]
        value = "n/a" if best["value"] is None else f"{best['value']:.4f}"
        say(f"best {best['name']} {value} at epoch {best['epoch']} → {run['checkpoint']}")
    say(f"folds: {folds_file}; use `mitk {task} --weights {output_dir}` for their ensemble")


def _interrupted(task: str, output_dir: Path, stop: KeyboardInterrupt, console: Any, as_json: bool) -> NoReturn:
    """SIGINT/SIGTERM stopped training: say how far it got and how to go on (on ``console``; None under torchrun
    but rank 0), with ``--json`` the document so far, and exit 130/143 as the task verbs do."""
    import signal

    from mitk.runner.batch import Interrupted
    from mitk.training.folder import STATE_NAME
    from mitk.training.loop import TrainingInterrupted

    signum = stop.signum if isinstance(stop, Interrupted) else int(signal.SIGINT)
    name, code = signal.Signals(signum).name, 128 + signum
    run = stop.run if isinstance(stop, TrainingInterrupted) else None
    last = run.last_epoch if run is not None else None
    if (output_dir / STATE_NAME).is_file():
        where = f"after epoch {last}" if last else "before an epoch finished"
        hint = f"run `mitk train {task} -d {output_dir} --resume` to continue"
    else:
        again = " with --overwrite" if output_dir.is_dir() and any(output_dir.iterdir()) else ""
        where, hint = "before the first epoch finished", f"nothing to resume; start the run again{again}"
    if console is not None:
        console.print(plain(f"mitk: interrupted ({name}) {where}: {hint}"), markup=False, emoji=False,
                      highlight=False)
    if as_json:
        document: dict[str, Any] = {"task": task, "output_dir": str(output_dir), "epochs_run": 0}
        if run is not None:
            document.update(run.to_dict())
        emit_json({**document, "interrupted": name, "exit_code": code})
    raise typer.Exit(code)


def build_app() -> typer.Typer:
    """The ``train`` command group: one command per trainable task of the task table, with the same flags."""
    app = typer.Typer(
        rich_markup_mode=None,
        help="Train a plugin's network (writes best.safetensors for `mitk <task> --weights`).",
        no_args_is_help=True,
    )
    for spec in iter_tasks():
        if spec.trainable:
            app.command(spec.name, epilog=TRAIN_EPILOG)(_train_command(spec))
    return app
