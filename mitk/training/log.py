"""The epoch log of a training run: ``log.csv``, ``log.json`` and ``training_curve.png``, and, when asked for
(``--log tensorboard,mlflow``), the same rows as TensorBoard scalars (``RUN/tensorboard/``) and MLflow metrics
(a file store in ``RUN/mlruns/``, no server)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from mitk.errors import UsageError
from mitk.io.atomic import atomic_path, write_text_atomic
from mitk.training.folder import CSV_NAME, CURVE_NAME, JSON_NAME, MLFLOW_DIR, TENSORBOARD_DIR

FIXED_COLUMNS = ("epoch", "loss", "lr", "seconds")
LOG = logging.getLogger("mitk.training")
LOGGERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
"""``--log`` names → the module each needs (its extra has the same name: ``pip install "mitk[tensorboard]"``)."""
MLFLOW_EXPERIMENT = "mitk"


def _finite(value: Any) -> Any:
    """NaN and infinity become ``None`` (JSON ``null``, an empty CSV cell)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class TrainingLog:
    """One row per epoch: ``epoch``, ``loss``, ``lr``, ``seconds`` and ``val_*`` metrics when validated."""

    def __init__(self, directory: str | Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.directory = Path(directory)
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.run: dict[str, Any] = {}
        """About the run as a whole (e.g. ``distributed``: the torchrun check), beside ``epochs`` in log.json."""
        self.can_plot = True
        """False once matplotlib was found missing: the curve is then skipped (warned about once)."""
        self.sinks: list[Any] = []
        """TensorBoard / MLflow writers that get every row too (:meth:`open_sinks`)."""

    def open_sinks(self, names: Any, params: dict[str, Any], first_epoch: int = 1) -> None:
        """Start the loggers ``names`` (``tensorboard``, ``mlflow``) in the run folder; ``params`` (the training
        options and the plugin's settings) go to MLflow as run parameters. Resuming at ``first_epoch`` > 1 drops
        TensorBoard events of later epochs and continues the run's MLflow run."""
        for name in check_loggers(names):
            sink = TensorBoardSink(self.directory, first_epoch) if name == "tensorboard" else \
                MlflowSink(self.directory, params, first_epoch)
            self.sinks.append(sink)

    def close_sinks(self, status: str = "FINISHED") -> None:
        for sink in self.sinks:
            try:
                sink.close(status)
            except Exception as error:  # a logger that fails at the end must not lose the run
                LOG.warning("closing the %s log failed: %s", type(sink).__name__, error)
        self.sinks = []

    @classmethod
    def load(cls, directory: str | Path, up_to_epoch: int | None = None) -> TrainingLog:
        """The log written so far (for ``--resume``), keeping epochs ≤ ``up_to_epoch``."""
        path = Path(directory) / JSON_NAME
        rows: list[dict[str, Any]] = []
        if path.is_file():
            try:
                rows = list(json.loads(path.read_text(encoding="utf-8")).get("epochs", []))
            except (OSError, ValueError, AttributeError):
                rows = []
        if up_to_epoch is not None:
            rows = [r for r in rows if int(r.get("epoch", 0)) <= up_to_epoch]
        return cls(directory, rows)

    @property
    def columns(self) -> list[str]:
        extra: list[str] = []
        for row in self.rows:
            extra += [key for key in row if key not in FIXED_COLUMNS and key not in extra]
        return [*FIXED_COLUMNS, *extra]

    def append(self, row: dict[str, Any], plot: bool = True, write: bool = True) -> None:
        """Add an epoch and rewrite the files (atomically, so a crash never leaves a torn log); ``write=False``
        only keeps the row (a torchrun rank other than 0)."""
        self.rows.append({key: _finite(value) for key, value in row.items()})
        if write:
            self.write(plot=plot)
            for sink in self.sinks:
                sink.log(self.rows[-1])

    def write(self, plot: bool = True) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.directory / CSV_NAME, buffer.getvalue(), overwrite=True)
        write_text_atomic(self.directory / JSON_NAME, json.dumps({**self.run, "epochs": self.rows}, indent=1) + "\n",
                          overwrite=True)
        if plot:
            self.plot()

    def plot(self) -> Path | None:
        """Training loss and validation mean metrics against epoch, as a PNG.

        Without matplotlib (the ``preview`` extra) no PNG is written: one warning, then training goes on.
        """
        if not self.rows or not self.can_plot:
            return None
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            self.can_plot = False
            LOG.warning('%s not written: matplotlib is not installed (pip install "mitk[preview]")',
                        self.directory / CURVE_NAME)
            return None

        figure = Figure(figsize=(7, 4), dpi=100)
        FigureCanvasAgg(figure)  # the Agg backend for this figure only; the global backend is left alone
        loss_axes = figure.add_subplot(1, 1, 1)
        epochs = [row["epoch"] for row in self.rows]
        losses = [float("nan") if row.get("loss") is None else float(row["loss"]) for row in self.rows]
        loss_axes.plot(epochs, losses, color="tab:blue", label="training loss")
        loss_axes.set_xlabel("epoch")
        loss_axes.set_ylabel("training loss", color="tab:blue")
        metric_names = [c for c in self.columns if c.startswith("val_mean_") and "hd95" not in c]
        if metric_names:
            metric_axes = loss_axes.twinx()
            for name, colour in zip(metric_names, ("tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False):
                points = [(row["epoch"], row[name]) for row in self.rows if row.get(name) is not None]
                if points:
                    metric_axes.plot(*zip(*points, strict=True), marker="o", color=colour, label=name[4:])
            metric_axes.set_ylabel("validation")
            metric_axes.set_ylim(0, 1)
            metric_axes.legend(loc="lower right", fontsize="small")
        figure.suptitle("mitk training")
        figure.tight_layout()
        target = self.directory / CURVE_NAME
        with atomic_path(target, overwrite=True) as temporary:
            figure.savefig(temporary, format="png")
        return target


def check_loggers(names: Any) -> list[str]:
    """``"tensorboard,mlflow"`` or a list of names → the names, each checked: known, and its package installed
    (a one-line error naming the extra otherwise)."""
    from mitk.extras import require_module

    if isinstance(names, str):
        names = [names]
    found = [part.strip().lower() for name in names or [] for part in str(name).split(",") if part.strip()]
    for name in found:
        if name not in LOGGERS:
            raise UsageError(f"--log takes tensorboard and/or mlflow, not {name!r}")
        require_module(LOGGERS[name], f"--log {name}")
    return list(dict.fromkeys(found))


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric columns of an epoch row but the epoch itself."""
    return {key: float(value) for key, value in row.items() if key != "epoch" and isinstance(value, int | float)
            and not isinstance(value, bool) and math.isfinite(float(value))}


class TensorBoardSink:
    """Every column of an epoch row as a scalar at step ``epoch``, in ``RUN/tensorboard/``."""

    def __init__(self, directory: Path, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory / TENSORBOARD_DIR),
                                    purge_step=first_epoch if first_epoch > 1 else None)

    def log(self, row: dict[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key.replace("val_", "val/", 1) if key.startswith("val_") else f"train/{key}",
                                   value, int(row["epoch"]))
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class MlflowSink:
    """Every column of an epoch row as an MLflow metric at step ``epoch``; one MLflow run per mitk run, in a file
    store ``RUN/mlruns/`` (experiment ``mitk``), continued on ``--resume``."""

    def __init__(self, directory: Path, params: dict[str, Any], first_epoch: int) -> None:
        import os

        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind a flag
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=(directory / MLFLOW_DIR).resolve().as_uri())
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(MLFLOW_EXPERIMENT)
        earlier = self.client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1) \
            if first_epoch > 1 else []
        if earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=directory.name).info.run_id
            flat = _flatten(params)
            items = [Param(key, str(value)[:6000]) for key, value in sorted(flat.items())]
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log(self, row: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, int(row["epoch"])) for key, value in _scalars(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
