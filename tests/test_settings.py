"""Closed, typed, described plugin settings: ``--set`` typos and wrong types are one-line usage errors, settings
a checkpoint saved with another plugin version only warn, and ``mitk plugins info`` shows every setting's line.

CLI commands run in this process through :func:`mitk.cli.main` (see ``tests/test_cli.py``); one subprocess test
checks how a warning prints.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_mitk
from helpers import invoke

from mitk.cli.common import parse_settings
from mitk.errors import CheckpointError, UsageError
from mitk.plugin_manager import get_registry
from mitk.settings import (
    SettingsWarning,
    check_overrides,
    check_saved_config,
    describe_settings,
    flat_settings,
)

pytestmark = pytest.mark.usefixtures("single_threaded_torch")

TINY_UNET = {"patch_size": [16, 16, 16], "spacing": None,
             "network": {"channels": [2, 4], "strides": [2], "num_res_units": 0}}
BUILT_IN = ("threshold", "unet", "segresnet", "swinunetr", "densenet121", "resnet", "blob", "retinanet",
            "affine", "deformable", "syn", "voxelmorph", "monai-bundle-segmentation", "monai-bundle-classes", "nnunet")


def plugin(name: str) -> Any:
    return get_registry().get(name).load()


def usage_error(name: str, overrides: dict[str, Any]) -> str:
    with pytest.raises(UsageError) as caught:
        check_overrides(plugin(name), overrides, name=name)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    return message


def one_line_error(code: int, stdout: str, stderr: str) -> str:
    """The error line of a command that must fail with a usage error (exit 2) before doing anything."""
    assert code == 2, stderr
    assert stdout == "" and "Traceback" not in stderr and "internal error" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def save_unet(path: Path, **extra: Any) -> Path:
    """A tiny unet checkpoint whose saved config carries ``extra`` keys besides the plugin's own."""
    from mitk.checkpoint import save_checkpoint

    unet = plugin("unet")
    config = unet.resolve_config(TINY_UNET)
    state = unet.network(config).state_dict()
    saved = json.loads(json.dumps(config))
    for key, value in extra.items():
        target = saved
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return save_checkpoint(path, state, task="segment", plugin="unet", plugin_version="0.0.1", config=saved)


@pytest.fixture(scope="module")
def unet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_unet(tmp_path_factory.mktemp("ckpt") / "unet.safetensors")


# -- check_overrides ------------------------------------------------------------------------------------


def test_unknown_key_names_the_close_match_and_the_known_keys() -> None:
    message = usage_error("threshold", {"threshhold": 300})
    assert "'threshhold'" in message and "did you mean 'threshold'?" in message
    assert "known settings: bins, labels, largest_component, threshold" in message
    nested = usage_error("unet", {"network": {"chanels": [1]}})
    assert "'network.chanels'" in nested and "did you mean 'network.channels'?" in nested
    assert "under 'network': channels, dropout, norm, num_res_units, strides" in nested
    # a nested key given at the top level is found by its name
    assert "did you mean 'network.dropout'?" in usage_error("unet", {"dropout": 0.1})
    assert "did you mean" not in usage_error("threshold", {"zzz": 1})


def test_wrong_types_name_the_setting_and_what_it_expects() -> None:
    assert usage_error("threshold", {"bins": "abc"}) == (
        "--set bins: plugin 'threshold' expects an integer (default 256), got \"abc\"")
    assert "expects true or false" in usage_error("threshold", {"largest_component": 1})
    assert "expects an integer" in usage_error("threshold", {"bins": True})  # a bool is not a number
    assert "expects an integer" in usage_error("threshold", {"bins": 2.5})
    assert "network.dropout: plugin 'unet' expects a number" in usage_error("unet", {"network": {"dropout": "x"}})
    assert "network: plugin 'unet' expects a mapping" in usage_error("unet", {"network": 5})
    assert "patch_size: plugin 'unet' expects a list or an integer" in usage_error("unet", {"patch_size": "big"})
    assert "metrics: plugin 'unet' expects a list" in usage_error("unet", {"metrics": "dice"})


def test_values_of_the_right_type_pass() -> None:
    unet, threshold = plugin("unet"), plugin("threshold")
    check_overrides(threshold, {"threshold": 300, "bins": 64, "largest_component": False})
    check_overrides(threshold, {"threshold": None})
    check_overrides(threshold, {"labels": {"1": "brain"}})  # open: label names are the user's
    check_overrides(unet, {"network": {"dropout": 0}})  # an integer is a number
    check_overrides(unet, {"sw_batch_size": 2, "patch_size": 64, "spacing": "keep", "orientation": None})
    check_overrides(unet, {"labels": ["background", "liver", "tumour"], "largest_component": [1]})
    check_overrides(unet, {"network": {"channels": [8, 16, 32], "strides": [2, 2]}})
    check_overrides(unet, {})
    check_overrides(unet, None)


