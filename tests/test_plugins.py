"""The plugin system: discovery through entry points, broken plugins, the environment switches, names.

Third-party plugins are simulated the way pip installs them: a ``*.dist-info`` folder (``METADATA`` and
``entry_points.txt``) next to the module, in a folder put on ``sys.path`` (in-process) or ``PYTHONPATH``
(subprocess). Nothing is installed into the environment.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mitk.errors import PluginError
from mitk.plugin_manager import build_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
HOOKSPECS = ROOT / "mitk" / "hookspecs.py"
PLUGIN_DOCS = ROOT / "docs" / "writing-plugins.md"

GOOD = '''
from mitk import hookimpl

@hookimpl
def mitk_register_plugins(register):
    register("{name}", task="detect", factory="{module}:Never", summary="a good plugin")
'''
HOOK_RAISES = '''
from mitk import hookimpl

@hookimpl
def mitk_register_plugins(register):
    raise RuntimeError("the licence server is unreachable")
'''
IMPORT_FAILS = '''
import a_dependency_nobody_installed  # noqa: F401
'''
CLAIMS_THRESHOLD = '''
from mitk import hookimpl

@hookimpl
def mitk_register_plugins(register):
    register("threshold", task="segment", factory=lambda: None, summary="an impostor")
'''


def make_distribution(site: Path, distribution: str, entry_points: dict[str, str], modules: dict[str, str],
                      version: str = "1.0") -> None:
    """Write what ``pip install`` leaves behind: modules and a ``<name>-<version>.dist-info`` folder."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[mitk.plugins]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of fake installed distributions, on ``sys.path``; module names unique to the test."""
    tag = re.sub(r"\W", "_", request.node.name)[:40]
    folder = tmp_path / "site"
    make_distribution(folder, "mitk-good", {"good": f"good_{tag}"},
                      {f"good_{tag}": GOOD.format(name="spotter", module=f"good_{tag}")}, version="2.3.1")
    make_distribution(folder, "mitk-hook-raises", {"raises": f"raises_{tag}"}, {f"raises_{tag}": HOOK_RAISES})
    make_distribution(folder, "mitk-import-fails", {"fails": f"fails_{tag}"}, {f"fails_{tag}": IMPORT_FAILS})
    for variable in ("MITK_PLUGINS_STRICT", "MITK_DISABLE_PLUGIN_AUTOLOAD", "MITK_BLOCK_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def run_mitk(site: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITK_")}
    env.update(variables, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-m", "mitk", *args], capture_output=True, text=True, env=env,
                          timeout=120)


# -------------------------------------------------------------------------------------------------
# In-process: the registry
# -------------------------------------------------------------------------------------------------


def test_broken_plugins_are_recorded_and_the_rest_load(site: Path) -> None:
    _, registry = build_plugin_manager()
    spotter = registry.get("spotter", "detect")
    assert (spotter.distribution, spotter.version, spotter.source) == ("mitk-good", "2.3.1", "good")
    threshold = registry.get("threshold", "segment")
    assert threshold.distribution == "mitk"
    reasons = {b.distribution: b.reason for b in registry.broken}
    assert "registration failed: RuntimeError: the licence server is unreachable" in reasons["mitk-hook-raises"]
    assert "import failed: ModuleNotFoundError" in reasons["mitk-import-fails"]
    assert "a_dependency_nobody_installed" in reasons["mitk-import-fails"]


