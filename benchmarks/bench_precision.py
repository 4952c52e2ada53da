"""Issue 24 item 7: one model vs the fold ensemble vs the fold ensemble with test-time augmentation, on the real
sample data, with the CPU time each costs.

Segmentation: `mitk sample segment` (MNI152 brain, the README's main command's settings); classification:
`mitk sample classify` (MNI152 slices) trained on one sample (seed 0) and tested on its test split plus a whole
second sample (seed 1: other levels, geometry, contrast, bias and noise of the same real brain), a few hundred
held-out images, with paired bootstrap 95 % intervals of each arm's difference from one model; detection: the
cost of fold ensembles and TTA per scan (passes, CPU) with a tiny RetinaNet (an accurate one costs ~700 s of CPU
per model to train, docs/detection.md: out of this benchmark's budget). Each arm is the documented CLI, run as a
user runs it:

    mitk train TASK ... --output-dir single/                 one model (the seeded split)
    mitk train TASK ... --output-dir folds/ --folds K        K folds
    mitk TASK TEST --weights single/best.safetensors         "one model"
    mitk TASK TEST --weights folds/                          "ensemble" (every fold's best checkpoint)
    mitk TASK TEST --weights folds/ --tta                    "ensemble + TTA"
    mitk evaluate TASK ...                                   Dice (segment), AUC / ECE (classify), mAP (detect)
    mitk evaluate crossval folds/ --predict                  pooled out-of-fold scores (classify)

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

import numpy as np
from _harness import save

SEGMENT_TRAIN = ["--plugin", "unet", "--patch-size", "48", "--set", "spacing=[4.5,4.5,4.5]",
                 "--set", "network.channels=[8,16,32,64]", "--set", "network.strides=[2,2,2]"]
"""The README's / docs/training.md's main command's settings."""
CLASSIFY_TRAIN = ["--plugin", "resnet", "--batch-size", "8", "--set", "image_size=[64,64]",
                  "--set", "augmentation.flip=0.5", "--set", "augmentation.flip_axes=[1]"]
"""docs/classification.md's main command's settings, trained with the up-down flips that ``mitk plan`` sets and
``--tta`` then uses (a classifier trained without flips runs the plain pass only under ``--tta``)."""


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


def _labelled_rows(sample: Path, names: tuple[str, ...]) -> list[dict[str, str]]:
    """``image`` (absolute) and ``label`` of every row of a classification sample's CSVs ``names``."""
    rows = []
    for name in names:
        with (sample / name).open(newline="") as handle:
            rows += [{"image": str(sample / row["image"]), "label": row["label"]} for row in csv.DictReader(handle)]
    return rows


def _probabilities(predictions: Path, rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, K) probabilities, (N,) reference class indices and the class names of a `mitk classify --csv` file."""
    with predictions.open(newline="") as handle:
        found = {str((predictions.parent / row["input"]).resolve()): row for row in csv.DictReader(handle)}
    names = [key[len("prob_"):] for key in next(iter(found.values())) if key.startswith("prob_")]
    probabilities = np.asarray([[float(found[str(Path(r["image"]).resolve())][f"prob_{n}"]) for n in names]
                                for r in rows])
    return probabilities, np.asarray([names.index(r["label"]) for r in rows]), names


def _scores(probabilities: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Macro one-vs-rest AUC, accuracy, top-label ECE (mitk's 15 bins) and log loss of one arm."""
    from mitk.evaluation.calibration import expected_calibration_error, mann_whitney_auc

    guess = probabilities.argmax(axis=1)
    aucs = [mann_whitney_auc(probabilities[:, c], truth == c) for c in range(probabilities.shape[1])]
    chosen = probabilities[np.arange(len(truth)), guess]
    return {"macro_auc": float(np.nanmean(aucs)), "accuracy": float(np.mean(guess == truth)),
            "ece": float(expected_calibration_error(chosen, guess == truth)),
            "log_loss": float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1))))}


