"""The test suite can never hang: every test has a time limit (pytest-timeout, set in pyproject), a hang that
holds the interpreter is ended by the backstop in ``conftest.py``, both name the test, and no test makes a
process group in the test process (those run in processes of their own, with a time limit).

Each check runs pytest on a small test file in a subprocess, with mitk's own settings and a limit of a second.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

HUNG = '''
import ctypes
import time


def test_sleeps_past_its_limit():
    time.sleep(60)


def test_runs_after_it():
    pass


def test_holds_the_interpreter():
    """A deadlock in C that holds the GIL (as ProcessGroupGloo's destructor once did): the second lock of a
    normal mutex never returns, and no signal handler written in Python can run."""
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER on glibc
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)
'''

CONFTEST = f'''
import importlib.util

import pytest

spec = importlib.util.spec_from_file_location("mitk_tests_conftest", {str(ROOT / "tests" / "conftest.py")!r})
mitk_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mitk_conftest)
mitk_conftest.BACKSTOP_GRACE = 2.0
pytest_configure = mitk_conftest.pytest_configure
pytest_unconfigure = mitk_conftest.pytest_unconfigure
pytest_runtest_protocol = mitk_conftest.pytest_runtest_protocol
'''


def run_pytest(folder: Path, *tests: str) -> subprocess.CompletedProcess[str]:
    """pytest with mitk's settings (pyproject) on these tests of ``HUNG``, each limited to one second."""
    (folder / "test_hung.py").write_text(HUNG)
    (folder / "conftest.py").write_text(CONFTEST)
    environment = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                           str(folder), "-p", "no:cacheprovider", "-o", "timeout=1",
                           *(f"test_hung.py::{test}" for test in tests)],
                          capture_output=True, text=True, cwd=folder, env=environment, timeout=120)


def pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")))


def test_the_suite_has_a_time_limit() -> None:
    settings = pyproject()["tool"]["pytest"]["ini_options"]
    assert 0 < float(settings["timeout"]) <= 1800
    test_extra = pyproject()["project"]["optional-dependencies"]["test"]
    assert any(requirement.startswith("pytest-timeout") for requirement in test_extra)


def test_the_test_tools_are_bounded_and_this_environment_is_within_the_bounds() -> None:
    """A fresh install resolves the test tools within tested bounds; this environment is one of them."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    test_extra = pyproject()["project"]["optional-dependencies"]["test"]
    bounded = {requirement.name: requirement for requirement in map(Requirement, test_extra)
               if requirement.name in ("pytest", "pytest-timeout", "pytest-xdist", "import-linter")}
    assert sorted(bounded) == ["import-linter", "pytest", "pytest-timeout", "pytest-xdist"]
    for name, requirement in bounded.items():
        assert any(spec.operator == "<" for spec in requirement.specifier), name
        assert requirement.specifier.contains(version(name)), (name, version(name))


def test_a_test_past_its_limit_fails_named_and_the_run_goes_on(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "test_sleeps_past_its_limit", "test_runs_after_it")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED test_hung.py::test_sleeps_past_its_limit - Failed: Timeout" in done.stdout
    assert "1 failed, 1 passed" in done.stdout


def test_a_hang_that_holds_the_interpreter_ends_the_run_naming_the_test(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "test_holds_the_interpreter")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout (0:00:03)!" in done.stderr  # the backstop: the limit and its grace
    assert "in test_holds_the_interpreter" in done.stderr  # the test's frame in the stack


def test_no_test_makes_a_process_group_in_the_test_process() -> None:
    """``init_process_group`` only inside a script that a test runs in a subprocess (a string), never as a call
    of a test module."""
    calls = []
    for module in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                    "init_process_group", "new_group"):
                calls.append(f"{module.name}:{node.lineno}")
    assert calls == []


def test_ci_runs_the_readme_test_command_with_the_limits() -> None:
    """``.ci/run`` runs the README's test command as written; the limits come from pyproject and conftest, so a
    user who types the same command gets them too."""
    script = (ROOT / ".ci" / "run").read_text()
    assert 'bash -euo pipefail -c "$test_command"' in script
    assert 'export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:+$PYTEST_ADDOPTS }-v"' in script  # each test named as it starts
    assert script.index("export PYTEST_ADDOPTS") < script.index('bash -euo pipefail -c "$test_command"')