def test_strict_mode_makes_a_broken_plugin_an_error(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITK_PLUGINS_STRICT", "1")
    with pytest.raises(PluginError, match="is broken"):
        build_plugin_manager()
    monkeypatch.setenv("MITK_BLOCK_PLUGINS", "mitk-hook-raises,fails,unet")
    _, registry = build_plugin_manager()  # nothing broken left: strict mode is happy
    assert "spotter" in registry and registry.broken == []


def test_disable_autoload_loads_only_builtins(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITK_DISABLE_PLUGIN_AUTOLOAD", "1")
    _, registry = build_plugin_manager()
    assert "threshold" in registry and "spotter" not in registry
    assert {e.distribution for e in registry} == {"mitk"}
    assert all(b.distribution == "mitk" for b in registry.broken)


def test_block_plugins_by_entry_point_or_distribution(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITK_BLOCK_PLUGINS", "good, mitk-import-fails")
    _, registry = build_plugin_manager()
    assert "spotter" not in registry and "threshold" in registry
    assert {b.distribution for b in registry.broken} - {"mitk"} == {"mitk-hook-raises"}
    monkeypatch.setenv("MITK_BLOCK_PLUGINS", "mitk")  # a built-in cannot be blocked by distribution name
    assert "threshold" in build_plugin_manager()[1]


def test_a_plugin_cannot_take_a_builtin_name(site: Path) -> None:
    # Entry point "aaa" sorts before the built-in "threshold": the built-in must still win.
    make_distribution(site, "mitk-impostor", {"aaa": "impostor_module"}, {"impostor_module": CLAIMS_THRESHOLD})
    _, registry = build_plugin_manager()
    assert registry.get("threshold").distribution == "mitk"
    impostor = [b for b in registry.broken if b.distribution == "mitk-impostor"]
    assert len(impostor) == 1 and "already registered" in impostor[0].reason


def test_duplicate_names_from_two_distributions(site: Path) -> None:
    tag = site.parent.name
    make_distribution(site, "mitk-copycat", {"copycat": f"copycat_{tag}"},
                      {f"copycat_{tag}": GOOD.format(name="spotter", module=f"copycat_{tag}")})
    _, registry = build_plugin_manager()
    assert registry.get("spotter").distribution in {"mitk-good", "mitk-copycat"}
    loser = {"mitk-good", "mitk-copycat"} - {registry.get("spotter").distribution}
    duplicates = [b for b in registry.broken if "already registered" in b.reason]
    assert [b.distribution for b in duplicates] == list(loser)


def test_unknown_plugin_lists_the_available_ones(site: Path) -> None:
    _, registry = build_plugin_manager()
    with pytest.raises(PluginError) as caught:
        registry.get("thresold", "segment")
    message = str(caught.value)
    assert "unknown segment plugin 'thresold'" in message and "available: " in message
    assert "threshold" in message and "spotter" not in message  # a detector is no segmenter
    with pytest.raises(PluginError, match="is a detect plugin, not a segment plugin"):
        registry.get("spotter", "segment")


def test_registrar_rejects_bad_names_and_tasks() -> None:
    from mitk.registry import PluginRegistrar, Registry

    register = PluginRegistrar(Registry(), "test")
    with pytest.raises(PluginError, match="invalid plugin name"):
        register("two words", task="segment", factory=lambda: None)
    with pytest.raises(PluginError, match="unknown task 'paint'"):
        register("painter", task="paint", factory=lambda: None)


# -------------------------------------------------------------------------------------------------
# Subprocess: the CLI, as users see it
# -------------------------------------------------------------------------------------------------


def test_plugins_list_json_reports_broken_plugins(site: Path) -> None:
    result = run_mitk(site, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["distribution"]: r for r in json.loads(result.stdout)["plugins"] if r["distribution"] != "mitk"}
    assert set(rows) == {"mitk-good", "mitk-hook-raises", "mitk-import-fails"}
    assert {k: rows["mitk-good"][k] for k in ("name", "task", "version", "status")} == {
        "name": "spotter", "task": "detect", "version": "2.3.1", "status": "ok"}
    assert rows["mitk-hook-raises"]["status"] == rows["mitk-import-fails"]["status"] == "broken"
    assert "licence server" in rows["mitk-hook-raises"]["summary"]
    builtin = [r for r in json.loads(result.stdout)["plugins"] if r["name"] == "threshold"]
    assert builtin[0]["distribution"] == "mitk" and builtin[0]["status"] == "ok"


def test_plugins_list_text_and_strict_mode(site: Path) -> None:
    result = run_mitk(site, "plugins", "list")
    assert result.returncode == 0
    assert "spotter" in result.stdout and "broken" in result.stdout
    assert "MITK_PLUGINS_STRICT" in result.stderr and "Traceback" not in result.stderr

    strict = run_mitk(site, "plugins", "list", MITK_PLUGINS_STRICT="1")
    assert strict.returncode != 0
    assert strict.stderr.startswith("mitk: error: plugin ") and len(strict.stderr.strip().splitlines()) == 1
    assert "Traceback" not in strict.stderr

    only_builtins = run_mitk(site, "plugins", "list", "--json", MITK_DISABLE_PLUGIN_AUTOLOAD="1")
    assert {r["distribution"] for r in json.loads(only_builtins.stdout)["plugins"]} == {"mitk"}


def test_registering_plugins_imports_neither_torch_nor_monai(site: Path) -> None:
    blobs = ROOT / "plugins" / "mitk-example-blobs" / "src"
    code = textwrap.dedent("""
        import sys
        import mitk_example_blobs
        from mitk.plugin_manager import build_plugin_manager
        manager, registry = build_plugin_manager(extra_plugins=(mitk_example_blobs,))
        assert "spotter" in registry and "blobs" in registry and "threshold" in registry, registry.names()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai")))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(blobs)])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------------------
# Meta-tests: every hook is documented and tested
# -------------------------------------------------------------------------------------------------


def hook_names() -> list[str]:
    tree = ast.parse(HOOKSPECS.read_text(encoding="utf-8"))
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
             and any(getattr(d, "id", None) == "hookspec" or getattr(getattr(d, "func", None), "id", None)
                     == "hookspec" for d in node.decorator_list)]
    assert names, "no hooks found in mitk/hookspecs.py"
    return names


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_are_documented(hook: str) -> None:
    assert hook in PLUGIN_DOCS.read_text(encoding="utf-8"), f"{hook} is not described in {PLUGIN_DOCS.name}"


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_have_tests(hook: str) -> None:
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if hook in p.read_text(encoding="utf-8")]
    assert tests, f"no test under tests/ implements or mentions {hook}"
