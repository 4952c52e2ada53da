"""docs/classification.md § data: the ImageFolder command runs on real MNI152 slices laid out as
``xray/train/<class>/`` and ``xray/val/<class>/``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import invoke
from test_boxes_docs import docs_commands

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def test_the_image_folder_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    sample = tmp_path / "sample"
    make_classification_sample(sample, cases=18, size=32, seed=1, dims=2)
    with (sample / "train.csv").open() as handle:
        for row in csv.DictReader(handle):
            side = "train" if row["split"] == "training" else "val"
            target = tmp_path / "xray" / side / row["label"] / Path(row["image"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample / row["image"], target)
    monkeypatch.chdir(tmp_path)
    [command] = docs_commands("classification.md", "image-folder")
    code, _, stderr = invoke(command)
    assert code == 0, stderr
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert not split["held_out"] and all("/xray/val/" in c["image"] for c in split["validation"])
