"""The epoch log of a training run: ``log.csv``, ``log.json`` and ``training_curve.png``."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from mitk.io.atomic import atomic_path, write_text_atomic
from mitk.training.folder import CSV_NAME, CURVE_NAME, JSON_NAME

FIXED_COLUMNS = ("epoch", "loss", "lr", "seconds")
LOG = logging.getLogger("mitk.training")


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
