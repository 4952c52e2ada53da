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
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from mitk import hookimpl
from mitk.errors import PluginError
from mitk.plugin_manager import build_plugin_manager, get_registry, override_registry, use_plugins
from mitk.registry import PluginEntry, Registry, contained, missing_methods
from mitk.tasks import DetectionPlugin, SegmentationPlugin
from mitk.testing import run_mitk

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
MISSPELT_HOOK = '''
from mitk import hookimpl

@hookimpl
def mitk_register_plugin(register):
    register("misspelt", task="detect", factory=lambda: None)
'''
EXTRA_ARGUMENT = '''
from mitk import hookimpl

@hookimpl
def mitk_register_plugins(register, extra):
    register("greedy", task="detect", factory=lambda: None)
'''
EXITS_ON_IMPORT = '''
import sys

sys.exit(3)
'''
EXITS_IN_HOOK = '''
from mitk import hookimpl

@hookimpl
def mitk_register_plugins(register):
    raise SystemExit(3)
'''
INTERRUPTS_ON_IMPORT = '''
raise KeyboardInterrupt
'''
BAD_FACTORIES = '''
from mitk import hookimpl
from mitk.tasks import DetectionPlugin


def interrupt():
    raise KeyboardInterrupt


def exit_three():
    raise SystemExit(3)


class Lazy(DetectionPlugin):
    """Overrides nothing: ``plugins info`` must name what it lacks."""


@hookimpl
def mitk_register_plugins(register):
    register("interrupter", task="detect", factory=interrupt, summary="KeyboardInterrupt in its factory")
    register("quitter", task="detect", factory=exit_three, summary="SystemExit in its factory")
    register("lazy", task="detect", factory=Lazy, summary="implements nothing")
'''
HOSTILE = {"misspelt": MISSPELT_HOOK, "greedy": EXTRA_ARGUMENT, "exits": EXITS_ON_IMPORT,
           "exits-in-hook": EXITS_IN_HOOK, "interrupts": INTERRUPTS_ON_IMPORT}
"""Entry point name → module source of plugins that must end up broken, not crash or end mitk."""


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


def install_hostile(site: Path) -> None:
    """Install the :data:`HOSTILE` plugins and ``mitk-bad-factories`` (one distribution each)."""
    tag = site.parent.name
    for entry_point, source in HOSTILE.items():
        module = f"{entry_point.replace('-', '_')}_{tag}"
        make_distribution(site, f"mitk-{entry_point}", {entry_point: module}, {module: source})
    module = f"factories_{tag}"
    make_distribution(site, "mitk-bad-factories", {"factories": module}, {module: BAD_FACTORIES})


