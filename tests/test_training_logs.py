"""Training logs where people look (TensorBoard, MLflow, beside log.csv) and ``mitk train --config FILE`` with
flags and ``--set`` taking precedence over the file."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from helpers import invoke

from mitk.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nilearn")
    from mitk.sample import make_classification_sample

    folder = tmp_path_factory.mktemp("sample")
    make_classification_sample(folder, cases=24, size=32, seed=0, dims=2)
    return folder


def test_config_file_flags_and_loggers(sample: Path, tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    config = sample / "train.yaml"
    config.write_text("plugin: densenet121\ndata: train.csv\nepochs: 5\nbatch-size: 8\nlr: 3.0e-3\n"
                      "log: [tensorboard, mlflow]\n"
                      "set:\n  image_size: [32, 32]\n  network:\n    block_config: [2, 2]\n    init_features: 8\n"
                      "    growth_rate: 4\n")
    run = tmp_path / "run"
    code, stdout, stderr = invoke(["train", "classify", "--config", str(config), "-d", str(run), "--epochs", "2",
                                   "--set", "network.growth_rate=8", "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["epochs_run"] == 2  # the flag over the file's 5
    settings = load_checkpoint(run / "best.safetensors").config
    assert settings["network"]["growth_rate"] == 8 and settings["network"]["init_features"] == 8  # --set merged in
    assert settings["image_size"] == [32, 32] and settings["optimizer"]["lr"] == pytest.approx(3e-3)
    with (run / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["loss"]) for r in rows]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-5)
    assert "val/mean_auc" in events.Tags()["scalars"]

    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("mitk")
    assert experiment is not None
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2] and [m.value for m in history] == pytest.approx(losses, rel=1e-5)
    assert found.data.params["options.epochs"] == "2" and found.data.params["plugin"] == "densenet121"
    assert [float(r["val_mean_auc"]) for r in rows] == pytest.approx(
        [m.value for m in client.get_metric_history(found.info.run_id, "val_mean_auc")])


def test_a_plain_install_names_the_extra(sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module, extra in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        code, _, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data",
                                  str(sample / "train.csv"), "-d", str(tmp_path / module), "--log", module])
        assert code == 2 and f'pip install "mitk[{extra}]"' in stderr and len(stderr.strip().splitlines()) == 1
        assert not (tmp_path / module).exists()
    monkeypatch.setitem(sys.modules, "yaml", None)
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\n")
    code, _, stderr = invoke(["train", "classify", "--config", str(config), "-d", str(tmp_path / "run")])
    assert code == 2 and 'pip install "mitk[yaml]"' in stderr


@pytest.mark.parametrize(("text", "message"), [
    ('{"epochs": 2, "batchsize": 4}', "did you mean 'batch_size'"),
    ('{"epochs": "two"}', "epochs must be int"),
    ('[1, 2]', "expected a mapping"),
    ('{"epochs": 2,', "not JSON"),
    ('{"log": "wandb"}', "log takes tensorboard and/or mlflow, not 'wandb'"),
])
def test_config_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "train.json"
    config.write_text(text)
    code, _, stderr = invoke(["train", "classify", "--config", str(config), "-d", str(tmp_path / "run")])
    assert code == 2 and message in stderr and "train.json" in stderr and "Traceback" not in stderr
