"""Bad input and usage errors: one line naming the file, no traceback unless ``--debug``, honest exit codes.

Commands run in this process through :func:`mitk.cli.main` (the same code path as the console script, without
paying for a torch import per command); ``tests/test_startup.py`` and the plugin tests cover subprocesses.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke, load

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, brain_mr: Path, anatomical_t1: Path) -> dict[str, Path]:
    """Each kind of bad input, built from real files, with a word its error message must contain."""
    root = tmp_path_factory.mktemp("bad")
    t1 = load(anatomical_t1)
    raw = brain_mr.read_bytes()
    (root / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    plain = root / "whole.nii"
    nib.save(t1, plain)
    (root / "truncated.nii").write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    (root / "notes.nii.gz").write_text("Patient notes, not an image.\n" * 20)
    (root / "empty.nii.gz").write_bytes(b"")
    for name, value in (("nan.nii.gz", np.nan), ("inf.nii.gz", np.inf)):
        data = np.asarray(t1.dataobj).astype(np.float32)
        data[10, 20, 12] = value
        nib.save(nib.Nifti1Image(data, t1.affine), root / name)
    return {
        "missing": root / "missing.nii.gz",
        "not-an-image": root / "notes.nii.gz",
        "truncated-gz": root / "truncated.nii.gz",
        "truncated-nii": root / "truncated.nii",
        "empty": root / "empty.nii.gz",
        "4-D": Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz",
        "nan": root / "nan.nii.gz",
        "inf": root / "inf.nii.gz",
    }


REASONS = {
    "missing": "no such file",
    "not-an-image": "gzip",
    "truncated-gz": "truncated",
    "truncated-nii": "could the file be damaged",
    "empty": "empty",
    "4-D": "4-D",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
}


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


@pytest.mark.parametrize("kind", list(REASONS))
def test_bad_input_is_one_line_naming_the_file(bad_inputs: dict[str, Path], tmp_path: Path, kind: str) -> None:
    path = bad_inputs[kind]
    code, _, stderr = invoke(["segment", "--plugin", "threshold", str(path), "--output-dir",
                                   str(tmp_path / "out")])
    assert code == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("failed")]
    assert len(errors) == 1, stderr
    assert str(path) in errors[0] and REASONS[kind] in errors[0]
    assert len(stderr.strip().splitlines()) <= 2  # the error and the batch summary
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["missing", "not-an-image", "truncated-nii", "empty"])
def test_info_on_bad_input_is_one_line(bad_inputs: dict[str, Path], kind: str) -> None:
    path = bad_inputs[kind]
    code, _, stderr = invoke(["info", str(path)])
    assert code == 1
    assert stderr.startswith("mitk: error:") and len(stderr.strip().splitlines()) == 1, stderr
    assert path.name in stderr and "Traceback" not in stderr


def test_debug_shows_a_traceback(bad_inputs: dict[str, Path], tmp_path: Path) -> None:
    for args in (["segment", "--plugin", "threshold", str(bad_inputs["truncated-gz"]), "-d", str(tmp_path)],
                 ["info", str(bad_inputs["truncated-nii"])]):
        code, _, stderr = invoke(["--debug", *args])
        assert code == 1
        assert "Traceback (most recent call last)" in stderr, stderr
        assert "InputError" in stderr


def test_all_bad_inputs_in_one_batch(bad_inputs: dict[str, Path], tmp_path: Path) -> None:
    code, stdout, _ = invoke(["segment", "--plugin", "threshold", *map(str, bad_inputs.values()),
                                   "-d", str(tmp_path), "--json"])
    assert code == 1
    document = json.loads(stdout)
    assert document["summary"]["failed"] == len(bad_inputs)
    for record, path in zip(document["cases"], bad_inputs.values(), strict=True):
        assert record["status"] == "failed" and record["input"] == str(path)
        assert str(path) in record["error"] and "\n" not in record["error"]
        assert record["output"] is None
    assert files_under(tmp_path) == []


def test_usage_errors_exit_2_and_write_nothing(anatomical_t1: Path, tmp_path: Path) -> None:
    two = [str(anatomical_t1), str(anatomical_t1.with_name("example4d.nii.gz"))]
    cases = {
        "-o with two inputs": ["segment", "--plugin", "threshold", *two, "-o", str(tmp_path / "x.nii.gz")],
        "unknown option": ["segment", "--plugin", "threshold", str(anatomical_t1), "--frobnicate"],
        "contradiction": ["segment", "--plugin", "threshold", str(anatomical_t1), "-d", str(tmp_path),
                          "--overwrite", "--skip-existing"],
        "no plugin": ["segment", str(anatomical_t1), "-d", str(tmp_path)],
        "bad --set": ["segment", "--plugin", "threshold", str(anatomical_t1), "-d", str(tmp_path),
                      "--set", "threshold"],
        "empty glob": ["segment", "--plugin", "threshold", str(tmp_path / "nothing*.nii.gz")],
    }
    for what, args in cases.items():
        code, stdout, stderr = invoke(args)
        assert code == 2, (what, stderr)
        assert "Traceback" not in stderr and stdout == ""
    assert files_under(tmp_path) == []


def test_info_json_reports_the_header_geometry(anatomical_t1: Path, tmp_path: Path) -> None:
    image = load(anatomical_t1)
    sform_only = tmp_path / "sform_only.nii.gz"
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] @ np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]])  # permute and flip axes
    saved = nib.Nifti1Image(np.asarray(image.dataobj), affine)
    saved.set_qform(affine, code=0)
    saved.set_sform(affine, code=2)
    nib.save(saved, sform_only)
    code, stdout, _ = invoke(["info", str(sform_only), "--json"])
    assert code == 0
    document = json.loads(stdout)
    assert document["shape"] == list(image.shape)
    assert document["orientation"] == "".join(nib.aff2axcodes(affine))
    assert np.allclose(document["affine"], affine, atol=1e-5)
    assert document["spacing"] == pytest.approx([2.0, 2.0, 2.0])
    assert (document["qform_code"], document["sform_code"]) == (0, 2)


def test_unknown_plugin_is_one_line_listing_the_available_ones(anatomical_t1: Path, tmp_path: Path) -> None:
    for args in (["segment", "--plugin", "thresold", str(anatomical_t1), "-d", str(tmp_path)],
                 ["plugins", "info", "thresold"]):
        code, stdout, stderr = invoke(args)
        assert code == 1 and stdout == ""
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert "unknown" in stderr and "'thresold'" in stderr and "available: " in stderr
        assert "threshold" in stderr.split("available: ")[1]
    code, _, stderr = invoke(["detect", "--plugin", "threshold", str(anatomical_t1)])
    assert code == 1 and "is a segment plugin, not a detect plugin" in stderr
    assert files_under(tmp_path) == []


def test_plugins_info_threshold() -> None:
    code, stdout, _ = invoke(["plugins", "info", "threshold", "--json"])
    assert code == 0
    document = json.loads(stdout)
    assert document["name"] == "threshold" and document["task"] == "segment"
    assert document["needs_weights"] is False and document["trainable"] is False
    assert document["config"]["labels"] in ({0: "background", 1: "foreground"},
                                            {"0": "background", "1": "foreground"})
    code, stdout, _ = invoke(["plugins", "info", "threshold"])
    assert code == 0 and "needs_weights" in stdout and "--set KEY=VALUE" in stdout


def test_version_and_help() -> None:
    from mitk import __version__

    assert invoke(["--version"])[:2] == (0, f"mitk {__version__}\n")
    code, stdout, _ = invoke(["--help"])
    assert code == 0
    for verb in ("segment", "detect", "classify", "register", "plugins", "info"):
        assert verb in stdout
