"""``mitk evaluate crossval`` on a hand-made folds run folder written with mitk's own writers (checkpoint, log)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.evaluation import crossval

# fold → validation rows of its epochs (mean_dice is the segmentation monitor)
EPOCHS = {
    0: [{"mean_dice": 0.61, "loss": 0.9}, {"mean_dice": 0.72, "loss": 0.7}, {"mean_dice": 0.70, "loss": 0.6}],
    1: [{"mean_dice": 0.55, "loss": 0.8}, {"mean_dice": 0.81, "loss": 0.5}],
    2: [{"mean_dice": 0.66, "loss": 0.9}, {"mean_dice": 0.64, "loss": 0.8}],
}
VAL = {0: ["a", "b"], 1: ["c", "d", "e"], 2: ["f"]}


def _write_run(run: Path, checkpoints: bool = True, missing: int | None = None) -> Path:
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.training.log import TrainingLog

    run.mkdir()
    folds = [{"fold": k, "train": [c for j, cases in VAL.items() if j != k for c in cases], "val": VAL[k]}
             for k in VAL]
    (run / "folds.json").write_text(json.dumps({"folds": folds, "seed": 0, "group_key": None}))
    for fold, rows in EPOCHS.items():
        if fold == missing:
            continue
        folder = run / f"fold_{fold}"
        folder.mkdir()
        log = TrainingLog(folder)
        best = max(range(len(rows)), key=lambda i: rows[i]["mean_dice"])
        for epoch, metrics in enumerate(rows, start=1):
            log.append({"epoch": epoch, "loss": 1.0, "lr": 1e-3, **{f"val_{k}": v for k, v in metrics.items()},
                        "seconds": 0.1}, plot=False)
        if checkpoints:
            save_checkpoint(folder / "best.safetensors", {"weight": torch.zeros(2)}, task="segment", plugin="unet",
                            plugin_version=None, config={}, metrics={**rows[best], "epoch": best + 1})
    return run


def _expected(metric: str) -> tuple[list[float], float, float, float]:
    best = [max(rows, key=lambda r: r["mean_dice"])[metric] for rows in EPOCHS.values()]
    cases = [len(VAL[k]) for k in EPOCHS]
    return best, float(np.mean(best)), float(np.std(best, ddof=1)), float(np.average(best, weights=cases))


def test_file_names_are_the_training_folder_s() -> None:
    from mitk.training import folder

    assert (crossval.BEST_NAME, crossval.LOG_JSON, crossval.LOG_CSV) == (folder.BEST_NAME, folder.JSON_NAME,
                                                                          folder.CSV_NAME)


@pytest.mark.parametrize("checkpoints", [True, False])
def test_crossval_summary_from_checkpoints_or_logs(tmp_path: Path, checkpoints: bool) -> None:
    run = _write_run(tmp_path / "run", checkpoints)
    out = tmp_path / "cv.csv"
    code, stdout, stderr = invoke(["evaluate", "crossval", str(run), "--json", "--csv", str(out)])
    assert code == 0, stderr
    document = json.loads(stdout)
    assert [f["source"] for f in document["folds"]] == ["best.safetensors" if checkpoints else "log.json"] * 3
    assert [f["epoch"] for f in document["folds"]] == [2, 2, 1]
    for metric in ("mean_dice", "loss"):
        best, mean, sd, weighted = _expected(metric)
        assert [f["metrics"][metric] for f in document["folds"]] == pytest.approx(best)
        summary = document["summary"][metric]
        assert (summary["mean"], summary["sd"], summary["case_weighted_mean"]) == pytest.approx((mean, sd, weighted))
        assert summary["folds"] == 3
    assert document["validation_cases"] == 6 and document["missing_folds"] == []
    rows = list(csv.DictReader(out.open()))
    means = {r["metric"]: float(r["value"]) for r in rows if r["fold"] == "mean"}
    assert means["mean_dice"] == pytest.approx(_expected("mean_dice")[1])
    code, stdout, _ = invoke(["evaluate", "crossval", str(run)])
    assert code == 0 and "mean" in stdout and "fold 2 (ep 1)" in stdout and f"{_expected('mean_dice')[1]:.4f}" in stdout


def test_monitor_reads_the_logs_and_a_missing_fold_is_reported(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run", checkpoints=True, missing=1)
    document = crossval.crossval(run, monitor="loss")  # best epoch by the lowest validation loss
    assert [f["source"] for f in document["folds"]] == ["log.json", None, "log.json"]
    assert document["missing_folds"] == [1] and document["folds"][1]["problem"] == "no run folder"
    assert [f["epoch"] for f in document["folds"]] == [3, None, 2]
    assert document["summary"]["mean_dice"]["mean"] == pytest.approx((0.70 + 0.64) / 2)
    assert document["validation_cases"] == 3
    (run / "fold_0" / "log.json").unlink()  # the CSV log alone is read too
    assert crossval.score_fold(run, {"fold": 0, "val": VAL[0]}, "loss").source == "log.csv"
    one = crossval.summarise([crossval.score_fold(run, {"fold": 2, "val": VAL[2]})])
    assert math.isnan(one["mean_dice"]["sd"])


def test_bad_folds_runs_are_refused(tmp_path: Path) -> None:
    code, _, stderr = invoke(["evaluate", "crossval", str(tmp_path)])
    assert code == 2 and "folds.json" in stderr and "Traceback" not in stderr
    run = _write_run(tmp_path / "run")
    document = json.loads((run / "folds.json").read_text())
    document["folds"][1]["val"].append("a")  # case a validated by folds 0 and 1
    (run / "folds.json").write_text(json.dumps(document))
    code, _, stderr = invoke(["evaluate", "crossval", str(run)])
    assert code == 1 and "overlap" in stderr and len(stderr.strip().splitlines()) == 1
    (run / "folds.json").write_text("{\"folds\": 3}")
    code, _, stderr = invoke(["evaluate", "crossval", str(run)])
    assert code == 1 and "not a folds file" in stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "folds.json").write_text(json.dumps({"folds": [{"fold": 0, "train": [], "val": ["a"]}]}))
    code, _, stderr = invoke(["evaluate", "crossval", str(empty)])
    assert code == 2 and "no fold" in stderr


def test_the_folds_count_and_cases_form_is_read(tmp_path: Path) -> None:
    """``folds.json`` as ``mitk train --folds`` writes it in the ensemble code: ``"folds": K`` and ``"cases"``."""
    run = _write_run(tmp_path / "run")
    (run / "folds.json").write_text(json.dumps({"format": 1, "folds": 3, "seed": 0, "grouping": None,
                                                "cases": [VAL[k] for k in range(3)]}))
    folds = crossval.read_folds(run)
    assert [f["val"] for f in folds] == [VAL[0], VAL[1], VAL[2]]
    assert folds[2]["train"] == [*VAL[0], *VAL[1]]
    document = crossval.crossval(run)
    assert document["validation_cases"] == 6
    assert document["summary"]["mean_dice"]["mean"] == pytest.approx(_expected("mean_dice")[1])
    (run / "folds.json").write_text(json.dumps({"folds": 2, "cases": [VAL[0]]}))
    with pytest.raises(Exception, match="not a folds file"):
        crossval.read_folds(run)
