"""The one training loop for every task.

The loop owns what all tasks share: seeding, data loaders, the optimiser and its cosine schedule, mixed
precision on CUDA, validation every N epochs, the best/last checkpoints, the resumable training state and
the epoch log. What is particular to a task (how a batch becomes a loss, how a validation set becomes
metrics) lives in a small :class:`~mitk.training.recipe.TrainingStep` strategy, e.g.
:class:`mitk.tasks.segment.recipe.SegmentationStep`. The optimiser and the learning-rate schedule come from the
plugin's configuration (``optimizer`` and ``schedule``; AdamW with cosine decay unless it says otherwise).

Files written to the run folder::

    best.safetensors     weights with the best validation score (mitk checkpoint, self-describing)
    last.safetensors     weights after the latest epoch
    training_state.pt    optimiser, scaler, epoch, best score and options, for --resume (tensors only)
    split.json           the training and validation cases of the run (a resumed run keeps them)
    log.csv, log.json    one row per epoch
    training_curve.png   loss and validation metrics against epoch

Under ``torchrun`` (:mod:`mitk.training.distributed`) every rank runs this loop on its share of each global
batch through ``DistributedDataParallel``; only rank 0 writes these files and shows progress.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mitk.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, training_state_load, training_state_save
from mitk.errors import MitkError, UsageError
from mitk.plugin import TaskPlugin
from mitk.runner.batch import Interrupted, signals_held
from mitk.training.distributed import (
    GlobalBatchSampler,
    World,
    all_reduce_sum,
    broadcast_buffers,
    parameter_checksums,
    per_rank_batch,
    rank_seed,
    seed_loader_worker,
    sharded_validation,
    validation_shard,
)
from mitk.training.folder import BEST_NAME, LAST_NAME, STATE_NAME
from mitk.training.log import TrainingLog
from mitk.training.recipe import TrainingStep

STATE_FORMAT = 1


@dataclass
class TrainingOptions:
    """How to train (not what: that is the plugin's configuration, saved in the checkpoint)."""

    epochs: int = 100
    batch_size: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    val_every: int = 1
    num_workers: int = 0
    cache: bool = True
    validation_fraction: float = 0.2
    """Share of the training cases held out for validation when the data names no validation list."""
    loggers: tuple[str, ...] = ()
    """Where the epoch rows go besides log.csv: ``tensorboard``, ``mlflow`` (:mod:`mitk.training.log`)."""

    RUNTIME = ("epochs", "device", "num_workers", "cache", "loggers")
    """Options a resumed run may change: they do not change what the run computes (``epochs`` extends it)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "val_every"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.num_workers < 0:
            raise UsageError("--num-workers must be 0 or more")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise UsageError("--val-fraction must lie between 0 and 1")
        names = self.loggers.split(",") if isinstance(self.loggers, str) else self.loggers
        self.loggers = tuple(dict.fromkeys(str(n).strip().lower() for n in names if str(n).strip()))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


@dataclass
class ModelSpec:
    """What the checkpoints describe: the task, the plugin that builds the network, its resolved config."""

    task: str
    plugin_name: str
    plugin_version: str | None
    plugin: TaskPlugin
    config: dict[str, Any]
    expects: dict[str, Any] | None = None
    """What the training images were (:func:`mitk.runner.fit.training_expectations`), saved with the weights."""


@dataclass
class ResumePoint:
    """Where an interrupted run stopped: ``last.safetensors`` (weights, task, plugin, config) and
    ``training_state.pt`` (optimizer, epoch, options)."""

    checkpoint: Checkpoint
    state: dict[str, Any]

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.checkpoint.state_dict

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(json.loads(self.state.get("options", "{}")))

    @property
    def extra(self) -> dict[str, Any]:
        return dict(json.loads(self.state.get("extra", "{}")))


@dataclass
class TrainingRun:
    """The outcome of :meth:`Trainer.fit`."""

    output_dir: Path
    best_checkpoint: Path | None
    monitor: str
    mode: str
    best_score: float | None
    best_epoch: int | None
    epochs_run: int
    last_epoch: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    network: torch.nn.Module | None = field(default=None, repr=False)
    distributed: dict[str, Any] | None = None
    """Under torchrun: world size, backend, per-rank batch and every rank's parameter checksum."""

    def to_dict(self) -> dict[str, Any]:
        extra = {"distributed": self.distributed} if self.distributed is not None else {}
        return {**extra, "checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
                "last_checkpoint": str(self.output_dir / LAST_NAME), "output_dir": str(self.output_dir),
                "best_metric": {"name": self.monitor, "mode": self.mode, "epoch": self.best_epoch,
                                "value": self.best_score if _is_finite(self.best_score) else None},
                "epochs_run": self.epochs_run, "last_epoch": self.last_epoch, "seconds": round(self.seconds, 3)}


@dataclass
class _Best:
    """The best validation score so far, its epoch and its tie-break value."""

    score: float | None = None
    epoch: int | None = None
    tie: float | None = None


class TrainingInterrupted(Interrupted):
    """SIGINT/SIGTERM (or Ctrl-C) stopped training; ``run`` is what the finished epochs left (their checkpoints
    and training state are complete: a resumed run continues after the last of them)."""

    def __init__(self, signum: int, run: TrainingRun) -> None:
        super().__init__(signum)
        self.run = run


@contextlib.contextmanager
def unwrapped_errors() -> Iterator[None]:
    """Re-raise a :class:`MitkError` that MONAI wrapped in ``RuntimeError("applying transform ...")``."""
    try:
        yield
    except RuntimeError as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, MitkError):
            cause = cause.__cause__
        if isinstance(cause, MitkError):
            raise cause from None
        raise