def test_a_none_default_accepts_anything_and_schema_keys_below_unknown_parents_are_known() -> None:
    from mitk.tasks import TaskPlugin

    class Open(TaskPlugin):
        def default_config(self) -> dict[str, Any]:
            return {"anything": None, "stem": {"width": 4}}

        def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
            return {"extra.scale": (float, None)}

    check_overrides(Open(), {"anything": {"deep": [1]}, "extra": {"scale": 2}, "stem": {"width": 8}})
    with pytest.raises(UsageError, match=r"extra.scale: plugin Open expects a number or null"):
        check_overrides(Open(), {"extra": {"scale": "big"}})
    with pytest.raises(UsageError, match=r"has no setting 'stem.depth'"):
        check_overrides(Open(), {"stem": {"depth": 2}})


def test_labels_of_segmentation_and_detection_plugins_are_open() -> None:
    from mitk.tasks import DetectionPlugin, SegmentationPlugin

    class Segmenter(SegmentationPlugin):
        def default_config(self) -> dict[str, Any]:
            return {"labels": {0: "background", 1: "organ"}}

    class Detector(DetectionPlugin):
        def default_config(self) -> dict[str, Any]:
            return {"labels": {1: "nodule"}}

    for instance in (Segmenter(), Detector()):
        check_overrides(instance, {"labels": {"1": "liver", "2": "tumour"}})
        with pytest.raises(UsageError, match="expects a mapping"):
            check_overrides(instance, {"labels": "liver"})


def test_source_is_named() -> None:
    with pytest.raises(UsageError, match=r"^--labels: plugin 'unet' has no setting"):
        check_overrides(plugin("unet"), {"lables": {}}, source="--labels", name="unet")


# -- check_saved_config ---------------------------------------------------------------------------------


def test_saved_keys_unknown_to_this_version_warn_once_and_are_dropped() -> None:
    unet = plugin("unet")
    saved = {**unet.resolve_config(TINY_UNET), "retired": 1, "training": {"epochs": 3}}
    saved["network"] = {**saved["network"], "act": "prelu"}
    saved["labels"] = {"0": "background", "1": "liver", "2": "tumour"}
    with pytest.warns(SettingsWarning) as caught:
        kept = check_saved_config(unet, saved, source="old.safetensors", name="unet")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("old.safetensors: ") and "plugin 'unet'" in message
    assert message.endswith(": network.act, retired")
    assert "retired" not in kept and "act" not in kept["network"]
    assert kept["training"] == {"epochs": 3}  # the core's record of the training options
    assert kept["labels"] == saved["labels"]  # open
    assert kept["network"]["channels"] == [2, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_saved_config(unet, unet.default_config(), source="x") == unet.default_config()


# -- construction errors --------------------------------------------------------------------------------


def test_flat_settings() -> None:
    assert flat_settings({"network": {"channels": [1]}, "bins": 3}) == "network.channels=[1], bins=3"


def test_checkpoint_settings_that_do_not_build_are_the_checkpoints_error(tmp_path: Path) -> None:
    from mitk.runner.model import load_model

    path = save_unet(tmp_path / "broken.safetensors", **{"network.dropout": 2.0})
    with pytest.raises(CheckpointError, match="cannot use the checkpoint's settings: dropout probability") as caught:
        load_model("segment", None, path, device="cpu")
    assert str(path) in str(caught.value)


# -- through the command line ---------------------------------------------------------------------------


def test_cli_refuses_a_misspelt_key(anatomical_t1: Path, tmp_path: Path) -> None:
    output = tmp_path / "seg.nii.gz"
    line = one_line_error(*invoke(["segment", str(anatomical_t1), "--plugin", "threshold",
                                   "--set", "threshhold=300", "-o", str(output)]))
    assert "--set" in line and "'threshhold'" in line and "did you mean 'threshold'?" in line
    assert not output.exists()


def test_cli_refuses_a_misspelt_nested_key_with_a_checkpoint(anatomical_t1: Path, unet_checkpoint: Path,
                                                             tmp_path: Path) -> None:
    line = one_line_error(*invoke(["segment", str(anatomical_t1), "-w", str(unet_checkpoint),
                                   "--set", "network.chanels=[1]", "-d", str(tmp_path)]))
    assert "'network.chanels'" in line and "'network.channels'" in line
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_wrong_type(anatomical_t1: Path, tmp_path: Path) -> None:
    line = one_line_error(*invoke(["segment", str(anatomical_t1), "--plugin", "threshold",
                                   "--set", "bins=many", "-d", str(tmp_path)]))
    assert line == "mitk: error: --set bins: plugin 'threshold' expects an integer (default 256), got \"many\""


@pytest.mark.parametrize(("setting", "reason"), [
    ("network.dropout=2", "dropout probability has to be between 0 and 1"),  # torch's ValueError
    ("network.norm=\"bogus\"", "Unsupported option 'BOGUS'"),  # MONAI's ValueError
    ("network.channels=[1]", "one more entry than network.strides"),  # the plugin's PluginError
    ("overlap=2", "overlap must be at least 0 and below 1"),  # raised by the inferer, before any case runs
])
def test_cli_names_the_setting_a_constructor_refuses(anatomical_t1: Path, unet_checkpoint: Path, tmp_path: Path,
                                                     setting: str, reason: str) -> None:
    line = one_line_error(*invoke(["segment", str(anatomical_t1), "-w", str(unet_checkpoint),
                                   "--set", setting, "-d", str(tmp_path)]))
    key, value = setting.split("=", 1)
    assert f"plugin 'unet': settings not valid (--set {key}={json.dumps(json.loads(value))})" in line
    assert reason in line
    assert list(tmp_path.iterdir()) == []


def test_cli_runs_a_checkpoint_with_settings_of_another_version_and_warns(anatomical_t1: Path,
                                                                          tmp_path: Path) -> None:
    old = save_unet(tmp_path / "old.safetensors", retired_option=3, **{"network.act": "prelu"})
    output = tmp_path / "seg.nii.gz"
    code, _, stderr = invoke(["segment", str(anatomical_t1), "-w", str(old), "-o", str(output)])
    assert code == 0, stderr
    assert re.search(r"mitk: warning: .*old.safetensors: .*network.act, retired_option", stderr), stderr
    assert output.exists()
    from mitk.runner.model import load_model

    with pytest.warns(SettingsWarning, match=r"old.safetensors: .*network.act, retired_option"):
        load_model("segment", None, old, device="cpu")  # the library warns through `warnings`


def test_cli_prints_the_warning_as_one_line(anatomical_t1: Path, tmp_path: Path) -> None:
    old = save_unet(tmp_path / "old.safetensors", retired_option=3)
    output = tmp_path / "seg.nii.gz"
    result = run_mitk("--quiet", "segment", str(anatomical_t1), "-w", str(old), "-o", str(output))
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "retired_option" in line]
    assert warning == [f"mitk: warning: {old}: ignoring saved settings that the installed plugin 'unet' does "
                       "not know (saved by another version?): retired_option"]
    assert output.exists()


