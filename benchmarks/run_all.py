"""Run every benchmark in turn (each writes benchmarks/results/<name>.json and prints a markdown table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = ["bench_startup.py", "bench_nifti_read.py", "bench_dicom_read.py", "bench_cpu_kernels.py",
              "bench_cpu_kernels_3d.py", "bench_segment.py", "bench_classify.py", "bench_detect.py",
              "bench_register.py", "bench_scaleout.py", "bench_bundle.py", "bench_itk_read.py"]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"## {name}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / name), *sys.argv[1:]], cwd=HERE) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