def _is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def load_resume_point(output_dir: Path) -> ResumePoint:
    checkpoint = load_checkpoint(output_dir / LAST_NAME)
    state = training_state_load(output_dir / STATE_NAME)
    if state.get("format") != STATE_FORMAT or "epoch" not in state:
        raise MitkError("not a mitk training state (format mismatch)", output_dir / STATE_NAME)
    return ResumePoint(checkpoint=checkpoint, state=state)


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "poly", "constant")


def check_optimisation(config: dict[str, Any]) -> None:
    """Refuse an unknown optimiser or schedule before any data is loaded."""
    optimizer = str((config.get("optimizer") or {}).get("name", "adamw")).lower()
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}")
    schedule = dict(config.get("schedule") or {})
    name = str(schedule.get("name", "cosine")).lower()
    if name not in SCHEDULES:
        raise UsageError(f"schedule.name must be one of {', '.join(SCHEDULES)}, not {name!r}")
    if int(schedule.get("warmup_epochs", 0)) < 0:
        raise UsageError("schedule.warmup_epochs must be 0 or more")


def build_optimizer(parameters: Any, settings: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW (default), Adam, or SGD with (Nesterov) momentum as nnU-Net trains, from ``optimizer`` settings."""
    name = str(settings.get("name", "adamw")).lower()
    lr, weight_decay = float(settings.get("lr", 1e-3)), float(settings.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay,
                               momentum=float(settings.get("momentum", 0.99)),
                               nesterov=bool(settings.get("nesterov", True)))
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def scheduled_learning_rate(schedule: dict[str, Any], base: float, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (1-based): optional linear warm-up, then cosine (default) or polynomial
    (``(1 - t)^power``, nnU-Net's) decay towards 0 after the last epoch, or constant."""
    warmup = int(schedule.get("warmup_epochs", 0))
    if epoch <= warmup:
        return base * epoch / (warmup + 1)
    name = str(schedule.get("name", "cosine")).lower()
    progress = (epoch - 1 - warmup) / max(1, epochs - warmup)
    if name == "constant":
        return base
    if name == "poly":
        return base * (1.0 - progress) ** float(schedule.get("power", 0.9))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def is_better(score: float, best: float | None, mode: str) -> bool:
    """True when ``score`` improves on ``best`` in direction ``mode`` (a finite score beats none or NaN)."""
    if best is None:
        return True
    if not math.isfinite(score):
        return False
    if not math.isfinite(best):
        return True
    return score > best if mode == "max" else score < best


def breaks_tie(score: float, best: float | None, tie: float, best_tie: float | None) -> bool:
    """True when ``score`` equals ``best`` and the tie-break metric (lower is better) improves on ``best_tie``."""
    return (best is not None and score == best and math.isfinite(tie)
            and (best_tie is None or not math.isfinite(best_tie) or tie < best_tie))


class Trainer:
    """Fits ``spec``'s network on ``train_dataset`` with ``step``, validating on ``val_dataset``."""

    def __init__(self, spec: ModelSpec, step: TrainingStep, train_dataset: Any, val_dataset: Any,
                 options: TrainingOptions, output_dir: Path, *, device: torch.device,
                 extra_state: dict[str, Any] | None = None, console: Any = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 collate: Callable[[list[Any]], Any] | None = None, world: World | None = None,
                 backend: str | None = None, initial_state: dict[str, torch.Tensor] | None = None) -> None:
        self.spec = spec
        self.initial_state = initial_state
        """Weights a new run starts from (``--init``), matched to the network by name and shape."""
        self.step = step
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.options = options
        self.output_dir = Path(output_dir)
        self.device = device
        self.extra_state = extra_state or {}
        self.console = console
        self.on_epoch = on_epoch
        self.collate = collate
        self.amp = bool(options.amp and device.type == "cuda")
        self.optimizer_settings = dict(spec.config.get("optimizer") or {})
        self.schedule = dict(spec.config.get("schedule") or {})
        self.base_lr = float(self.optimizer_settings.get("lr", 1e-3))
        self.mode = getattr(step, "mode", "max")
        self.world = world
        self.backend = backend
        self.is_main = world is None or world.is_main
        self.batch_sampler: GlobalBatchSampler | None = None
        self.validation_cases: list[int] | None = None
        """This rank's validation cases when validation is split across ranks (``None``: all of them)."""

    # -- pieces ------------------------------------------------------------------------------------

    def _loaders(self) -> tuple[Any, Any, torch.Generator]:
        from monai.data import DataLoader

        generator = torch.Generator()
        generator.manual_seed(self.options.seed)
        pin = self.device.type == "cuda"
        collate = {"collate_fn": self.collate} if self.collate is not None else {}
        workers = self.options.num_workers
        if self.world is None:
            train = DataLoader(self.train_dataset, batch_size=self.options.batch_size, shuffle=True,
                               num_workers=workers, generator=generator, pin_memory=pin, drop_last=False, **collate)
        else:  # this rank's share of the batches one process would draw (the same generator, the same order)
            self.batch_sampler = GlobalBatchSampler(self.train_dataset, self.options.batch_size, self.world,
                                                    generator)
            seeding = {"worker_init_fn": functools.partial(seed_loader_worker, self.world)} if workers else {}
            train = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, num_workers=workers,
                               generator=generator, pin_memory=pin, **seeding, **collate)
            if getattr(self.step, "shards_validation", False):
                self.validation_cases = validation_shard(len(self.val_dataset), self.world)
        val = DataLoader(self.val_dataset, batch_size=1, shuffle=False, num_workers=workers, pin_memory=pin,
                         sampler=self.validation_cases, **collate)
        return train, val, generator

    def _seed_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Seed everything from (seed, epoch), so a resumed run draws what an uninterrupted one would."""
        from monai.data.utils import set_rnd

        seed = (self.options.seed * 100_003 + epoch) % (2**31)
        generator.manual_seed(seed)  # the batch order: the same on every rank
        seed = rank_seed(seed, self.world)  # augmentation and dropout: each rank its own draws
        torch.manual_seed(seed)
        transform = getattr(self.train_dataset, "transform", None)
        if transform is not None and self.options.num_workers == 0:
            set_rnd(transform, seed)

    def autocast(self) -> Any:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _save_weights(self, name: str, network: torch.nn.Module, metrics: dict[str, Any]) -> Path | None:
        if not self.is_main:
            return None
        return save_checkpoint(self.output_dir / name, network.state_dict(), task=self.spec.task,
                               plugin=self.spec.plugin_name, plugin_version=self.spec.plugin_version,
                               config=self.spec.config, metrics=metrics, overwrite=True,
                               expects=self.spec.expects)

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self, resume: ResumePoint | None = None) -> TrainingRun:
        with unwrapped_errors():
            return self._fit(resume)

    def _fit(self, resume: ResumePoint | None) -> TrainingRun:
        from monai.utils import set_determinism

        started = time.perf_counter()
        options = self.options
        set_determinism(seed=options.seed)
        network = self.spec.plugin.network(self.spec.config).to(self.device)
        optimizer = build_optimizer(network.parameters(), self.optimizer_settings)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        best = _Best()
        start = 1
        if resume is None and self.initial_state:
            network.load_state_dict(self.initial_state, strict=False)
        if resume is not None:
            network.load_state_dict(resume.state_dict, strict=True)
            optimizer.load_state_dict(resume.state["optimizer"])
            if self.amp and resume.state.get("scaler"):
                scaler.load_state_dict(resume.state["scaler"])
            best = _Best(resume.state.get("best_score"), resume.state.get("best_epoch"), resume.state.get("best_tie"))
            start = resume.epoch + 1
            if start > options.epochs:
                raise UsageError(f"the run has finished {resume.epoch} epochs already; give a larger --epochs "
                                 "to continue it")
        model = self._parallel(network)
        log = TrainingLog.load(self.output_dir, up_to_epoch=start - 1) if resume else TrainingLog(self.output_dir)
        train_loader, val_loader, generator = self._loaders()
        if len(train_loader) == 0:
            raise UsageError("no training batches: the training list is empty")
        if self.is_main and options.loggers:
            log.open_sinks(options.loggers, {"task": self.spec.task, "plugin": self.spec.plugin_name,
                                             "options": vars(options), "settings": self.spec.config}, start)
        status = "FAILED"
        try:
            with self._progress() as progress:
                epoch_task = progress.add_task("epochs", total=options.epochs, completed=start - 1)
                for epoch in range(start, options.epochs + 1):
                    self._epoch(epoch, model, network, optimizer, scaler, (train_loader, val_loader, generator),
                                progress, log, best)
                    progress.advance(epoch_task)
            status = "FINISHED"
        except KeyboardInterrupt as stop:  # the epochs finished so far are complete on disk: say so
            status = "KILLED"
            signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
            finished = int(log.rows[-1]["epoch"]) if log.rows else start - 1  # logged with its checkpoints
            raise TrainingInterrupted(signum, self._run(best, log, start, finished, started)) from None
        finally:
            log.close_sinks(status)
        distributed = self._check_replicas(network, log)
        return self._run(best, log, start, options.epochs, started, network=network, distributed=distributed)

    def _run(self, best: _Best, log: TrainingLog, start: int, last: int, started: float,
             network: torch.nn.Module | None = None, distributed: dict[str, Any] | None = None) -> TrainingRun:
        """The run so far: epochs ``start`` … ``last`` of this call (none when ``last`` < ``start``)."""
        checkpoint = self.output_dir / BEST_NAME
        return TrainingRun(output_dir=self.output_dir, best_checkpoint=checkpoint if checkpoint.is_file() else None,
                           monitor=self.step.monitor, mode=self.mode, best_score=best.score, best_epoch=best.epoch,
                           epochs_run=max(0, last - start + 1), last_epoch=last,
                           seconds=time.perf_counter() - started, history=list(log.rows), network=network,
                           distributed=distributed)

    def _epoch(self, epoch: int, model: torch.nn.Module, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: Any, loaders: tuple[Any, Any, torch.Generator], progress: Any, log: TrainingLog,
               best: _Best) -> None:
        """Train and validate one epoch, then write its checkpoints, training state and log together: a signal
        that arrives while they are written stops the run after them, never between them."""
        options = self.options
        train_loader, val_loader, generator = loaders
        tie_break: str | None = getattr(self.step, "tie_break", None)
        epoch_started = time.perf_counter()
        self._seed_epoch(epoch, generator)
        learning_rate = scheduled_learning_rate(self.schedule, self.base_lr, epoch, options.epochs)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        loss = self._train_epoch(model, optimizer, scaler, train_loader, progress, epoch)
        row: dict[str, Any] = {"epoch": epoch, "loss": loss, "lr": learning_rate}
        metrics: dict[str, Any] = {}
        improved = False
        if epoch % options.val_every == 0 or epoch == options.epochs:
            batches = progress.add_task("validation", total=len(val_loader))
            with sharded_validation(self.validation_cases is not None):  # the ranks' shards combined
                metrics = self.step.validate(network, _advancing(val_loader, progress, batches),
                                             self.device, self.autocast)
            progress.remove_task(batches)
            row.update({f"val_{name}": value for name, value in metrics.items()})
            score = float(metrics.get(self.step.monitor, math.nan))
            tie = float(metrics.get(tie_break, math.nan)) if tie_break else math.nan
            improved = is_better(score, best.score, self.mode) or breaks_tie(score, best.score, tie, best.tie)
        with signals_held():
            if improved:
                best.score, best.epoch, best.tie = score, epoch, tie
                self._save_weights(BEST_NAME, network, {**metrics, "epoch": epoch})
            self._save_weights(LAST_NAME, network, {**metrics, "epoch": epoch})
            if self.is_main:
                training_state_save(self.output_dir / STATE_NAME, {
                    "format": STATE_FORMAT, "epoch": epoch, "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if self.amp else {}, "best_score": best.score,
                    "best_epoch": best.epoch, "best_tie": best.tie, "options": json.dumps(asdict(options)),
                    "extra": json.dumps(self.extra_state)})
            row["seconds"] = round(time.perf_counter() - epoch_started, 3)
            log.append(row, plot=bool(metrics) or epoch == options.epochs, write=self.is_main)
        if self.on_epoch is not None:
            self.on_epoch(row)

    def _parallel(self, network: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel`` around ``network`` under torchrun (it averages the gradients over the
        ranks); ``network`` itself otherwise. Validation and checkpoints use the bare network."""
        if self.world is None:
            return network
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=device_ids,
                                       find_unused_parameters=self.spec.plugin.unused_parameters)

    def _check_replicas(self, network: torch.nn.Module, log: TrainingLog) -> dict[str, Any] | None:
        """Under torchrun: gather every rank's parameter checksum, record them in ``log.json`` and refuse a
        run whose ranks ended with different parameters."""
        if self.world is None:
            return None
        checksums = parameter_checksums(network)
        record = {"world_size": self.world.size, "backend": self.backend,
                  "per_rank_batch": per_rank_batch(self.options.batch_size, self.world),
                  "validation": "split across ranks" if self.validation_cases is not None else "every rank",
                  "parameter_checksums": checksums, "parameters_identical": len(set(checksums)) == 1}
        log.run["distributed"] = record
        if self.is_main:
            log.write(plot=False)
        if not record["parameters_identical"]:
            raise MitkError(f"the {self.world.size} training processes ended with different parameters "
                            f"(checksums {', '.join(checksums)})", self.output_dir / "log.json")
        return record

    def _train_epoch(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                     loader: Any, progress: Any, epoch: int) -> float:
        network.train()
        total, count = 0.0, 0
        batches = progress.add_task(f"epoch {epoch}", total=len(loader))
        for index, batch in enumerate(loader):
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = self.step.loss(network, batch, self.device)
                if self.batch_sampler is not None and self.batch_sampler.weight(index) != 1.0:
                    loss = loss * self.batch_sampler.weight(index)  # a short last batch: its global mean
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            count += 1
            progress.advance(batches)
        progress.remove_task(batches)
        if self.world is not None:  # the mean loss of the global batches, the same on every rank
            total = all_reduce_sum({"loss": total}, self.device)["loss"] / self.world.size
            broadcast_buffers(network)  # rank 0's batch-norm statistics everywhere: one set of weights
        mean = total / max(count, 1)
        if not math.isfinite(mean):
            raise MitkError(f"training diverged: the loss is {mean} in epoch {epoch} (try a lower --lr)")
        return mean

    def _progress(self) -> Any:
        """Rich progress bars on stderr, transient; a silent stand-in when not on a terminal."""
        if not self.is_main or self.console is None or not getattr(self.console, "is_terminal", False):
            return _NoProgress()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)


