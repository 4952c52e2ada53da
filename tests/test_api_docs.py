"""docs/python-api.md: every Python example runs, and the reference is the docstrings' current text.

``python tests/test_api_docs.py`` rewrites the reference section of the page (like ``cog -r``); the test fails
when the page differs from what that would write (like ``cog --check``).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python-api.md"
START, END = "<!-- api-reference:start -->", "<!-- api-reference:end -->"

REFERENCE_CLASSES = ("mitk.tasks.segment.result:SegmentationResult", "mitk.tasks.classify.result:ClassificationResult",
                     "mitk.tasks.detect.result:DetectionResult", "mitk.tasks.register.result:RegistrationResult",
                     "mitk.image:Image")
ERRORS = ("MitkError", "InputError", "GeometryError", "PluginError", "UsageError", "CheckpointError",
          "OutputExistsError", "MitkWarning")


def _signature(function: Any) -> str:
    """Parameters with their defaults, without annotations (they are in the source)."""
    parts = []
    star = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self":
            continue
        if parameter.kind is parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        star = star or parameter.kind is parameter.VAR_POSITIONAL
        default = "" if parameter.default is parameter.empty else f"={parameter.default!r}"
        parts.append(f"{prefix}{parameter.name}{default}")
    return f"({', '.join(parts)})"


def _doc(thing: Any) -> str:
    return inspect.getdoc(thing) or ""


def _entry(title: str, doc: str, level: str = "###") -> list[str]:
    return [f"{level} `{title}`", "", doc, ""] if doc else [f"{level} `{title}`", ""]


def _members(klass: type) -> list[tuple[str, Any]]:
    """Public methods and properties a user calls, own or from mitk mixins, in source order of the MRO."""
    seen: dict[str, Any] = {}
    for base in reversed(klass.__mro__):
        if not base.__module__.startswith("mitk"):
            continue
        for name, value in vars(base).items():
            if name.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                continue
            seen[name] = value
    return list(seen.items())


def render_reference() -> str:
    import mitk
    import mitk.errors
    from mitk.taskspecs import import_part, iter_tasks

    lines: list[str] = []
    lines += _entry(f"mitk.load{_signature(mitk.load)}", _doc(mitk.load))
    for spec in iter_tasks():
        helper = getattr(mitk, spec.name)
        lines += _entry(f"mitk.{spec.name}{_signature(helper)}", _doc(helper))
    lines += _entry(f"mitk.as_image{_signature(mitk.as_image)}", _doc(mitk.as_image))
    lines += _entry("mitk.Model", _doc(mitk.Model))
    for name, member in _members(mitk.Model):
        if isinstance(member, property):
            lines += _entry(f"Model.{name}", _doc(member), "####")
        else:
            lines += _entry(f"Model.{name}{_signature(member)}", _doc(member), "####")
    for reference in REFERENCE_CLASSES:
        klass = import_part(reference)
        lines += _entry(reference.replace(":", "."), _doc(klass))
        for name, member in _members(klass):
            title = f"{klass.__name__}.{name}" + ("" if isinstance(member, property) else _signature(member))
            lines += _entry(title, _doc(member), "####")
    lines += ["### `mitk.errors`", ""]
    for name in ERRORS:
        klass = getattr(mitk.errors, name)
        base = klass.__mro__[1].__name__
        lines += [f"- `{name}({base})`: {_doc(klass).splitlines()[0]}"]
    return "\n".join(lines).rstrip() + "\n"


def page_with_reference(page: str) -> str:
    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_reference()}{END}{tail}"


def test_reference_is_current() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert START in page and END in page
    assert page == page_with_reference(page), "the reference is stale: run `python tests/test_api_docs.py`"


def test_reference_names_every_task_call_and_result_method() -> None:
    from mitk.taskspecs import iter_tasks

    page = PAGE.read_text(encoding="utf-8")
    for spec in iter_tasks():
        assert f"`mitk.{spec.name}(*inputs" in page
        assert f"`Model.{spec.name}(*inputs" in page
    for method in ("save", "to_nifti", "to_sitk", "to_numpy"):
        assert f"`SegmentationResult.{method}(" in page


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_every_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   single_threaded_torch: None, capsys: pytest.CaptureFixture[str]) -> None:
    """The page's blocks, in order, in one namespace, in an empty folder with ``run/best.safetensors``."""
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config({"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0],
                                    "labels": {0: "background", 1: "brain"},
                                    "network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "best.safetensors", plugin.network(config).state_dict(), task="segment",
                    plugin="unet", plugin_version=None, config=config)
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"docs/python-api.md block {number}", "exec")
        exec(code, namespace)  # the repository's own documentation
    printed = capsys.readouterr().out
    assert "<mitk.Model segment plugin='unet'" in printed
    assert "an array has no geometry" in printed and "exists already" in printed
    assert len(list((tmp_path / "predictions").glob("*_seg.nii.gz"))) == len(list(
        (tmp_path / "sample" / "imagesTr").glob("*.nii.gz")))


if __name__ == "__main__":
    os.chdir(ROOT)
    PAGE.write_text(page_with_reference(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"wrote the reference of {PAGE.relative_to(ROOT)}\n")
