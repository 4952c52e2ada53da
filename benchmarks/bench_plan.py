"""Training from `mitk plan` vs the plugin's defaults vs the docs' hand-set settings, on the sample data.

One command per task and seed: ``mitk sample classify`` (or ``detect``) → ``mitk plan`` → three short trainings of
the same epochs (the plan; ``--no-plan``: the plugin's defaults; ``--no-plan`` with the settings the docs' walk-
through sets by hand) → the best checkpoint on the held-out test cases → ``mitk evaluate`` (classification:
accuracy, macro AUC, ECE; detection: COCO mAP over IoU 0.1–0.5, FROC). Each step is a child process with
``OMP_NUM_THREADS=--threads``; CPU time is the children's user + sys (``RUSAGE_CHILDREN``). Results go to
``results/plan_<task>_seed<S>.json``.

    nice python benchmarks/bench_plan.py --task classify --epochs 10
    nice python benchmarks/bench_plan.py --task detect --epochs 12 --cases 30
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import save, table

REPO = Path(__file__).resolve().parents[1]
HAND_SET = {"classify": ["--no-plan", "--batch-size", "8", "--set", "image_size=[64,64]"],
            "detect": ["--no-plan", "--set", "spacing=[6,6,6]"]}
PLUGIN = {"classify": "resnet", "detect": "retinanet"}


def mitk(args: list[str], threads: int, cwd: Path) -> tuple[str, float, float]:
    """Run ``mitk ARGS``; (stdout, CPU seconds, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mitk", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=3600, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"mitk {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return done.stdout, cpu, wall


def score(task: str, run: Path, folder: Path, threads: int) -> dict[str, Any]:
    """The best checkpoint on the sample's test cases, evaluated."""
    weights = str(run / "best.safetensors")
    if task == "classify":
        tests = [line.split(",")[0] for line in (folder / "sample" / "test.csv").read_text().splitlines()[1:]]
        mitk(["classify", *[f"sample/{t}" for t in tests], "--weights", weights, "--csv", f"{run.name}.csv"],
             threads, folder)
        out, _, _ = mitk(["evaluate", "classify", "--pred", f"{run.name}.csv", "--ref", "sample/test.csv", "--json"],
                         threads, folder)
        scores = json.loads(out)
        return {k: round(scores[k], 4) for k in ("accuracy", "balanced_accuracy", "macro_auc", "ece")}
    mitk(["detect", "sample/imagesTs", "--weights", weights, "-d", f"{run.name}_pred"], threads, folder)
    out, _, _ = mitk(["evaluate", "detect", "--pred", f"{run.name}_pred", "--ref", "sample/boxesTs", "--json"],
                     threads, folder)
    scores = json.loads(out)
    froc = scores["froc"].get("score") if isinstance(scores["froc"], dict) else scores["froc"]
    return {"mAP": round(scores["mAP"], 4), "mAR": round(scores["mAR"], 4),
            "froc": None if froc is None else round(froc, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("classify", "detect"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cases", type=int, default=None, help="sample cases (default: the sample's own)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_plan_"))
    folder.mkdir(parents=True, exist_ok=True)
    sample = ["sample", args.task, "-d", "sample", "--seed", str(args.seed), "--overwrite"]
    if args.cases:
        sample += ["--cases", str(args.cases)]
    if args.task == "detect":
        sample += ["--real", str(REPO / "tests" / "data")]
    mitk(sample, args.threads, folder)
    data = "sample/train.csv" if args.task == "classify" else "sample"
    plan_out, plan_cpu, _ = mitk(["plan", data, "--plugin", PLUGIN[args.task], "--device", "cpu", "--overwrite",
                                  "--json"], args.threads, folder)
    rows = []
    for name, extra in (("plan", []), ("defaults", ["--no-plan"]), ("hand-set", HAND_SET[args.task])):
        run = folder / f"run_{name}"
        _, cpu, wall = mitk(["train", args.task, "--plugin", PLUGIN[args.task], "--data", data, "-d", run.name,
                             "--epochs", str(args.epochs), "--seed", str(args.seed), "--overwrite", *extra],
                            args.threads, folder)
        rows.append({"settings": name, "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
                     **score(args.task, run, folder, args.threads)})
    document = {"task": args.task, "seed": args.seed, "epochs": args.epochs, "cases": args.cases,
                "threads": args.threads, "plan": json.loads(plan_out), "plan_cpu_s": round(plan_cpu, 1),
                "rows": rows, "load": os.getloadavg()}
    save(f"plan_{args.task}_seed{args.seed}", document)
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
