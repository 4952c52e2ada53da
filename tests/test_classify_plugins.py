"""The built-in classification plugins are registered like every built-in: an entry point in pyproject.toml, a
``DEFAULT_PLUGINS`` module for source trees, and (for an install whose entry points predate them) directly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mitk.plugin_manager import DEFAULT_PLUGINS, build_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


def test_densenet121_and_resnet_are_builtin_classifiers() -> None:
    _, registry = build_plugin_manager()
    for name in ("densenet121", "resnet"):
        entry = registry.get(name, "classify")
        assert entry.distribution == "mitk"
        assert entry.load().trainable


def test_registration_is_declared_like_the_other_builtins() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = project["project"]["entry-points"]["mitk.plugins"]
    assert entry_points["densenet121"] == "mitk_builtin.classify_networks"
    assert "mitk_builtin.classify_networks" in DEFAULT_PLUGINS


def test_registration_module_imports_neither_torch_nor_monai() -> None:
    import subprocess

    code = ("import sys, mitk_builtin.classify_networks; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_blocked_classifiers_are_not_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITK_BLOCK_PLUGINS", "densenet121,classify_networks")
    _, registry = build_plugin_manager()
    assert "densenet121" not in registry and "resnet" not in registry and "unet" in registry
