"""Start-up time of `mitk --help`, `mitk plugins list` and `mitk info` vs a bare Python interpreter."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from _harness import save, table, wall


def main() -> None:
    import nibabel as nib
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "small.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((64, 64, 32), np.int16), np.eye(4)), volume)
        mitk = shutil.which("mitk") or "mitk"
        # pyenv shims add a shell hop; call the console script inside the interpreter's bin when present
        direct = Path(sys.executable).parent / "mitk"
        if direct.exists():
            mitk = str(direct)
        rows = [
            {"command": "python -c pass", **wall([sys.executable, "-c", "pass"])},
            {"command": "python -c 'import typer'", **wall([sys.executable, "-c", "import typer"])},
            {"command": "mitk --help", **wall([mitk, "--help"])},
            {"command": "mitk plugins list", **wall([mitk, "plugins", "list"])},
            {"command": "mitk info small.nii.gz", **wall([mitk, "info", str(volume)])},
            {"command": "mitk segment small.nii.gz --plugin threshold (no torch)",
             **wall([mitk, "-q", "segment", str(volume), "--plugin", "threshold", "-d", tmp, "--overwrite"])},
            {"command": "python -c 'import torch'", **wall([sys.executable, "-c", "import torch"], repeats=3)},
        ]
    base = rows[0]["best_s"]
    for row in rows:
        row["over_bare_python_s"] = round(row["best_s"] - base, 3)
    print(table(rows, ["command", "best_s", "median_s", "over_bare_python_s"]))
    save("startup", {"rows": rows})


if __name__ == "__main__":
    main()
