"""Start-up of mitk's light commands, whole process, against a bare interpreter and the imports they cannot avoid.

Each command is a fresh process of this checkout (``python -m mitk`` with the repository and its ``plugins``
folder first on ``PYTHONPATH``, what the ``mitk`` console script runs), timed end to end. The commands take
turns (A B C … A B C …) so that load from other jobs falls on all of them alike; best and median of
``--repeats`` runs, and the load average before and after, go to ``benchmarks/results/startup.json``.

mitk's own modules are byte-compiled first (``compileall`` into the git-ignored ``__pycache__`` folders), as
``pip install`` does: a machine that sets PYTHONDONTWRITEBYTECODE would otherwise compile mitk's sources again on
every call, a cost no installed mitk pays. ``--no-compile`` skips that step.

Run: ``python benchmarks/bench_startup.py [--repeats 7] [--baseline OLD_CHECKOUT]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import save, table

ROOT = Path(__file__).resolve().parents[1]
LEAN_NIBABEL = "from mitk.runner.imports import lean_nibabel_import; lean_nibabel_import(); import nibabel"


def path_to(checkout: Path) -> str:
    """``PYTHONPATH`` that runs ``checkout``'s mitk and built-in plugins."""
    return os.pathsep.join([str(checkout), str(checkout / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])])


def commands(volume: Path, out: Path) -> dict[str, list[str]]:
    mitk = [sys.executable, "-m", "mitk"]
    python = [sys.executable, "-c"]
    return {
        "python -c pass": [*python, "pass"],
        "python -c 'import numpy'": [*python, "import numpy"],
        "python -c 'import numpy, nibabel'": [*python, "import numpy, nibabel"],
        "numpy + nibabel as mitk imports it (no pydicom)": [*python, LEAN_NIBABEL],
        "mitk --help": [*mitk, "--help"],
        "mitk plugins list": [*mitk, "plugins", "list"],
        "mitk info small.nii.gz": [*mitk, "info", str(volume)],
        "mitk -q segment small.nii.gz --plugin threshold": [*mitk, "-q", "segment", str(volume), "--plugin",
                                                            "threshold", "-d", str(out), "--overwrite"],
        "mitk segment small.nii.gz --plugin threshold (prints)": [*mitk, "segment", str(volume), "--plugin",
                                                                  "threshold", "-d", str(out), "--overwrite"],
        "python -c 'import torch'": [*python, "import torch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true", help="do not byte-compile mitk's modules first")
    parser.add_argument("--baseline", type=Path, help="another checkout (an older commit) whose mitk commands are "
                                                      "timed in the same turns, as 'baseline: …' rows")
    args = parser.parse_args()
    checkouts = [ROOT, *([args.baseline.resolve()] if args.baseline else [])]
    if not args.no_compile:
        import compileall

        for checkout, folder in ((c, f) for c in checkouts for f in ("mitk", "plugins")):
            compileall.compile_dir(checkout / folder, quiet=1)
    import nibabel as nib
    import numpy as np

    env = {**os.environ, "PYTHONPATH": path_to(ROOT)}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "small.nii.gz"  # a 64×64×32 volume: a dark background and a bright block
        array = np.zeros((64, 64, 32), np.int16)
        array[20:40, 16:48, 8:24] = 500
        nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.0, 1.0])), volume)
        timed = {name: (command, env) for name, command in commands(volume, Path(tmp) / "out").items()}
        if args.baseline:
            before = {**os.environ, "PYTHONPATH": path_to(args.baseline.resolve())}
            timed.update({f"baseline: {name}": (command, before) for name, command in
                          commands(volume, Path(tmp) / "before").items() if name.startswith("mitk")})
        runs: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.repeats):
            for name, (command, variables) in timed.items():
                started = time.perf_counter()
                subprocess.run(command, capture_output=True, check=True, env=variables, cwd=tmp)
                runs[name].append(time.perf_counter() - started)
    load_after = os.getloadavg()
    base = min(runs["python -c pass"])
    rows = [{"command": name, "best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
             "over_bare_python_s": round(min(times) - base, 3)} for name, times in runs.items()]
    print(table(rows, ["command", "best_s", "median_s", "over_bare_python_s"]))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); {os.cpu_count()} CPUs")
    save("startup", {"rows": rows, "repeats": args.repeats, "compiled": not args.no_compile,
                     "baseline": str(args.baseline) if args.baseline else None,
                     "load_average_before": load_before, "load_average_after": load_after})


if __name__ == "__main__":
    main()
