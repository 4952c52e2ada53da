"""Training the default ``retinanet`` recipe on ``mitk sample detect`` vs ``blob`` on the same held-out scans.

One run per seed: ``mitk sample detect --cases N --real tests/data --seed S`` → ``mitk train detect --plugin
retinanet`` (the default recipe, ``--epochs E``) → ``mitk detect --weights best`` on ``imagesTs`` →
``mitk evaluate detect`` (COCO mAP over IoU 0.10–0.50, FROC); ``mitk detect --plugin blob`` on the same scans.
Each step is a child process limited to ``--threads`` threads (OMP/MKL and ``torch.set_num_threads``); its CPU
time is ``resource.getrusage(RUSAGE_CHILDREN)`` user + sys (the child and everything it started), beside its wall
time. While training runs, its CPU time so far (``/proc/PID/stat``: the child's user + sys) is written every
10 s to ``RUN/bench_cpu.json``, so a run stopped on a busy machine and continued with ``--resume --keep DIR``
adds up its parts. The per-epoch loss and validation scores come from the run's ``log.json``; results go to
``results/detect_train_seed<S>.json``.

    nice python benchmarks/bench_detect_train.py --seed 0 --epochs 12 --keep /tmp/bench_s0
    nice python benchmarks/bench_detect_train.py --seed 0 --epochs 12 --keep /tmp/bench_s0 --resume
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import save, table

REPO = Path(__file__).resolve().parents[1]
BLOB_SETTINGS = ["--set", "polarity=both", "--set", "threshold=0.3"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
    """User + sys CPU seconds of a running process (Linux ``/proc``), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mitk(args: list[str], threads: int, progress: Path | None = None, prior: dict[str, float] | None = None
         ) -> dict[str, Any]:
    """Run ``mitk ARGS`` in a child limited to ``threads`` threads: its stdout, CPU seconds and wall seconds
    (plus ``prior`` ones); with ``progress``, the totals so far are written there every 10 s."""
    code = (f"import torch; torch.set_num_threads({threads}); torch.set_num_interop_threads(1)\n"
            "import sys; from mitk.cli import main; sys.argv = ['mitk'] + sys.argv[1:]; main()")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = dict(prior or {"cpu_s": 0.0, "wall_s": 0.0})
    cpu, started = _children_cpu(), time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    done = threading.Event()

    def record() -> None:
        while progress is not None and not done.wait(10.0):
            used = _process_cpu(child.pid)
            if used is not None:
                progress.write_text(json.dumps({"cpu_s": round(before["cpu_s"] + used, 1), "wall_s": round(
                    before["wall_s"] + time.perf_counter() - started, 1)}) + "\n")

    watcher = threading.Thread(target=record, daemon=True)
    watcher.start()
    stdout, stderr = child.communicate()
    done.set()
    watcher.join()
    seconds, cpu_seconds = time.perf_counter() - started, _children_cpu() - cpu
    if child.returncode != 0:
        raise RuntimeError(f"mitk {' '.join(args)} failed:\n{stderr[-3000:]}")
    totals = {"cpu_s": round(before["cpu_s"] + cpu_seconds, 1), "wall_s": round(before["wall_s"] + seconds, 1)}
    if progress is not None:
        progress.write_text(json.dumps(totals) + "\n")
    return {"stdout": stdout, "stderr": stderr, **totals}


def scores(evaluation: dict[str, Any]) -> dict[str, Any]:
    """mAP, mAR, AP@0.1 and FROC from ``mitk evaluate detect --json``."""
    summary = evaluation.get("summary", evaluation)
    row = {key: round(summary[key], 4) for key in ("mAP", "mAR", "AP_0.1", "AR_0.1")}
    return {**row, "froc": round(summary["froc"]["score"], 4), "froc_sensitivity": summary["froc"]["sensitivity"]}


def detect_and_score(sample: Path, out: Path, plugin_args: list[str], threads: int) -> dict[str, Any]:
    step = mitk(["detect", str(sample / "imagesTs"), *plugin_args, "-d", str(out), "--overwrite"], threads)
    evaluation = mitk(["evaluate", "detect", "--pred", str(out), "--ref", str(sample / "boxesTs"), "--json"],
                      threads)
    return {**scores(json.loads(evaluation["stdout"])), "detect_cpu_s": step["cpu_s"],
            "detect_wall_s": step["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--val-every", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--real", default=str(REPO / "tests" / "data"))
    parser.add_argument("--keep", type=Path, help="Keep the sample and the run folder here.")
    parser.add_argument("--set", action="append", default=[], help="Extra plugin setting KEY=VALUE for training.")
    parser.add_argument("--resume", action="store_true", help="Continue the run kept in --keep (its CPU adds up).")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_detect_train_"))
    work.mkdir(parents=True, exist_ok=True)
    sample, run = work / "sample", work / "run"
    try:
        extra = [item for setting in args.set for item in ("--set", setting)]
        progress, prior = run / "bench_cpu.json", None
        if args.resume:
            if not progress.is_file():
                raise SystemExit(f"--resume: no {progress} (the CPU and wall seconds of the earlier part)")
            prior = json.loads(progress.read_text())
            options = ["--resume", "--epochs", str(args.epochs)]
        else:
            mitk(["sample", "detect", "-d", str(sample), "--cases", str(args.cases), "--real", args.real,
                  "--seed", str(args.seed), "--overwrite"], args.threads)
            run.mkdir(parents=True, exist_ok=True)
            options = ["--data", str(sample), "--epochs", str(args.epochs), "--val-every", str(args.val_every),
                       "--seed", str(args.seed), "--overwrite", *extra]
        train = mitk(["train", "detect", "--plugin", "retinanet", "-d", str(run), *options], args.threads,
                     progress=progress, prior=prior)
        log = json.loads((run / "log.json").read_text())
        epochs = [{key: (round(value, 4) if isinstance(value, float) else value) for key, value in row.items()}
                  for row in log["epochs"]]
        retinanet = detect_and_score(sample, work / "pred_retinanet", ["--weights", str(run / "best.safetensors")],
                                     args.threads)
        blob = detect_and_score(sample, work / "pred_blob", ["--plugin", "blob", *BLOB_SETTINGS], args.threads)
        warnings = [line for line in train["stderr"].splitlines() if "warning" in line.lower()]
        document = {"seed": args.seed, "cases": args.cases, "epochs": args.epochs, "threads": args.threads,
                    "settings": args.set, "train_cpu_s": train["cpu_s"], "train_wall_s": train["wall_s"],
                    "train_warnings": warnings, "learning_curve": epochs,
                    "test": {"retinanet": retinanet, "blob " + " ".join(BLOB_SETTINGS[1::2]): blob}}
        print(table(epochs, list(epochs[0])))
        print(json.dumps({k: document[k] for k in ("seed", "train_cpu_s", "train_wall_s", "test")}, indent=2))
        path = save(f"detect_train_seed{args.seed}", document)
        if (run / "training_curve.png").is_file():
            shutil.copy(run / "training_curve.png", path.with_suffix(".png"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
