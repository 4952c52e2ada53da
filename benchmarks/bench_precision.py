"""Issue 24 item 7: one model vs the fold ensemble vs the fold ensemble with test-time augmentation, on the real
sample data, with the CPU time each costs.

Segmentation: `mitk sample segment` (MNI152 brain, the README's main command's settings); classification:
`mitk sample classify` (MNI152 slices). Each arm is the documented CLI, run as a user runs it:

    mitk train TASK ... --output-dir single/                 one model (the seeded split)
    mitk train TASK ... --output-dir folds/ --folds K        K folds
    mitk TASK TEST --weights single/best.safetensors         "one model"
    mitk TASK TEST --weights folds/                          "ensemble" (every fold's best checkpoint)
    mitk TASK TEST --weights folds/ --tta                    "ensemble + TTA"
    mitk evaluate TASK ...                                   Dice (segment), AUC / ECE (classify)

Scores: segmentation mean Dice over the test cases and labels, voxel ECE on the foreground sample (from the
probability maps, `--probabilities`); classification macro AUC, accuracy, ECE and the AUC of predictive entropy vs
error (`--uncertainty`). Cost: the CPU time (user + system, of the `mitk` child processes) and the wall time of
each inference, and of each training. Results go to benchmarks/results/bench_precision.json and a table on stdout.

Needs `--folds` and `--tta` (mitk's ensemble code); the script says so and stops when they are missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import save

SEGMENT_TRAIN = ["--plugin", "unet", "--patch-size", "48", "--set", "spacing=[4.5,4.5,4.5]",
                 "--set", "network.channels=[8,16,32,64]", "--set", "network.strides=[2,2,2]"]
"""The README's / docs/training.md's main command's settings."""
CLASSIFY_TRAIN = ["--plugin", "resnet", "--batch-size", "8", "--set", "image_size=[64,64]"]
"""docs/classification.md's main command's settings."""