def run_with_site(site: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """:func:`mitk.testing.run_mitk` with ``site`` installed and no ``MITK_*`` switches but ``variables``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MITK_")}
    env.update(variables, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return run_mitk(*args, env=env, timeout=300)


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
# In-process: containment of broken plugins
# -------------------------------------------------------------------------------------------------


def test_hostile_plugins_are_broken_and_the_rest_load(site: Path) -> None:
    install_hostile(site)
    _, registry = build_plugin_manager()  # neither raises nor exits
    assert {"spotter", "threshold", "interrupter", "quitter", "lazy"} <= set(registry.names())
    assert not {"misspelt", "greedy"} & set(registry.names())
    reasons = {b.distribution: b.reason for b in registry.broken}
    assert reasons["mitk-misspelt"] == ("invalid hooks: unknown hook 'mitk_register_plugin' "
                                        "(did you mean 'mitk_register_plugins'?)")
    assert reasons["mitk-greedy"] == ("invalid hooks: mitk_register_plugins declares argument(s) extra that the hook "
                                      "does not pass (it passes: register)")
    assert reasons["mitk-exits"] == "import failed: SystemExit(3): a plugin must not end the process"
    assert reasons["mitk-exits-in-hook"] == "registration failed: SystemExit(3): a plugin must not end the process"
    assert reasons["mitk-interrupts"] == ("import failed: KeyboardInterrupt raised by the plugin itself "
                                          "(not by Ctrl-C)")
    assert all("\n" not in reason for reason in reasons.values())


def test_strict_mode_names_a_misspelt_hook(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_hostile(site)
    monkeypatch.setenv("MITK_PLUGINS_STRICT", "1")
    monkeypatch.setenv("MITK_BLOCK_PLUGINS", "raises,fails,greedy,exits,exits-in-hook,interrupts")
    with pytest.raises(PluginError, match="did you mean 'mitk_register_plugins'"):
        build_plugin_manager()


def test_hooks_are_called_with_the_arguments_they_declare() -> None:
    calls: list[str] = []

    class Bare:  # accepts a subset (none) of the hook's arguments: hooks may grow without breaking it
        @staticmethod
        @hookimpl
        def mitk_register_plugins() -> None:
            calls.append("called")

    _, registry = build_plugin_manager(extra_plugins=(Bare(),), autoload=False)
    assert calls == ["called"]
    assert registry.broken == []


def test_an_optional_hook_of_a_newer_mitk_is_tolerated() -> None:
    class FromTheFuture:
        @staticmethod
        @hookimpl(optionalhook=True)
        def mitk_register_everything(register: Any) -> None:
            raise AssertionError("never called")

    _, registry = build_plugin_manager(extra_plugins=(FromTheFuture(),), autoload=False)
    assert registry.broken == [] and "threshold" in registry


def entry(factory: Any, task: str = "segment") -> PluginEntry:
    from mitk.enums import Task

    return PluginEntry(name="subject", task=Task(task), factory=factory)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def exit_partial() -> None:
    sys.exit(3)


@pytest.mark.parametrize(("factory", "message"), [
    (exit_partial, "failed to build: SystemExit(3): a plugin must not end the process"),
    (raise_keyboard_interrupt, "failed to build: KeyboardInterrupt raised by the plugin itself"),
])
def test_a_factory_cannot_end_the_process(factory: Callable[[], Any], message: str) -> None:
    with pytest.raises(PluginError, match=re.escape(f"plugin 'subject' {message}")):
        entry(factory).load()


def test_a_real_ctrl_c_still_interrupts() -> None:
    # Python's own handler, as in a terminal (a shell starts background jobs with SIGINT ignored)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        def user_presses_ctrl_c() -> None:
            signal.raise_signal(signal.SIGINT)

        with pytest.raises(KeyboardInterrupt):
            entry(user_presses_ctrl_c).load()
        with pytest.raises(KeyboardInterrupt), contained():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, handler)


@pytest.mark.parametrize(("factory", "built"), [(object, "object"), (lambda: None, "NoneType"),
                                                ("mitk_example_blobs._detector:BlobDetector", "BlobDetector")])
def test_load_checks_the_task_base_class(factory: Any, built: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "mitk-example-blobs" / "src"))
    with pytest.raises(PluginError) as caught:
        entry(factory, "segment").load()
    assert str(caught.value) == (f"plugin 'subject' is registered for the segment task but its factory returned "
                                 f"{built}, not a mitk.tasks.SegmentationPlugin")
    if built == "BlobDetector":
        assert entry(factory, "detect").load().task.value == "detect"


def test_missing_methods_lists_what_a_plugin_does_not_override() -> None:
    class NetworkOnly(SegmentationPlugin):
        def network(self, config: dict[str, Any]) -> Any:
            return None

    class Classical(SegmentationPlugin):
        needs_weights = False

        def inference_transforms(self, config: dict[str, Any]) -> Any:
            return None

    class Subclass(Classical):
        needs_weights = True

    assert missing_methods(NetworkOnly()) == ["inference_transforms"]
    assert missing_methods(Classical()) == []  # no weights: no network needed
    assert missing_methods(Subclass()) == ["network"]  # inherited from a plugin class, not from mitk.tasks
    assert missing_methods(DetectionPlugin()) == ["inference_transforms", "detect"]
    assert missing_methods(build_plugin_manager(autoload=False)[1].get("threshold").load()) == []


# -------------------------------------------------------------------------------------------------
# In-process: the fixture that makes a test plugin live everywhere
# -------------------------------------------------------------------------------------------------


class Painter(SegmentationPlugin):
    needs_weights = False

    def network(self, config: dict[str, Any]) -> Any:
        return None

    def inference_transforms(self, config: dict[str, Any]) -> Any:
        return None


class PainterPlugin:
    @staticmethod
    @hookimpl
    def mitk_register_plugins(register: Any) -> None:
        register("painter", task="segment", factory=Painter, summary="a test plugin")


def test_mitk_plugins_fixture_makes_a_plugin_live_everywhere(mitk_plugins: Callable[..., Registry]) -> None:
    import mitk.runner.model

    registry = mitk_plugins(PainterPlugin())
    assert get_registry() is registry and "painter" in registry and "threshold" in registry
    assert mitk.runner.model.get_registry() is registry  # the name the runners imported sees it too
    code, stdout, stderr = invoke(["plugins", "list", "--json"])
    assert code == 0, stderr
    assert "painter" in {row["name"] for row in json.loads(stdout)["plugins"]}
    code, stdout, _ = invoke(["plugins", "info", "painter", "--json"])
    assert code == 0 and json.loads(stdout)["missing_methods"] == []


def test_use_plugins_restores_the_registry_and_rejects_broken_plugins() -> None:
    installed = get_registry()
    with use_plugins(PainterPlugin()) as registry:
        assert get_registry() is registry
        with override_registry(Registry()) as empty:
            assert get_registry() is empty
        assert get_registry() is registry
    assert get_registry() is installed and "painter" not in installed

    class Misspelt:
        @staticmethod
        @hookimpl
        def mitk_register_plugin(register: Any) -> None: ...

    broken = r"Misspelt is broken: invalid hooks: unknown hook 'mitk_register_plugin'"
    with pytest.raises(PluginError, match=broken), use_plugins(Misspelt()):
        pass
    with pytest.raises(ZeroDivisionError), use_plugins(PainterPlugin()):
        1 / 0  # noqa: B018
    assert get_registry() is installed


# -------------------------------------------------------------------------------------------------
# Subprocess: the CLI, as users see it
# -------------------------------------------------------------------------------------------------


def test_plugins_list_json_reports_broken_plugins(site: Path) -> None:
    result = run_with_site(site, "plugins", "list", "--json")
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
    result = run_with_site(site, "plugins", "list")
    assert result.returncode == 0
    assert "spotter" in result.stdout and "broken" in result.stdout
    assert "MITK_PLUGINS_STRICT" in result.stderr and "Traceback" not in result.stderr

    strict = run_with_site(site, "plugins", "list", MITK_PLUGINS_STRICT="1")
    assert strict.returncode != 0
    assert strict.stderr.startswith("mitk: error: plugin ") and len(strict.stderr.strip().splitlines()) == 1
    assert "Traceback" not in strict.stderr

    only_builtins = run_with_site(site, "plugins", "list", "--json", MITK_DISABLE_PLUGIN_AUTOLOAD="1")
    assert {r["distribution"] for r in json.loads(only_builtins.stdout)["plugins"]} == {"mitk"}


def test_the_cli_works_with_hostile_plugins_installed(site: Path, tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    install_hostile(site)
    listing = run_with_site(site, "plugins", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {r["distribution"]: r for r in json.loads(listing.stdout)["plugins"]}
    for entry_point in HOSTILE:
        assert rows[f"mitk-{entry_point}"]["status"] == "broken", entry_point
    assert "did you mean 'mitk_register_plugins'" in rows["mitk-misspelt"]["summary"]
    assert "argument(s) extra" in rows["mitk-greedy"]["summary"]
    assert "SystemExit(3)" in rows["mitk-exits"]["summary"] and "SystemExit(3)" in rows["mitk-exits-in-hook"]["summary"]
    assert {rows["mitk-good"]["status"], rows["mitk"]["status"]} == {"ok"}

    info = run_with_site(site, "plugins", "info", "threshold")
    assert info.returncode == 0, info.stderr
    assert "missing methods: none" in info.stdout

    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.eye(4)), scan)
    segmented = run_with_site(site, "segment", "--plugin", "threshold", str(scan), "-o", str(tmp_path / "mask.nii.gz"))
    assert segmented.returncode == 0, segmented.stderr
    assert (tmp_path / "mask.nii.gz").exists()

    # A factory that raises KeyboardInterrupt or SystemExit(3) is a one-line error (exit 1), not "interrupted"
    # (130) and not mitk's "partial" status (3).
    interrupted = "KeyboardInterrupt raised by the plugin itself (not by Ctrl-C)"
    for name, reason, args in (
            ("interrupter", interrupted, ["detect", "--plugin", "interrupter", str(scan)]),
            ("interrupter", interrupted, ["plugins", "info", "interrupter"]),
            ("quitter", "SystemExit(3): a plugin must not end the process", ["plugins", "info", "quitter"])):
        result = run_with_site(site, *args)
        assert result.returncode == 1, (args, result.returncode, result.stderr)
        assert result.stderr == f"mitk: error: plugin {name!r} failed to build: {reason}\n", args


def test_plugins_info_of_a_light_plugin_imports_neither_torch_nor_monai(site: Path) -> None:
    install_hostile(site)
    code = textwrap.dedent("""
        import sys
        from mitk.cli import main
        try:
            main(["plugins", "info", "lazy"])
        except SystemExit as done:
            assert done.code == 0, done.code
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai")), file=sys.stderr)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "missing methods: inference_transforms, detect (a detect plugin must implement them)" in result.stdout
    assert result.stderr.strip() == "[]"


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


def test_a_plugin_ending_the_process_mid_batch_fails_only_its_cases(tmp_path: Path, anatomical_t1: Path) -> None:
    """``sys.exit()`` or a plugin's own ``KeyboardInterrupt`` while a case runs: that case fails, the batch goes on,
    and mitk's exit status is its own (1: all failed), never the plugin's."""
    import shutil

    from helpers import invoke

    from mitk.plugin_manager import use_plugins
    from mitk.tasks import SegmentationPlugin

    class Exits(SegmentationPlugin):
        needs_weights = False
        trainable = False

        def inference_transforms(self, config: dict) -> object:
            def end(data: dict) -> dict:
                sys.exit(3)
            return end

    class Interrupts(Exits):
        def inference_transforms(self, config: dict) -> object:
            def end(data: dict) -> dict:
                raise KeyboardInterrupt
            return end

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: object) -> None:
            register("exits", task="segment", factory=Exits)  # type: ignore[operator]
            register("interrupts", task="segment", factory=Interrupts)  # type: ignore[operator]

    inputs = []
    for n in range(2):
        shutil.copy(anatomical_t1, tmp_path / f"case{n}.nii")
        inputs.append(str(tmp_path / f"case{n}.nii"))
    with use_plugins(Plugin()):
        for name in ("exits", "interrupts"):
            code, _, err = invoke(["segment", *inputs, "--plugin", name])
            assert code == 1, err
            assert err.count("a plugin must not end the process") == 2, err
    assert not list(tmp_path.glob("*_seg*"))
