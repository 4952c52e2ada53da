"""docs/calibration.md: every command of the page runs as written, in order, on staged files (an ensemble's
classification record, segmentations with probability maps, a folds run folder)."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
from helpers import invoke
from test_calibration import _cases
from test_calibration_segment import BRAIN, LUNG, _case
from test_crossval import _write_run

from mitk.runner.ensemble import entropy

PAGE = Path(__file__).resolve().parents[1] / "docs" / "calibration.md"
BLOCK = "calibration-page"
"""The label of the page's ``<!-- docs-test: … -->`` block that this test runs."""


def commands() -> list[str]:
    block = re.search(rf"<!-- docs-test: {BLOCK} -->(.*?)<!-- /docs-test -->", PAGE.read_text(), re.S)
    assert block is not None
    return [line[2:] for line in block.group(1).splitlines() if line.startswith("$ mitk ")]


def stage(folder: Path) -> None:
    probs, truth = _cases(n=40, classes=3, seed=5)
    names = ["normal", "fracture", "tumour"]
    cases = [{"input": str(folder / "scans" / f"c{i}.nii.gz"), "status": "ok", "predicted": names[int(p.argmax())],
              "probabilities": dict(zip(names, map(float, p), strict=True)),
              "uncertainty": {"predictive_entropy": float(entropy(p)), "mutual_information": 0.01, "passes": 10}}
             for i, p in enumerate(probs)]
    (folder / "preds.json").write_text(json.dumps({"cases": cases}))
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        writer.writerows((f"scans/c{i}.nii.gz", names[t]) for i, t in enumerate(truth))
    (folder / "pred").mkdir()
    (folder / "labels").mkdir()
    data = Path(__file__).parent / "data"
    for name, source, crop, shift in (("brain", "brain1", BRAIN, 0), ("lung", "lung1", LUNG, 0),
                                      ("brain_moved", "brain1", BRAIN, 2)):
        _case(data / f"{source}_label.nii.gz", crop, shift, 1.5, (folder / "pred", folder / "labels"), name)
    _write_run(folder / "run")


def test_every_command_of_the_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage(tmp_path)
    monkeypatch.chdir(tmp_path)
    lines = commands()
    assert len(lines) == 6
    for line in lines:
        words = shlex.split(line)[1:]
        target = None
        if ">" in words:
            target = Path(words[words.index(">") + 1])
            words = words[: words.index(">")]
        code, stdout, stderr = invoke(words)
        assert code == 0, f"{line}: {stderr}"
        if target is not None:
            target.write_text(stdout)
    assert Path("reliability.png").stat().st_size > 1000
    assert json.loads(Path("scores.json").read_text())["calibration"]["uncertainty"] == "predictive_entropy"
    assert json.loads(Path("cv.json").read_text())["summary"]["mean_dice"]["folds"] == 3
    assert Path("cv.csv").read_text().startswith("fold,metric,value")
