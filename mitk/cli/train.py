"""``mitk train``: train a plugin's network on a datalist and write a self-describing checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.cli.common import STATE, DeviceOption, JsonOption, OverwriteOption, SetOption, emit_json, parse_settings
from mitk.errors import UsageError

app = typer.Typer(
    rich_markup_mode=None,
    help="Train a plugin's network (writes best.safetensors for `mitk segment --weights`).",
    no_args_is_help=True,
)

TRAIN_EPILOG = ("Writes RUN/best.safetensors (best validation mean Dice), RUN/last.safetensors, "
                "RUN/training_state.pt (for --resume), RUN/log.csv, RUN/log.json and RUN/training_curve.png.")


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


def parse_labels(text: str | None) -> dict[str, str] | None:
    """``"background,brain"`` → ``{"0": "background", "1": "brain"}``."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if len(names) < 2 or not all(names):
        raise UsageError("--labels expects the names of labels 0..N-1, background first, e.g. background,brain")
    return {str(value): name for value, name in enumerate(names)}


@app.command("segment", epilog=TRAIN_EPILOG)
def segment(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-d", help="Run folder for checkpoints and "
                                             "logs (required).")],
    data: Annotated[Path | None, typer.Option("--data", help="Decathlon datalist JSON, or a folder with "
                                              "imagesTr/ and labelsTr/ (a resumed run remembers it).")] = None,
    plugin: Annotated[str | None, typer.Option("--plugin", "-p", help="unet, segresnet or swinunetr (or any "
                                               "trainable segmentation plugin).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (passes over the training cases); "
                                               "default 100.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Cases per batch (each gives "
                                                   "samples_per_case patches); default 2.")] = None,
    patch_size: Annotated[str | None, typer.Option("--patch-size", help="Training patch and sliding window, "
                                                   "e.g. 96 or 96,96,64.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (AdamW, cosine "
                                                        "decay); default from the plugin.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (same seed, same run on CPU); "
                                             "default 0.")] = None,
    device: DeviceOption = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision (CUDA only).")] = True,
    val_every: Annotated[int | None, typer.Option("--val-every", help="Validate every N epochs (and after "
                                                  "the last); default 1.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Names of labels 0..N-1, e.g. "
                                               "background,liver,tumour.")] = None,
    settings: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output-dir.")] = False,
    overwrite: OverwriteOption = False,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Data-loading worker processes.")] = 0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Keep preprocessed cases in memory.")]
    = True,
    as_json: JsonOption = False,
) -> None:
    """Train a segmentation network: patches for training, sliding-window validation, best checkpoint."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other")
    overrides: dict[str, Any] = parse_settings(settings)
    if patch_size is not None:
        overrides["patch_size"] = parse_patch_size(patch_size)
    if labels is not None:
        overrides["labels"] = parse_labels(labels)
    if learning_rate is not None:
        if learning_rate <= 0:
            raise UsageError("--lr must be positive")
        overrides.setdefault("optimizer", {})["lr"] = learning_rate
    options = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device, "amp": amp,
               "val_every": val_every, "num_workers": num_workers, "cache": cache}

    from mitk.training.folder import check_output_dir

    check_output_dir(output_dir, resume, overwrite)  # refuse a bad run folder before loading torch

    from mitk.cli.common import stderr_console
    from mitk.training.segment import train_segmentation

    console = stderr_console()
    quiet = STATE.quiet

    def on_ready(datalist: Any, config: dict[str, Any]) -> None:
        if not quiet:
            summary = datalist.summary()
            held = " (held out)" if summary["held_out"] else ""
            console.print(f"training on {summary['training_cases']} cases, validating on "
                          f"{summary['validation_cases']}{held}; labels: "
                          f"{', '.join(config['labels'].values())}")

    def on_epoch(row: dict[str, Any]) -> None:
        if quiet:
            return
        text = f"epoch {row['epoch']}: loss {row['loss']:.4f}, lr {row['lr']:.2e}"
        if row.get("val_mean_dice") is not None:
            text += f", val mean Dice {row['val_mean_dice']:.4f}"
        console.print(f"{text} ({row['seconds']:.1f} s)", markup=False)

    from mitk.runner.allocator import keep_freed_memory

    keep_freed_memory()
    run = train_segmentation(plugin_name=plugin, data=data, output_dir=output_dir, options=options,
                             overrides=overrides, resume=resume, overwrite=overwrite, console=console,
                             on_epoch=on_epoch, on_ready=on_ready)
    document = {"task": "segment", **run.to_dict()}
    if as_json:
        emit_json(document)
    elif not quiet:
        best = document["best_metric"]
        value = "n/a" if best["value"] is None else f"{best['value']:.4f}"
        console.print(f"best {best['name']} {value} at epoch {best['epoch']} → {document['checkpoint']}",
                      markup=False)
