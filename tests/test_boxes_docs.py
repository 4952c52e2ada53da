"""docs/evaluation.md § detections: every command of the block runs, on pyradiomics' real lung and brain
lesions (tests/data), and docs/cli.md has a row for each new command."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import invoke

ROOT = Path(__file__).resolve().parents[1]


def docs_commands(page: str, block: str) -> list[list[str]]:
    """The ``$ mitk …`` lines between ``<!-- docs-test: block -->`` and ``<!-- /docs-test -->`` of a docs page."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    section = text.split(f"<!-- docs-test: {block} -->", 1)[1].split("<!-- /docs-test -->", 1)[0]
    section = re.sub(r"\\\n\s*", "", section)  # a command continued on the next line
    return [shlex.split(line.strip()[2:])[1:] for line in re.findall(r"^\s*\$ mitk .*$", section, re.MULTILINE)]


def test_the_detection_evaluation_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder, kind in (("images", "image"), ("labels", "label")):
        (tmp_path / folder).mkdir()
        for case in ("lung1", "brain1"):
            shutil.copy(ROOT / "tests" / "data" / f"{case}_{kind}.nii.gz", tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    commands = docs_commands("evaluation.md", "detect-evaluate")
    assert [c[0] for c in commands] == ["boxes", "detect", "evaluate", "evaluate"]
    outputs = []
    for command in commands:
        code, stdout, stderr = invoke(command)
        assert code == 0, f"{command}: {stderr}"
        outputs.append(stdout)
    assert sorted(p.name for p in (tmp_path / "refs").iterdir()) == ["brain1_boxes.json", "lung1_boxes.json"]
    document = json.loads(outputs[2])
    assert [c["case"] for c in document["cases"]] == ["brain1", "lung1"]  # lung1_image ↔ lung1
    assert all(c["prediction"].endswith("_image_boxes.json") for c in document["cases"])
    assert document["reference_boxes"] == 3 and {c["space"] for c in document["cases"]} == {"RAS"}
    assert (tmp_path / "froc.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_page_lists_the_new_commands() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for command in ("`mitk boxes LABELS...", "`mitk evaluate detect --pred", "`mitk train TASK --config FILE"):
        assert command in text
    code, stdout, _ = invoke(["boxes", "--help"])
    assert code == 0 and "--min-voxels" in stdout