def _advancing(loader: Any, progress: Any, task: Any) -> Iterator[Any]:
    for batch in loader:
        yield batch
        progress.advance(task)


class _NoProgress:
    """The part of ``rich.progress.Progress`` the loop uses, doing nothing."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        return None

    def remove_task(self, task: int) -> None:
        return None


def resumed_options(saved: dict[str, Any], given: dict[str, Any]) -> TrainingOptions:
    """The interrupted run's options; a flag given again must agree with it, except the runtime ones
    (:attr:`TrainingOptions.RUNTIME`). ``None`` means "not given"."""
    known = {f.name for f in fields(TrainingOptions)}
    merged = {key: value for key, value in saved.items() if key in known}
    for key, value in given.items():
        if value is None or key not in known:
            continue
        if key in TrainingOptions.RUNTIME or key not in merged:
            merged[key] = value
        elif _differs(merged[key], value):
            flag = "--" + {"validation_fraction": "val-fraction"}.get(key, key.replace("_", "-"))
            raise UsageError(f"the run was started with {flag} {merged[key]}; a resumed run keeps its settings "
                             f"(drop {flag})")
    return TrainingOptions.from_dict(merged)


def _differs(saved: Any, given: Any) -> bool:
    if isinstance(saved, bool) or isinstance(given, bool):
        return bool(saved) != bool(given)
    if isinstance(saved, int | float) and isinstance(given, int | float):
        return not math.isclose(float(saved), float(given))
    return bool(saved != given)
