"""The batch contract of the task verbs, with ``mitk segment --plugin threshold`` and the example detector.

Many inputs (files, folders, globs), the model loaded once, one bad input never stops the others, exit codes
0/1/2/3, no overwriting without ``--overwrite``, never over an input, atomic writes, predictable names, and
machine-readable reports (``--json`` on stdout, ``--manifest`` JSON lines).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke, load

from mitk import hookimpl

ROOT = Path(__file__).resolve().parents[1]
BLOBS_SOURCE = ROOT / "plugins" / "mitk-example-blobs" / "src"
RECORD_KEYS = {"input", "output", "status", "error", "seconds"}


pytestmark = pytest.mark.usefixtures("single_threaded_torch")


CUBES = [(slice(5, 9), slice(10, 14), slice(8, 12)), (slice(20, 23), slice(25, 30), slice(15, 18))]
"""Bright cubes planted into the T1 for the detector, in voxel indices."""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, anatomical_t1: Path) -> Path:
    """A folder of real T1 volumes (.nii and .nii.gz, one reoriented, two with planted cubes) and a corrupt one."""
    root = tmp_path_factory.mktemp("library")
    t1 = load(anatomical_t1)
    data = np.asarray(t1.dataobj).astype(np.int16)
    nib.save(nib.Nifti1Image(data, t1.affine), root / "alpha.nii.gz")
    flipped = t1.affine @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1]), flipped), root / "beta.nii")
    planted = data.astype(np.float32)
    for cube in CUBES:
        planted[cube] = 4.0 * float(data.max())
    nib.save(nib.Nifti1Image(planted, t1.affine), root / "gamma.nii.gz")
    raw = (root / "gamma.nii.gz").read_bytes()
    (root / "corrupt.nii.gz").write_bytes(raw[: len(raw) // 2])
    return root


def copy_in(library: Path, directory: Path, *names: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(library / name, directory / name)) for name in names]


def segment(*args: Any) -> tuple[int, str, str]:
    return invoke(["segment", "--plugin", "threshold", *map(str, args)])


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -------------------------------------------------------------------------------------------------
# Inputs and names
# -------------------------------------------------------------------------------------------------


def test_files_folder_and_glob_with_predictable_names(library: Path, tmp_path: Path) -> None:
    single = copy_in(library, tmp_path / "one", "alpha.nii.gz")[0]
    copy_in(library, tmp_path / "folder", "beta.nii", "gamma.nii.gz")
    copy_in(library, tmp_path / "globbed", "alpha.nii.gz", "beta.nii")
    out = tmp_path / "out"
    code, stdout, stderr = segment(single, tmp_path / "folder", tmp_path / "globbed" / "b*.nii", single,
                                   "--output-dir", out, "--json")
    assert code == 3, stderr
    document = json.loads(stdout)
    inputs = [Path(r["input"]) for r in document["cases"]]
    assert inputs == [single, tmp_path / "folder" / "beta.nii", tmp_path / "folder" / "gamma.nii.gz",
                      tmp_path / "globbed" / "beta.nii"]  # the repeated file counts once
    # Two inputs named beta.* map to one output name: the second fails (also under --overwrite), naming the first.
    assert [r["status"] for r in document["cases"]] == ["ok", "ok", "ok", "failed"]
    assert "same output" in document["cases"][3]["error"]
    assert files_in(out) == ["alpha_seg.nii.gz", "beta_seg.nii.gz", "gamma_seg.nii.gz"]
    for record in document["cases"][:3]:
        assert set(record) >= RECORD_KEYS and record["error"] is None and record["seconds"] >= 0
        assert Path(record["output"]) == out / f"{Path(record['input']).name.split('.')[0]}_seg.nii.gz"


def test_outputs_default_to_beside_each_input(library: Path, tmp_path: Path) -> None:
    alpha, beta = copy_in(library, tmp_path, "alpha.nii.gz", "beta.nii")
    code, _, stderr = segment(alpha, beta)
    assert code == 0, stderr
    assert files_in(tmp_path) == ["alpha.nii.gz", "alpha_seg.nii.gz", "beta.nii", "beta_seg.nii.gz"]
    label_map = load(tmp_path / "beta_seg.nii.gz")
    assert np.allclose(label_map.affine, load(beta).affine)


# -------------------------------------------------------------------------------------------------
# The model is loaded once
# -------------------------------------------------------------------------------------------------


@pytest.fixture
def counting_plugin(mitk_plugins: Callable[..., Any]) -> dict[str, int]:
    """Register ``counting``, a threshold segmenter that counts how often it is built and run."""
    from mitk_builtin._threshold import ThresholdSegmenter

    counts = {"built": 0, "networks": 0, "forwards": 0}

    class CountingSegmenter(ThresholdSegmenter):
        needs_torch = True  # its network is what the test holds, breaks or counts

        def __init__(self) -> None:
            counts["built"] += 1

        def network(self, config: dict[str, Any]) -> Any:
            counts["networks"] += 1
            network = super().network(config)
            forward = network.forward

            def counted(image: Any) -> Any:
                counts["forwards"] += 1
                return forward(image)

            network.forward = counted
            return network

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register("counting", task="segment", factory=CountingSegmenter)

    mitk_plugins(Plugin())
    return counts


def test_model_is_built_once_for_many_inputs(library: Path, tmp_path: Path, counting_plugin: dict[str, int]
                                             ) -> None:
    inputs = copy_in(library, tmp_path / "in", "alpha.nii.gz", "beta.nii", "corrupt.nii.gz", "gamma.nii.gz")
    code, _, stderr = invoke(["segment", "--plugin", "counting", str(tmp_path / "in"), "-d", str(tmp_path / "out")])
    assert code == 3, stderr
    assert counting_plugin == {"built": 1, "networks": 1, "forwards": 3}
    assert len(inputs) == 4


# -------------------------------------------------------------------------------------------------
# Failures and exit codes
# -------------------------------------------------------------------------------------------------


def test_one_bad_input_never_stops_the_others(library: Path, tmp_path: Path) -> None:
    alpha, corrupt, gamma = copy_in(library, tmp_path / "in", "alpha.nii.gz", "corrupt.nii.gz", "gamma.nii.gz")
    missing = tmp_path / "in" / "missing.nii.gz"
    code, stdout, stderr = segment(alpha, corrupt, missing, gamma, "-d", tmp_path / "out", "--json")
    assert code == 3, stderr
    records = json.loads(stdout)["cases"]
    assert [r["status"] for r in records] == ["ok", "failed", "failed", "ok"]
    assert str(corrupt) in records[1]["error"] and str(missing) in records[2]["error"]
    assert files_in(tmp_path / "out") == ["alpha_seg.nii.gz", "gamma_seg.nii.gz"]
    assert json.loads(stdout)["summary"] == {"total": 4, "ok": 2, "skipped": 0, "failed": 2}


def test_exit_codes(library: Path, tmp_path: Path) -> None:
    alpha, corrupt = copy_in(library, tmp_path, "alpha.nii.gz", "corrupt.nii.gz")
    assert segment(alpha, "-d", tmp_path / "ok")[0] == 0
    assert segment(corrupt, "-d", tmp_path / "bad")[0] == 1
    assert segment(alpha, corrupt, "-d", tmp_path / "some")[0] == 3
    assert segment(alpha, corrupt, "-o", tmp_path / "x.nii.gz")[0] == 2
    assert segment(alpha, "--no-such-option")[0] == 2
    assert files_in(tmp_path) == ["alpha.nii.gz", "corrupt.nii.gz", "ok", "some"]


# -------------------------------------------------------------------------------------------------
# Existing outputs and inputs are never overwritten by accident
# -------------------------------------------------------------------------------------------------


def test_two_inputs_with_one_name_never_share_an_output(library: Path, tmp_path: Path) -> None:
    [first] = copy_in(library, tmp_path / "a", "alpha.nii.gz")
    [second] = copy_in(library, tmp_path / "b", "alpha.nii.gz")
    out = tmp_path / "out"
    code, stdout, _ = segment(first, second, "-d", out, "--overwrite", "--json")
    assert code == 3
    records = json.loads(stdout)["cases"]
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert str(first) in records[1]["error"] and "--output-dir" in records[1]["error"]
    assert files_in(out) == ["alpha_seg.nii.gz"]


def test_unwritable_manifest_is_a_usage_error_before_any_work(library: Path, tmp_path: Path) -> None:
    [alpha] = copy_in(library, tmp_path / "in", "alpha.nii.gz")
    manifest = tmp_path / "no" / "such" / "folder" / "runs.jsonl"
    code, stdout, stderr = segment(alpha, "-d", tmp_path / "out", "--manifest", manifest)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "manifest" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(library: Path, tmp_path: Path) -> None:
    alpha, beta = copy_in(library, tmp_path / "in", "alpha.nii.gz", "beta.nii")
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "alpha_seg.nii.gz"
    existing.write_bytes(b"a label map someone edited by hand")

    code, stdout, stderr = segment(alpha, beta, "-d", out, "--json")
    assert code == 3, stderr
    first = json.loads(stdout)["cases"][0]
    assert first["status"] == "failed" and "--overwrite" in first["error"] and first["output"] == str(existing)
    assert existing.read_bytes() == b"a label map someone edited by hand"

    (out / "beta_seg.nii.gz").unlink()
    code, stdout, _ = segment(alpha, beta, "-d", out, "--skip-existing", "--json")
    assert code == 0
    assert [r["status"] for r in json.loads(stdout)["cases"]] == ["skipped", "ok"]
    assert existing.read_bytes() == b"a label map someone edited by hand"

    code, _, stderr = segment(alpha, "-d", out, "--overwrite")
    assert code == 0, stderr
    assert load(existing).shape == load(alpha).shape


def test_a_case_writes_all_its_files_or_none(library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (alpha,) = copy_in(library, tmp_path / "in", "alpha.nii.gz")
    out = tmp_path / "out"

    def broken_preview(*args: Any) -> None:
        raise RuntimeError("preview renderer crashed")

    monkeypatch.setattr("mitk.preview.save_overlay_png", broken_preview)
    code, _, stderr = segment(alpha, "-d", out, "--stats", "--preview")
    assert code == 1 and "preview renderer crashed" in stderr
    assert not out.exists() or files_in(out) == []  # neither the label map nor the stats were left behind


def test_existing_companion_is_refused_before_any_work(library: Path, tmp_path: Path) -> None:
    (alpha,) = copy_in(library, tmp_path / "in", "alpha.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    stats = out / "alpha_seg_stats.csv"
    stats.write_text("kept")
    code, stdout, _ = segment(alpha, "-d", out, "--stats", "--json")
    assert code == 1
    assert "--overwrite" in json.loads(stdout)["cases"][0]["error"]
    assert files_in(out) == ["alpha_seg_stats.csv"] and stats.read_text() == "kept"
    # Companions are committed before the label map: without it the case was interrupted, and --skip-existing
    # (like --overwrite) redoes the whole case.
    for flags in (["--overwrite"], ["--skip-existing"]):
        stats.write_text("kept")
        (out / "alpha_seg.nii.gz").unlink(missing_ok=True)
        code, _, stderr = segment(alpha, "-d", out, "--stats", *flags)
        assert code == 0, stderr
        assert files_in(out) == ["alpha_seg.nii.gz", "alpha_seg_stats.csv"] and stats.read_text() != "kept"


def test_never_writes_over_an_input(library: Path, tmp_path: Path) -> None:
    alpha = copy_in(library, tmp_path, "alpha.nii.gz")[0]
    before = alpha.read_bytes()
    code, _, stderr = segment(alpha, "-o", alpha, "--overwrite")
    assert code == 1 and "input" in stderr
    code, _, stderr = segment(alpha, "-o", tmp_path / "." / "alpha.nii.gz", "--overwrite")
    assert code == 1
    assert alpha.read_bytes() == before
    assert files_in(tmp_path) == ["alpha.nii.gz"]


# -------------------------------------------------------------------------------------------------
# Atomic writes
# -------------------------------------------------------------------------------------------------


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    from mitk.errors import OutputExistsError
    from mitk.io.atomic import atomic_path

    target = tmp_path / "result.nii.gz"
    for failure in (OSError("No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(failure)), atomic_path(target) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".nii.gz")
            temporary.write_bytes(b"half a volume")
            raise failure
        assert files_in(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError), atomic_path(target) as temporary:
        pass
    with pytest.raises(KeyboardInterrupt), atomic_path(target, overwrite=True) as temporary:
        temporary.write_bytes(b"new but unfinished")
        raise KeyboardInterrupt
    assert files_in(tmp_path) == ["result.nii.gz"] and target.read_bytes() == b"old"
    with atomic_path(target, overwrite=True) as temporary:
        temporary.write_bytes(b"new")
    assert files_in(tmp_path) == ["result.nii.gz"] and target.read_bytes() == b"new"


def _ctrl_c(message: object = None) -> BaseException:
    """What a Ctrl-C raises inside a batch: mitk's SIGINT handler turns it into ``Interrupted``."""
    import signal

    from mitk.runner.batch import Interrupted

    return Interrupted(signal.SIGINT)


