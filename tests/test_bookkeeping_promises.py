"""Issue 20, item 5: bookkeeping the docs promise (the Dask interrupt is in test_dask_interrupt_records.py).

``mitk manifest merge`` refuses an empty manifest and headers that contradict themselves; a malformed
``MITK_MAX_IMAGE_BYTES`` is a usage error before a batch starts; the Python API's errors name its keywords, not
the command line's flags; ``mitk train classify`` refuses a segmentation data set; a checkpoint whose labels do
not match its network's output channels is refused at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from mitk.errors import CheckpointError, MitkError, OutputExistsError, PluginError, UsageError


def header(shard: int, shards: int, *inputs: str, total: int) -> dict[str, Any]:
    return {"mitk_manifest": 1, "task": "segment", "shard": shard, "shards": shards, "by": "hash", "total": total,
            "inputs": list(inputs)}


def record(name: str, shard: int) -> dict[str, Any]:
    return {"input": name, "output": f"{name}_seg.nii.gz", "status": "ok", "error": None, "seconds": 0.1,
            "shard": shard}


def manifest(path: Path, *lines: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def merge(*paths: Path) -> tuple[int, str, str]:
    return invoke(["manifest", "merge", *map(str, paths), "--json"])


def test_merge_refuses_an_empty_manifest(tmp_path: Path) -> None:
    good = manifest(tmp_path / "0.jsonl", header(0, 2, "a", total=2), record("a", 0))
    for content in ("", "\n\n"):
        empty = tmp_path / "1.jsonl"
        empty.write_text(content)
        code, stdout, stderr = merge(good, empty)
        assert code == 1 and stdout == ""
        assert stderr == f"mitk: error: {empty}: empty manifest (no header and no records)\n"


@pytest.mark.parametrize(("line", "problem"), [
    (header(7, 4, "a", total=1), "shard 7 of 4 (shards count from 0 to 3)"),
    (header(-1, 4, "a", total=1), "shard -1 of 4 (shards count from 0 to 3)"),
    (header(0, 0, "a", total=1), "0 shards (a split has at least 1)"),
    (header(0, 2, "a", "b", "c", total=2), "a total of 2 inputs, but it lists 3"),
    ({"mitk_manifest": 1, "task": "segment", "shards": 2, "by": "hash", "merged": [0, 5], "total": 1,
      "inputs": ["a"]}, "merged shard 5 of 2"),
])
def test_merge_refuses_a_header_that_contradicts_itself(tmp_path: Path, line: dict[str, Any],
                                                        problem: str) -> None:
    bad = manifest(tmp_path / "bad.jsonl", line, record("a", 0))
    code, stdout, stderr = merge(bad)
    assert code == 1 and stdout == ""
    assert stderr == f"mitk: error: {bad}: line 1: the header contradicts itself ({problem})\n"


def test_merge_refuses_totals_that_do_not_match(tmp_path: Path) -> None:
    first = manifest(tmp_path / "0.jsonl", header(0, 2, "a", total=2), record("a", 0))
    other = manifest(tmp_path / "1.jsonl", header(1, 2, "b", total=3), record("b", 1))
    code, _, stderr = merge(first, other)
    assert code == 2 and stderr == ("mitk: error: these manifests disagree on the batch's total (2 and 3 inputs): "
                                    "they are not the shards of one split; merge one split at a time\n")
    short = manifest(tmp_path / "2.jsonl", header(1, 2, total=2))  # both shards ran: together they list 1 of 2
    code, _, stderr = merge(first, short)
    assert code == 2 and stderr == "mitk: error: the shards' headers give a total of 2 inputs but together list 1\n"
    complete = manifest(tmp_path / "3.jsonl", header(1, 2, "b", total=2), record("b", 1))
    code, stdout, stderr = merge(first, complete)
    assert code == 0 and json.loads(stdout)["complete"], stderr


@pytest.mark.parametrize("variable", ["MITK_MAX_IMAGE_BYTES", "MITK_MAX_ZIP_BYTES"])
def test_a_malformed_size_limit_is_a_usage_error_before_the_batch(variable: str, brain_mr: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "lots")
    out, manifest_path = tmp_path / "out", tmp_path / "m.jsonl"
    code, stdout, stderr = invoke(["segment", str(brain_mr), "-p", "threshold", "-d", str(out),
                                   "--manifest", str(manifest_path), "--json"])
    assert code == 2 and stdout == ""
    assert stderr == f"mitk: error: {variable}='lots' is not a size in bytes (e.g. 512M, 32G)\n"
    assert not out.exists() and not manifest_path.exists()


def test_the_python_api_errors_name_keywords_not_flags(brain_mr: Path, tmp_path: Path) -> None:
    import mitk

    def message(**arguments: Any) -> str:
        with pytest.raises(MitkError) as caught:
            mitk.load(**arguments)
        return str(caught.value)

    cases = {
        "needs weights": (message(plugin="unet"), "plugin 'unet' needs trained weights: give weights=PATH"),
        "bad setting": (message(plugin="threshold", settings={"bins": "many"}), "settings= bins:"),
        "bad device": (message(plugin="threshold", device="meta"), "device 'meta' cannot run a model"),
    }
    for name, (text, expected) in cases.items():
        assert expected in text, (name, text)
        assert "--" not in text.replace("`mitk train segment --plugin unet`", ""), (name, text)
    with pytest.raises(PluginError):
        mitk.load("unet")
    result = mitk.load("threshold").segment(brain_mr)
    result.save(tmp_path / "seg.nii.gz")
    with pytest.raises(OutputExistsError, match=r"\(pass overwrite=True to replace it\)$"):
        result.save(tmp_path / "seg.nii.gz")
    code, _, stderr = invoke(["segment", "x.nii.gz", "-p", "unet", "-d", str(tmp_path / "out")])  # the CLI's words
    assert code == 1 and "give --weights FILE" in stderr


def test_train_classify_refuses_a_segmentation_data_set(tmp_path: Path) -> None:
    code, _, stderr = invoke(["sample", "segment", "-d", str(tmp_path / "seg"), "--cases", "3", "--size", "16"])
    assert code == 0, stderr
    datalist = tmp_path / "seg" / "dataset.json"
    pairs = tmp_path / "seg" / "pairs.csv"
    pairs.write_text("image,label\nimagesTr/case_000.nii.gz,labelsTr/case_000.nii.gz\n"
                     "imagesTr/case_001.nii.gz,labelsTr/case_001.nii.gz\n")
    for data, where, label in ((datalist, "training[0]", "./labelsTr/case_000.nii.gz"),
                               (pairs, "line 2", "labelsTr/case_000.nii.gz")):
        run = tmp_path / f"run-{data.suffix[1:]}"
        code, stdout, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data", str(data),
                                       "--epochs", "1", "-d", str(run)])
        assert code == 1 and stdout == ""
        assert stderr.splitlines()[0] == (
            f"mitk: error: {data}: {where}: the label {label!r} is a file, not a class name: this looks like a "
            "segmentation data set (image and label-map pairs); classification needs a class name per image (train "
            "segmentation with `mitk train segment`)")
        assert "Traceback" not in stderr
        assert not run.exists()


def test_a_checkpoint_whose_labels_do_not_match_its_outputs_is_refused(brain_mr: Path, tmp_path: Path) -> None:
    """A U-Net trained for background + foreground, with a third label written into its settings."""
    import mitk
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(None, None)
    state = plugin.network(config).state_dict()
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_checkpoint(good, state, task="segment", plugin="unet", plugin_version=None, config=config)
    save_checkpoint(bad, state, task="segment", plugin="unet", plugin_version=None,
                    config={**config, "labels": {"0": "background", "1": "liver", "2": "tumour"}})
    assert mitk.load(weights=good).plugin == "unet"
    with pytest.raises(CheckpointError, match=r"settings name 3 labels/classes but its weights have 2 output"):
        mitk.load(weights=bad)
    code, stdout, stderr = invoke(["segment", str(brain_mr), "--weights", str(bad), "-d", str(tmp_path / "out")])
    assert code == 1 and stdout == "" and not (tmp_path / "out").exists()
    assert stderr.startswith(f"mitk: error: {bad}: the checkpoint's settings name 3 labels/classes but its "
                             "weights have 2 output channels (")


def test_settings_errors_from_the_api_are_usage_errors() -> None:
    import mitk

    with pytest.raises(UsageError, match=r"^settings= bins: plugin 'threshold' expects an integer"):
        mitk.load("threshold", settings={"bins": "many"})


def test_dicom_errors_from_the_api_name_the_keyword_too() -> None:
    """A folder of several series (pydicom's MR700 projections): the message names ``series=`` beside the
    command line's ``--series``."""
    from pydicom import data as pydicom_data

    import mitk

    folder = Path(pydicom_data.__file__).parent / "test_files" / "dicomdirtests" / "98892003" / "MR700"
    with pytest.raises(UsageError, match=r"^.*7 series found .*choose one with --series INDEX\|UID \(series= in "
                                         r"Python\): "):
        mitk.load("threshold").segment(folder)