def mitk(*arguments: str, stdout: Path | None = None) -> dict[str, float]:
    """Run ``python -m mitk ARGUMENTS``; its wall time and CPU time (user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "mitk", *arguments], capture_output=True, text=True,
                               check=False, timeout=3600)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"mitk {' '.join(arguments)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    if stdout is not None:
        stdout.write_text(completed.stdout)
    return {"wall_s": round(seconds, 3),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3)}


def require_ensemble_options() -> None:
    """Stop with one line when this mitk has no ``--folds`` / ``--tta`` (the ensemble code is not merged)."""
    train = subprocess.run([sys.executable, "-m", "mitk", "train", "segment", "--help"], capture_output=True,
                           text=True, check=False, timeout=300).stdout
    segment = subprocess.run([sys.executable, "-m", "mitk", "segment", "--help"], capture_output=True, text=True,
                             check=False, timeout=300).stdout
    if "--folds" not in train or "--tta" not in segment:
        raise SystemExit("bench_precision needs `mitk train --folds` and `mitk segment --tta` (the ensemble code); "
                         "this mitk has neither")


def bench_segment(work: Path, cases: int, epochs: int, folds: int) -> dict[str, Any]:
    sample = work / "seg_sample"
    mitk("sample", "segment", "--output-dir", str(sample), "--cases", str(cases), "--size", "48", "--task", "brain")
    training = {
        "single": mitk("train", "segment", "--data", str(sample), "--output-dir", str(work / "seg_single"),
                       "--epochs", str(epochs), *SEGMENT_TRAIN),
        "folds": mitk("train", "segment", "--data", str(sample), "--output-dir", str(work / "seg_folds"),
                      "--epochs", str(epochs), "--folds", str(folds), *SEGMENT_TRAIN),
    }
    arms = {"one model": [str(work / "seg_single" / "best.safetensors")], "ensemble": [str(work / "seg_folds")],
            "ensemble + TTA": [str(work / "seg_folds"), "--tta"]}
    rows = {}
    for name, weights in arms.items():
        out = work / f"seg_pred_{name.replace(' ', '_').replace('+', 'tta')}"
        cost = mitk("segment", str(sample / "imagesTs"), "--weights", *weights, "--probabilities", "-d", str(out))
        scores = work / f"{out.name}.json"
        mitk("evaluate", "segment", "--pred", str(out), "--ref", str(sample / "labelsTs"), "--json", stdout=scores)
        document = json.loads(scores.read_text())
        dice = [row["dice"] for case in document["cases"] for row in case["labels"] if row["dice"] is not None]
        calibration = document.get("calibration", {})
        rows[name] = {"mean_dice": round(sum(dice) / len(dice), 4) if dice else None,
                      "foreground_voxel_ece": (calibration.get("foreground") or {}).get("ece"),
                      "entropy_vs_error_auc": (calibration.get("foreground") or {}).get("uncertainty_auc"),
                      "test_cases": len(document["cases"]), **cost}
    return {"training": training, "inference": rows, "folds": folds, "epochs": epochs, "cases": cases}


def _test_images(sample: Path) -> list[str]:
    with (sample / "test.csv").open(newline="") as handle:
        return [str(sample / row["image"]) for row in csv.DictReader(handle)]


def bench_classify(work: Path, epochs: int, folds: int) -> dict[str, Any]:
    sample = work / "cls_sample"
    mitk("sample", "classify", "--output-dir", str(sample))
    data = str(sample / "train.csv")
    training = {
        "single": mitk("train", "classify", "--data", data, "--output-dir", str(work / "cls_single"),
                       "--epochs", str(epochs), *CLASSIFY_TRAIN),
        "folds": mitk("train", "classify", "--data", data, "--output-dir", str(work / "cls_folds"),
                      "--epochs", str(epochs), "--folds", str(folds), *CLASSIFY_TRAIN),
    }
    arms = {"one model": [str(work / "cls_single" / "best.safetensors")], "ensemble": [str(work / "cls_folds")],
            "ensemble + TTA": [str(work / "cls_folds"), "--tta"]}
    images = _test_images(sample)
    rows = {}
    for name, weights in arms.items():
        preds = work / f"cls_{name.replace(' ', '_').replace('+', 'tta')}.csv"
        cost = mitk("classify", *images, "--weights", *weights, "--uncertainty", "--csv", str(preds))
        scores = preds.with_suffix(".json")
        mitk("evaluate", "classify", "--pred", str(preds), "--ref", str(sample / "test.csv"), "--json", stdout=scores)
        document = json.loads(scores.read_text())
        calibration = document.get("calibration", {})
        rows[name] = {"macro_auc": document["macro_auc"], "accuracy": document["accuracy"], "ece": document["ece"],
                      "entropy_vs_error_auc": calibration.get("uncertainty_auc"),
                      "uncertainty": calibration.get("uncertainty"), "test_cases": document["cases"], **cost}
    return {"training": training, "inference": rows, "folds": folds, "epochs": epochs}


def print_table(document: dict[str, Any]) -> None:
    for task, part in document.items():
        if not isinstance(part, dict) or "inference" not in part:
            continue
        print(f"\n{task} ({part['folds']} folds, {part['epochs']} epochs)")
        for name, row in part["inference"].items():
            values = ", ".join(f"{k} {v}" for k, v in row.items())
            print(f"  {name:16s} {values}")
        for name, cost in part["training"].items():
            print(f"  training {name}: {cost['wall_s']} s wall, {cost['cpu_s']} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cases", type=int, default=12, help="segmentation sample cases")
    parser.add_argument("--task", choices=("segment", "classify", "both"), default="both")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    options = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(options.threads)  # the children's torch threads
    require_ensemble_options()
    document: dict[str, Any] = {"threads": options.threads}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as folder:
        work = Path(folder)
        if options.task in ("segment", "both"):
            document["segment"] = bench_segment(work, options.cases, options.epochs, options.folds)
        if options.task in ("classify", "both"):
            document["classify"] = bench_classify(work, options.epochs, options.folds)
    print_table(document)
    print(f"\nsaved {save('bench_precision', document)}")


if __name__ == "__main__":
    main()