def test_plugins_info_lists_described_settings() -> None:
    code, stdout, _ = invoke(["plugins", "info", "unet"])
    assert code == 0
    lines = stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("settings")))
    assert "--set KEY=VALUE" in lines[header] and lines[header + 1].split() == ["setting", "default", "description"]
    rows = {line.split()[0]: line for line in lines[header + 2:]}
    assert "[16, 32, 64, 128, 256]" in rows["network.channels"] and "one more entry than strides" in rows[
        "network.channels"]
    assert "sliding-window overlap" in rows["overlap"]
    code, stdout, _ = invoke(["plugins", "info", "unet", "--json"])
    settings = {row["key"]: row for row in json.loads(stdout)["settings"]}
    assert settings["network.channels"]["default"] == [16, 32, 64, 128, 256]
    assert settings["sw_batch_size"]["type"] == "an integer or text"
    assert all(row["help"] for row in settings.values())


# -- every built-in setting is described -----------------------------------------------------------------


def example_blobs(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "mitk-example-blobs" / "src"))
    from mitk_example_blobs._detector import BlobDetector

    return BlobDetector()


@pytest.mark.parametrize("name", [*BUILT_IN, "blobs (example)"])
def test_every_setting_has_one_line_of_help(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = example_blobs(monkeypatch) if name.startswith("blobs") else plugin(name)
    rows = describe_settings(instance)
    undescribed = [row["key"] for row in rows if not row["help"]]
    assert undescribed == [], f"{name}: describe these settings in settings_help(): {undescribed}"
    stale = sorted(set(instance.settings_help()) - {row["key"] for row in rows})
    assert stale == [], f"{name}: settings_help() describes settings that do not exist: {stale}"
    assert all("\n" not in row["help"] and len(row["help"]) <= 110 for row in rows)
    check_overrides(instance, instance.default_config())  # the defaults pass their own check


def test_all_built_in_plugins_are_covered() -> None:
    assert {entry.name for entry in get_registry() if entry.distribution == "mitk"} == set(BUILT_IN)


# -- parse_settings -------------------------------------------------------------------------------------


def test_parse_settings_refuses_conflicting_and_empty_keys() -> None:
    assert parse_settings(["a.b=1", "a.c=[1, 2]", "x=text"]) == {"a": {"b": 1, "c": [1, 2]}, "x": "text"}
    with pytest.raises(UsageError, match=r"^--set a.b=2: a was set to a value already"):
        parse_settings(["a=1", "a.b=2"])
    for pair in ("a..b=1", "a.=1", ".a=1"):
        with pytest.raises(UsageError, match="empty part"):
            parse_settings([pair])
