"""Per-file calls with and without the warm worker (`mitk serve`), against one call over all the files.

Whole process, wall time, on copies of a real MR (pyradiomics brain1, 128×128×25): a UNet with seeded weights and
the classical `threshold` plugin. Contenders, each timed end to end in the same run:

- one call: `mitk segment DIR --weights W -d OUT` over N files (the fastest way: one start-up, one model load);
- cold per-file: N calls `mitk segment FILE ...`, each paying Python, torch and MONAI imports;
- warm per-file: the same N calls with MITK_SERVE=1 and a worker started beforehand (its start-up is reported
  separately, as a script would pay it once; from the second call on, the UNet is kept loaded in the worker).

``--rounds R`` alternates one call and the warm loop R times, in turn first (the ratio of each round is reported,
and that of the medians); ``--no-cold`` leaves out the cold loop (N fresh processes: minutes on a loaded machine);
``--baseline DIR`` adds the warm loop through a worker run from another source tree (the worker of an older
commit, checked out with ``git worktree``), interleaved with the others; ``--save NAME`` names the results file;
``--threads T`` sets OMP_NUM_THREADS for every contender alike (OpenMP threads that spin while the machine is
oversubscribed make single timings swing by several times). The load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import save, table

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"spacing": [2.0, 2.0, 4.0], "network": {"channels": [8, 16, 32, 64, 128]}, "patch_size": [48, 48, 16]}


def make_checkpoint(directory: Path) -> Path:
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(SETTINGS)
    torch.manual_seed(0)
    return save_checkpoint(directory / "unet.safetensors", plugin.network(config).state_dict(), task="segment",
                           plugin="unet", plugin_version=None, config=config)


def timed(commands: list[list[str]], env: dict[str, str]) -> float:
    started = time.perf_counter()
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--plugins", default="unet,threshold")
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--baseline", type=Path, help="another mitk source tree (a `git worktree` of an older "
                        "commit): its worker's warm loop runs too, interleaved")
    parser.add_argument("--save", default="serve", help="the results file's name (results/NAME.json)")
    args = parser.parse_args()
    mitk = [sys.executable, "-m", "mitk"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        scans = directory / "scans"
        scans.mkdir()
        for index in range(args.files):
            shutil.copy(ROOT / "tests" / "data" / "brain1_image.nii.gz", scans / f"case_{index:03d}.nii.gz")
        weights = make_checkpoint(directory)
        sock = directory / "run" / "serve.sock"
        sock.parent.mkdir(mode=0o700)
        env = {key: value for key, value in os.environ.items() if not key.startswith("MITK_SERVE")}
        env["MITK_SERVE_SOCKET"] = str(sock)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        baseline_env = None if args.baseline is None else {
            **env, "MITK_SERVE_SOCKET": str(sock.parent / "baseline.sock"),
            "PYTHONPATH": os.pathsep.join([str(args.baseline), str(args.baseline / "plugins")])}
        files = sorted(scans.iterdir())
        rows = []
        for plugin in args.plugins.split(","):
            extra = ["--weights", str(weights)] if plugin == "unet" else ["--plugin", plugin]
            cold = None if args.no_cold else timed(
                [[*mitk, "segment", str(path), *extra, "-d", str(directory / f"{plugin}_cold")] for path in files],
                env)
            started = time.perf_counter()
            subprocess.run([*mitk, "serve", "--detach", "--idle-timeout", "600"], check=True, env=env,
                           capture_output=True)
            worker_start = time.perf_counter() - started
            if baseline_env is not None:
                subprocess.run([*mitk, "serve", "--detach", "--idle-timeout", "600"], check=True, env=baseline_env,
                               capture_output=True)
            contenders = {"one": ([[*mitk, "segment", str(scans), *extra, "-d", str(directory / f"{plugin}_one")]],
                                  env),
                          "warm": ([[*mitk, "segment", str(path), *extra, "-d", str(directory / f"{plugin}_warm")]
                                    for path in files], {**env, "MITK_SERVE": "1"})}
            if baseline_env is not None:
                contenders["baseline"] = ([[*mitk, "segment", str(path), *extra, "-d",
                                            str(directory / f"{plugin}_baseline")] for path in files],
                                          {**baseline_env, "MITK_SERVE": "1"})
            times: dict[str, list[float]] = {name: [] for name in contenders}
            try:
                for round_ in range(args.rounds):
                    names = list(contenders)
                    names = names[round_ % len(names):] + names[:round_ % len(names)]  # each goes first in turn
                    for name in names:
                        shutil.rmtree(directory / f"{plugin}_{name}", ignore_errors=True)
                        times[name].append(timed(*contenders[name]))
                    first = sorted((directory / f"{plugin}_one").glob("*.nii.gz"))
                    for name in contenders:
                        other = sorted((directory / f"{plugin}_{name}").glob("*.nii.gz"))
                        assert [a.read_bytes() for a in first] == [b.read_bytes() for b in other], (plugin, name)
            finally:
                status = subprocess.run([*mitk, "serve", "--status"], env=env, capture_output=True, text=True)
                for worker_env in (env, baseline_env):
                    if worker_env is not None:
                        subprocess.run([*mitk, "serve", "--stop"], env=worker_env, capture_output=True)
            ones, warms = times["one"], times["warm"]
            one, warm = statistics.median(ones), statistics.median(warms)
            row = {"plugin": plugin, "files": args.files, "rounds": args.rounds, "one_call_s": round(one, 2),
                   "warm_per_file_s": round(warm, 2), "worker_start_s": round(worker_start, 2),
                   "warm_over_one_call": round(warm / one, 2),
                   "per_round": [round(w / o, 2) for o, w in zip(ones, warms, strict=True)],
                   "worker": status.stderr.strip().split("; ", 1)[-1]}
            if "baseline" in times:
                base = statistics.median(times["baseline"])
                row.update(baseline_per_file_s=round(base, 2), baseline_over_one_call=round(base / one, 2),
                           warm_over_baseline=round(warm / base, 2))
            if cold is not None:
                row.update(cold_per_file_s=round(cold, 2), cold_over_one_call=round(cold / one, 2))
            rows.append(row)
    load = {"before": [round(v, 1) for v in load_before], "after": [round(v, 1) for v in os.getloadavg()]}
    print(table(rows, list(rows[0])))
    print("load average (1, 5, 15 min) before", load["before"], "after", load["after"])
    save(args.save, {"rows": rows, "load_average": load, "threads": args.threads or "default",
                     "baseline": None if args.baseline is None else str(args.baseline)})


if __name__ == "__main__":
    main()
