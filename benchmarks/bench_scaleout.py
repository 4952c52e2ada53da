"""Scale-out: one batch of real volumes through each way mitk can spread it over 2 cores (issue 13).

Workload: ``mitk segment`` with the ``unet`` plugin and a fixed, seeded (untrained) checkpoint, a small residual
UNet (channels 8–64) by sliding window (roi 64³, overlap 0.25), on N volumes made from nilearn's MNI152 T1 at
1 mm (197×233×189, a brain MR's usual grid; ``--resolution 2`` for 91×109×91), each copy scaled in intensity by
a different factor, so no two files are alike. Contenders,
each the whole command in fresh processes (start-up, model load and writing included):

1. ``local-1x1``: one process, 1 torch thread (the reference);
2. ``local-1x2``: one process, 2 torch threads;
3. ``dask-2x1``: ``--executor dask --workers 2`` (a local cluster, 2 worker processes × 1 thread);
4. ``shards-2x1``: two concurrent processes ``--shard 0/2`` and ``--shard 1/2``, 1 thread each (skipped when
   this mitk has no ``--shard``), split by hash: the inputs are given as ``volumes/`` from the batch's folder, so
   the split is the same in every run (23 + 17 of 40);
5. ``shards-2x1-order``: the same with ``--shard-by order`` (20 + 20).

Reported per contender: wall time, throughput (volumes/min) and its ratio to ``local-1x1``; time to the first
record (start-up and model load) and the steady throughput after it (from the time each record line reaches the
terminal); the per-case overhead: slot time per case not spent in the per-case job,
``(steady span × parallel slots − Σ case seconds after the first) / cases after the first`` (negative when the
cases themselves run slower side by side: memory bandwidth, other load on the machine).

Run: ``python benchmarks/bench_scaleout.py [--volumes 40] [--repeats 1] [--resolution 1]``; writes
``benchmarks/results/scaleout.json`` and prints the markdown table of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import save, table

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"spacing": "keep", "orientation": "RAS", "patch_size": [64, 64, 64], "overlap": 0.25,
            "mode": "gaussian", "sw_batch_size": 1, "labels": {"0": "background", "1": "foreground"},
            "network": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TWO_THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}


def make_volumes(directory: Path, count: int, resolution: int = 1) -> Path:
    """``count`` MR volumes from the real MNI152 T1 (``resolution`` mm), each with its own intensity scale."""
    import nibabel as nib
    import numpy as np
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=resolution)
    array = np.asanyarray(template.dataobj, dtype=np.float32)
    folder = directory / "volumes"
    folder.mkdir()
    for index in range(count):
        scaled = (array * (1000.0 + 10.0 * index) / max(float(array.max()), 1.0)).astype(np.int16)
        nib.save(nib.Nifti1Image(scaled, template.affine), folder / f"mni_{index:03d}.nii.gz")
    return folder


def make_checkpoint(directory: Path) -> Path:
    import torch

    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(SETTINGS)
    torch.manual_seed(0)
    network = plugin.network(config)
    return save_checkpoint(directory / "unet.safetensors", network.state_dict(), task="segment", plugin="unet",
                           plugin_version=None, config=config)


def has_shard() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "mitk", "segment", "--help"], capture_output=True, text=True,
                               env=_env({}), check=False).stdout
    return "--shard" in help_text


def _env(extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "400", **extra}


def run_processes(commands: list[list[str]], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Start the commands together; the arrival time of every record line, the JSON documents, the wall time."""
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  cwd=cwd) for command in commands]
    arrivals: list[float] = []
    outputs: list[str] = ["" for _ in processes]
    errors: list[list[str]] = [[] for _ in processes]

    def read(index: int, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None and process.stdout is not None
        for line in process.stderr:  # record lines, timed as they arrive
            errors[index].append(line)
            if line.startswith(("ok ", "failed ")):
                arrivals.append(time.perf_counter() - started)
        outputs[index] = process.stdout.read()

    readers = [threading.Thread(target=read, args=(index, process)) for index, process in enumerate(processes)]
    for reader in readers:
        reader.start()
    for reader, process in zip(readers, processes, strict=True):
        reader.join()
        if process.wait() != 0:
            raise RuntimeError(f"exit {process.returncode}: {''.join(errors[processes.index(process)])[-2000:]}")
    wall = time.perf_counter() - started
    return {"wall": wall, "arrivals": sorted(arrivals), "documents": [json.loads(text) for text in outputs]}


def measure(name: str, commands: list[list[str]], env: dict[str, str], slots: int, cwd: Path) -> dict[str, Any]:
    run = run_processes(commands, env, cwd)
    cases = [case for document in run["documents"] for case in document["cases"]]
    n = len(cases)
    if n == 0 or any(case["status"] != "ok" for case in cases):
        raise RuntimeError(f"{name}: not every case ran ok")
    arrivals = run["arrivals"]
    first = arrivals[0] if arrivals else run["wall"]
    span = arrivals[-1] - first if len(arrivals) > 1 else 0.0
    case_seconds = sorted(case["seconds"] for case in cases)
    after_first = sum(case_seconds) - case_seconds[0]
    overhead = (span * slots - after_first) / (n - 1) if n > 1 and span > 0 else None
    return {"contender": name, "cases": n, "wall_s": round(run["wall"], 2),
            "per_min": round(60 * n / run["wall"], 2), "first_record_s": round(first, 2),
            "steady_per_min": round(60 * (n - 1) / span, 2) if span > 0 else None,
            "case_s_mean": round(sum(case_seconds) / n, 3),
            "overhead_per_case_s": round(overhead, 3) if overhead is not None else None,
            "workers": sorted({str(case.get("worker")) for case in cases if "worker" in case}),
            "cases_per_process": [len(document["cases"]) for document in run["documents"]]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--volumes", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender, taking turns; best kept")
    parser.add_argument("--resolution", type=int, choices=(1, 2), default=1, help="MNI152 grid spacing, mm")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        volumes = make_volumes(directory, args.volumes, args.resolution)
        checkpoint = make_checkpoint(directory)

        def segment(out: str, *extra: str) -> list[str]:
            return [sys.executable, "-m", "mitk", "segment", volumes.name, "-w", str(checkpoint), "--device", "cpu",
                    "-d", str(directory / out), "--overwrite", "--json", *extra]

        contenders: dict[str, tuple[list[list[str]], dict[str, str], int]] = {
            "local-1x1": ([segment("local1")], ONE_THREAD, 1),
            "local-1x2": ([segment("local2")], TWO_THREADS, 1),
            "dask-2x1": ([segment("dask", "--executor", "dask", "--workers", "2")], ONE_THREAD, 2),
        }
        if has_shard():
            contenders["shards-2x1"] = ([segment("shards", "--shard", "0/2"), segment("shards", "--shard", "1/2")],
                                        ONE_THREAD, 2)
            contenders["shards-2x1-order"] = ([segment("shards-order", "--shard", f"{i}/2", "--shard-by", "order")
                                               for i in (0, 1)], ONE_THREAD, 2)
        else:
            skipped["shards-2x1"] = "this mitk has no --shard option (issue 13 part 1 not merged)"
            print("shards-2x1 skipped: " + skipped["shards-2x1"], file=sys.stderr)
        for _ in range(args.repeats):
            for name, (commands, threads, slots) in contenders.items():
                results.setdefault(name, []).append(measure(name, commands, _env(threads), slots, directory))
                print(f"{name}: {results[name][-1]['wall_s']} s", file=sys.stderr, flush=True)
    best = {name: min(runs, key=lambda r: r["wall_s"]) for name, runs in results.items()}
    reference = best["local-1x1"]
    rows = []
    for row in best.values():
        steady = row["steady_per_min"]
        rows.append({**row, "vs_1x1": round(row["per_min"] / reference["per_min"], 2),
                     "steady_vs_1x1": (round(steady / reference["steady_per_min"], 2)
                                       if steady and reference["steady_per_min"] else None)})
    columns = ["contender", "cases", "wall_s", "per_min", "vs_1x1", "first_record_s", "steady_per_min",
               "steady_vs_1x1", "case_s_mean", "overhead_per_case_s", "cases_per_process"]
    print(table(rows, columns))
    name = "scaleout" if args.resolution == 1 else f"scaleout_{args.resolution}mm"
    save(name, {"volumes": args.volumes, "resolution_mm": args.resolution, "settings": SETTINGS,
                "repeats": args.repeats, "rows": rows, "runs": results, "skipped": skipped})


if __name__ == "__main__":
    main()