def paired_bootstrap(truth: np.ndarray, base: np.ndarray, other: np.ndarray, resamples: int = 1000,
                     seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile intervals of ``other − base`` per score, resampling the test cases (paired)."""
    generator = np.random.default_rng(seed)
    differences: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = generator.integers(0, len(truth), len(truth))
        a, b = _scores(base[pick], truth[pick]), _scores(other[pick], truth[pick])
        for key in a:
            differences.setdefault(key, []).append(b[key] - a[key])
    return {key: [round(float(np.nanpercentile(v, 2.5)), 4), round(float(np.nanpercentile(v, 97.5)), 4)]
            for key, v in differences.items()}


def bench_classify(work: Path, epochs: int, folds: int, cases: int, test_cases: int) -> dict[str, Any]:
    sample, second = work / "cls_sample", work / "cls_test"
    mitk("sample", "classify", "--output-dir", str(sample), "--cases", str(cases), "--size", "64", "--seed", "0")
    mitk("sample", "classify", "--output-dir", str(second), "--cases", str(test_cases), "--size", "64",
         "--seed", "1")
    rows = _labelled_rows(sample, ("test.csv",)) + _labelled_rows(second, ("train.csv", "test.csv"))
    reference = work / "cls_reference.csv"
    with reference.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    data = str(sample / "train.csv")
    training = {
        "single": mitk("train", "classify", "--data", data, "--output-dir", str(work / "cls_single"),
                       "--epochs", str(epochs), *CLASSIFY_TRAIN),
        "folds": mitk("train", "classify", "--data", data, "--output-dir", str(work / "cls_folds"),
                      "--epochs", str(epochs), "--folds", str(folds), *CLASSIFY_TRAIN),
    }
    arms = {"one model": [str(work / "cls_single" / "best.safetensors")],
            "one model + TTA": [str(work / "cls_single" / "best.safetensors"), "--tta"],
            "ensemble": [str(work / "cls_folds")], "ensemble + TTA": [str(work / "cls_folds"), "--tta"]}
    images = [row["image"] for row in rows]
    results, probabilities = {}, {}
    for name, weights in arms.items():
        preds = work / f"cls_{name.replace(' ', '_').replace('+', 'tta')}.csv"
        cost = mitk("classify", *images, "--weights", *weights, "--uncertainty", "--csv", str(preds))
        scores = preds.with_suffix(".json")
        mitk("evaluate", "classify", "--pred", str(preds), "--ref", str(reference), "--json", stdout=scores)
        document = json.loads(scores.read_text())
        calibration = document.get("calibration", {})
        probabilities[name], truth, _ = _probabilities(preds, rows)
        results[name] = {"macro_auc": document["macro_auc"], "accuracy": document["accuracy"],
                         "ece": document["ece"], "log_loss": round(_scores(probabilities[name], truth)["log_loss"], 4),
                         "entropy_vs_error_auc": calibration.get("uncertainty_auc"),
                         "errors": calibration.get("errors"), "test_cases": document["cases"], **cost,
                         "cpu_ms_per_image": round(1000 * cost["cpu_s"] / len(images), 1)}
    for name in arms:
        if name != "one model":
            results[name]["difference_vs_one_model_95ci"] = paired_bootstrap(truth, probabilities["one model"],
                                                                             probabilities[name])
    out_of_fold = work / "cls_oof.json"
    oof_cost = mitk("evaluate", "crossval", str(work / "cls_folds"), "--predict", "--json", stdout=out_of_fold)
    return {"training": training, "inference": results, "folds": folds, "epochs": epochs,
            "training_cases": cases, "test_cases": len(rows),
            "out_of_fold": {**json.loads(out_of_fold.read_text())["out_of_fold"], **oof_cost}}


DETECT_TRAIN = ["--plugin", "retinanet", "--set", "spacing=[6,6,6]", "--set", "patch_size=[32,32,32]",
                "--set", "backbone.block_inplanes=[8,16,32,64]", "--set", "backbone.fpn_channels=16"]
"""A tiny RetinaNet (the tests' settings at 6 mm): enough to time the passes, not to find lesions well."""


def bench_detect(work: Path, epochs: int, folds: int) -> dict[str, Any]:
    """What fold ensembles and TTA cost per scan for detection (passes, CPU), with the tiny model's mAP."""
    sample = work / "det_sample"
    mitk("sample", "detect", "--output-dir", str(sample), "--cases", "24", "--size", "32", "--seed", "0")
    training = {"folds": mitk("train", "detect", "--data", str(sample), "--output-dir", str(work / "det_folds"),
                              "--epochs", str(epochs), "--folds", str(folds), *DETECT_TRAIN)}
    scans = sorted(str(p) for p in (sample / "imagesTs").iterdir())
    arms = {"one model": [str(work / "det_folds" / "fold_0")],
            "one model + TTA": [str(work / "det_folds" / "fold_0"), "--tta"],
            "ensemble": [str(work / "det_folds")], "ensemble + TTA": [str(work / "det_folds"), "--tta"]}
    results = {}
    for name, weights in arms.items():
        out = work / f"det_{name.replace(' ', '_').replace('+', 'tta')}"
        records = work / f"{out.name}.json"
        cost = mitk("detect", *scans, "--weights", *weights, "-d", str(out), "--json", stdout=records)
        cases = json.loads(records.read_text())["cases"]
        scores = work / f"{out.name}_scores.json"
        mitk("evaluate", "detect", "--pred", str(out), "--ref", str(sample / "boxesTs"), "--json", stdout=scores)
        document = json.loads(scores.read_text())
        results[name] = {"mAP": document["mAP"], "froc": document["froc"]["score"], "scans": len(scans),
                         "passes_per_scan": cases[0].get("passes", {"members": 1, "flips": 1, "total": 1}),
                         **cost, "cpu_s_per_scan": round(cost["cpu_s"] / len(scans), 2)}
    return {"training": training, "inference": results, "folds": folds, "epochs": epochs}


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
    parser.add_argument("--classify-cases", type=int, default=180, help="classification training sample cases")
    parser.add_argument("--classify-test-cases", type=int, default=240,
                        help="cases of the second classification sample, all held out for testing")
    parser.add_argument("--detect-epochs", type=int, default=1)
    parser.add_argument("--detect-folds", type=int, default=2)
    parser.add_argument("--save-as", default="bench_precision",
                        help="results name (benchmarks/results/NAME.json); tasks not run keep that file's results")
    parser.add_argument("--task", nargs="+", choices=("segment", "classify", "detect", "all"), default=["all"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    options = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(options.threads)  # the children's torch threads
    require_ensemble_options()
    document: dict[str, Any] = {"threads": options.threads, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as folder:
        work = Path(folder)
        if {"segment", "all"} & set(options.task):
            document["segment"] = bench_segment(work, options.cases, options.epochs, options.folds)
        if {"classify", "all"} & set(options.task):
            document["classify"] = bench_classify(work, options.epochs, options.folds, options.classify_cases,
                                                  options.classify_test_cases)
        if {"detect", "all"} & set(options.task):
            document["detect"] = bench_detect(work, options.detect_epochs, options.detect_folds)
    document["load_average_end"] = os.getloadavg()
    earlier = Path(__file__).resolve().parent / "results" / f"{options.save_as}.json"
    if earlier.is_file():  # the tasks not run this time keep their last results, marked as such
        for task, part in json.loads(earlier.read_text()).items():
            if task in ("segment", "classify", "detect") and task not in document:
                document[task] = {**part, "from_an_earlier_run": True}
    print_table(document)
    print(f"\nsaved {save(options.save_as, document)}")


if __name__ == "__main__":
    main()
