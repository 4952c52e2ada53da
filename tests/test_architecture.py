"""The shape of the house: import floors and circles (import-linter), file sizes, and a table-driven CLI.

``lint-imports`` reads the contracts in ``pyproject.toml`` (``[tool.importlinter]``): the floors from the front
doors down to the constants, tasks independent of each other, and no circle between siblings at any depth.
grimp, underneath, counts imports inside functions and under ``TYPE_CHECKING`` too.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.fail("import-linter is not installed (it is in the test extra: pip install -e '.[test]')")
    done = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_contracts_cover_every_module_of_the_core() -> None:
    """Every top-level module or package of ``mitk`` sits on a floor of the layers contract."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    named = {part.strip().split(".")[1] for layer in layers for part in layer.replace(":", "|").split("|")}
    present = {p.stem if p.is_file() else p.name for p in (ROOT / "mitk").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert present - named == set(), "modules on no floor of the layers contract"


@pytest.mark.parametrize("tree", ["mitk", "plugins"])
def test_no_file_over_600_lines(tree: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / tree).rglob("*.py")
            if "build" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_mitk_module_imports_the_package_front_door() -> None:
    """Constants come from ``mitk.constants`` and ``hookimpl`` from ``mitk.hookspecs``: ``from mitk import X`` is
    for users and plugins (it runs ``mitk/__init__``), never for mitk's own modules."""
    offenders = []
    for path in (ROOT / "mitk").rglob("*.py"):
        if path.name == "__init__.py" and path.parent.name == "mitk":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "mitk" and node.level == 0:
                names = {alias.name for alias in node.names}
                if names - {"hookspecs", "options"}:  # submodules, not the front door's names
                    offenders.append(f"{path.relative_to(ROOT)}: from mitk import {', '.join(sorted(names))}")
    assert offenders == []


@pytest.mark.parametrize(("name", "home"), [
    ("SegmentationResult", "mitk.tasks.segment.result"), ("ClassificationResult", "mitk.tasks.classify.result"),
    ("DetectionResult", "mitk.tasks.detect.result"), ("RegistrationResult", "mitk.tasks.register.result"),
    ("Image", "mitk.image"), ("map_box_extents", "mitk.image")])
def test_moved_names_still_import_from_mitk_types_with_a_deprecation_warning(name: str, home: str) -> None:
    import importlib

    import mitk.types

    with pytest.warns(DeprecationWarning, match=f"mitk.types.{name} moved to {home}.{name}"):
        moved = getattr(mitk.types, name)
    assert moved is getattr(importlib.import_module(home), name)


def test_plugin_bases_and_results_import_from_mitk_tasks_without_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from mitk.tasks import (
            ClassificationPlugin,
            DetectionPlugin,
            RegistrationPlugin,
            SegmentationPlugin,
            SegmentationResult,
            Transform,
        )
        from mitk.tasks.segment.result import SegmentationResult as home

    assert SegmentationResult is home and callable(Transform)
    assert {base.task for base in (SegmentationPlugin, ClassificationPlugin, DetectionPlugin, RegistrationPlugin)} \
        == {"segment", "classify", "detect", "register"}


def test_the_architecture_page_names_only_files_that_exist() -> None:
    """Every module and folder drawn in docs/architecture.md's tree is in the tree."""
    import re

    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = page.split("```", 2)[1]
    names = set(re.findall(r"[\w.]+\.py\b", drawing)) | {f"{n}/" for n in re.findall(r"\b([\w-]+)/", drawing)}
    files = {p.name for p in (ROOT / "mitk").rglob("*.py")}
    folders = {f"{p.name}/" for p in [*(ROOT / "mitk").rglob("*"), *(ROOT / "plugins").iterdir()] if p.is_dir()}
    assert names - files - folders - {"mitk/", "plugins/"} == set()