@pytest.mark.parametrize("failure", [_ctrl_c, OSError])
def test_interrupted_write_leaves_no_partial_output(library: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, failure: type) -> None:
    import mitk.io.nifti

    alpha, beta = copy_in(library, tmp_path / "in", "alpha.nii.gz", "beta.nii")
    out = tmp_path / "out"
    out.mkdir()
    (out / "alpha_seg.nii.gz").write_bytes(b"previous result")
    real_write = mitk.io.nifti.write_nifti

    def write_then_fail(array: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        real_write(array, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # half-written
        raise failure("disk full" if failure is OSError else None)  # type: ignore[misc]

    monkeypatch.setattr(mitk.io.nifti, "write_nifti", write_then_fail)
    code, _, stderr = segment(alpha, beta, "-d", out, "--overwrite")
    assert code == (130 if failure is _ctrl_c else 1), stderr
    assert files_in(out) == ["alpha_seg.nii.gz"]
    assert (out / "alpha_seg.nii.gz").read_bytes() == b"previous result"


# -------------------------------------------------------------------------------------------------
# Reports for scripts
# -------------------------------------------------------------------------------------------------


def test_json_on_stdout_and_manifest_lines(library: Path, tmp_path: Path) -> None:
    alpha, corrupt, beta = copy_in(library, tmp_path / "in", "alpha.nii.gz", "corrupt.nii.gz", "beta.nii")
    manifest = tmp_path / "runs.jsonl"
    code, stdout, stderr = segment(alpha, corrupt, beta, "-d", tmp_path / "out", "--json", "--manifest", manifest)
    assert code == 3
    document = json.loads(stdout)  # the whole of stdout is one JSON document
    assert document["task"] == "segment" and document["plugin"] == "threshold" and document["exit_code"] == 3
    assert [r["input"] for r in document["cases"]] == [str(alpha), str(corrupt), str(beta)]
    assert all(set(r) >= RECORD_KEYS for r in document["cases"])
    assert document["cases"][0]["labels"][0]["volume_ml"] > 0
    assert "ok" in stderr and "failed" in stderr and "{" not in stderr

    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["ok", "failed", "ok"]
    assert all(set(r) >= RECORD_KEYS for r in lines)
    code, _, _ = segment(alpha, "-d", tmp_path / "out", "--skip-existing", "--manifest", manifest)
    assert code == 0
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == 4 and lines[-1]["status"] == "skipped"


# -------------------------------------------------------------------------------------------------
# The same contract for `mitk detect` with the example plugin (registered in-process)
# -------------------------------------------------------------------------------------------------


@pytest.fixture
def blobs_plugin(monkeypatch: pytest.MonkeyPatch, mitk_plugins: Callable[..., Any]) -> None:
    monkeypatch.syspath_prepend(str(BLOBS_SOURCE))
    import mitk_example_blobs

    mitk_plugins(mitk_example_blobs)


@pytest.mark.usefixtures("blobs_plugin")
def test_detect_batch_contract(library: Path, tmp_path: Path) -> None:
    gamma, corrupt, alpha = copy_in(library, tmp_path / "in", "gamma.nii.gz", "corrupt.nii.gz", "alpha.nii.gz")
    out = tmp_path / "out"
    args = ["detect", "--plugin", "blobs", str(gamma), str(corrupt), str(alpha), "-d", str(out)]
    code, stdout, stderr = invoke([*args, "--json", "--set", "spacing=[1.5,1.5,1.5]"])
    assert code == 3, stderr
    records = json.loads(stdout)["cases"]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert files_in(out) == ["alpha_boxes.json", "gamma_boxes.json"]
    assert records[2]["boxes"] == []  # plain anatomy has no blobs
    # Detected on a 1.5 mm RAS grid, mapped back onto gamma's 2 mm LAS grid: within a voxel of each cube.
    found = sorted(np.round(b["box_voxel"]).astype(int).tolist() for b in records[0]["boxes"])
    expected = sorted([s.start for s in cube] + [s.stop for s in cube] for cube in CUBES)
    assert len(found) == len(expected)
    for box, truth in zip(found, expected, strict=True):
        assert np.abs(np.subtract(box, truth)).max() <= 1, (box, truth)
    written = json.loads((out / "gamma_boxes.json").read_text())
    assert written["boxes"] == records[0]["boxes"]

    before = (out / "gamma_boxes.json").read_bytes()
    code, stdout, _ = invoke([*args, "--json"])
    assert code == 1  # every output exists (or the input is corrupt)
    assert (out / "gamma_boxes.json").read_bytes() == before
    code, stdout, _ = invoke([*args, "--json", "--skip-existing"])
    assert code == 3
    assert [r["status"] for r in json.loads(stdout)["cases"]] == ["skipped", "failed", "skipped"]
