"""Fast start: commands that need no model must not import torch or monai (about 3 and 8 s of start-up).

Each command runs through :func:`mitk.cli.main` in a fresh Python, which then reports the heavy modules it
holds. No timings are asserted: the check is which modules were imported, which does not depend on load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "monai")

CHILD = f"""
import json, sys
from mitk.cli import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
with open(sys.argv[1], "w") as report:
    json.dump({{"code": code, "heavy": heavy}}, report)
"""


def imported_heavy_modules(tmp_path: Path, *args: str) -> list[str]:
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-c", CHILD, str(report), *args], capture_output=True, text=True,
                            timeout=120)
    assert report.exists(), result.stderr
    document = json.loads(report.read_text())
    assert document["code"] in (0, None), result.stderr
    return list(document["heavy"])


@pytest.mark.parametrize("args", [
    ["--help"],
    ["--version"],
    ["segment", "--help"],
    ["plugins", "list"],
    ["plugins", "list", "--json"],
], ids=" ".join)
def test_command_imports_neither_torch_nor_monai(tmp_path: Path, args: list[str]) -> None:
    assert imported_heavy_modules(tmp_path, *args) == []


def test_info_on_a_nifti_file_imports_neither_torch_nor_monai(tmp_path: Path, anatomical_t1: Path) -> None:
    assert imported_heavy_modules(tmp_path, "info", str(anatomical_t1), "--json") == []


def test_the_check_can_fail(tmp_path: Path) -> None:
    """The probe does see torch when a command imports it (a stand-in torch keeps this fast)."""
    stand_in = tmp_path / "stand_in"
    (stand_in / "torch").mkdir(parents=True)
    (stand_in / "torch" / "__init__.py").write_text("")
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-c", CHILD, str(report), "segment", "--plugin", "threshold", "--device", "cpu",
                    "--probabilities", str(tmp_path / "missing.nii.gz")], capture_output=True, text=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(
                       [str(stand_in), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert "torch" in json.loads(report.read_text())["heavy"]


def test_the_python_api_names_import_neither_torch_nor_monai() -> None:
    """``import mitk``, reaching ``mitk.load``, ``mitk.Model`` and the task calls, and loading a classical plugin
    stay light; loading a torch plugin is not."""
    code = ("import sys, mitk; names = [mitk.load, mitk.Model, mitk.as_image, mitk.segment, mitk.register]; "
            "import mitk.api, mitk.io.memory, mitk.results, mitk.types; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})); "
            "mitk.load('threshold'); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules if m.split('.')[0] in {HEAVY!r}}})); "
            "mitk.load('affine'); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules if m.split('.')[0] in {HEAVY!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, classical, network = done.stdout.splitlines()
    assert before == classical == "[]"  # a classical plugin loads without torch
    assert "'torch'" in network  # the check can fail: loading a torch plugin does import torch
