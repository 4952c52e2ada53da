"""docs/training.md § config files: the YAML shown is the file the command reads, and the command runs (flags over
the file: 1 epoch, not 5), with TensorBoard and MLflow logs written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import invoke
from test_boxes_docs import ROOT, docs_commands

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def test_the_config_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("nilearn", "yaml", "tensorboard", "mlflow"):
        pytest.importorskip(module)
    from mitk.sample import make_classification_sample

    make_classification_sample(tmp_path / "sample", cases=18, size=32, seed=2, dims=2)
    for item in (tmp_path / "sample").iterdir():
        shutil.move(str(item), tmp_path)
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("<!-- docs-test: training-config -->", 1)[1]
    (tmp_path / "train.yaml").write_text(re.search(r"```yaml\n(.*?)```", section, re.DOTALL)[1])
    monkeypatch.chdir(tmp_path)
    [command] = docs_commands("training.md", "training-config")
    code, _, stderr = invoke([*command, "--json"])
    assert code == 0, stderr
    rows = json.loads((tmp_path / "run" / "log.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1]
    assert any((tmp_path / "run" / "tensorboard").iterdir()) and (tmp_path / "run" / "mlruns").is_dir()
