"""A plain ``pip install mitk`` (no extras) runs every core command; each optional feature names its extra.

The CLI runs in subprocesses whose ``sitecustomize`` makes the optional packages unimportable: the extras
(matplotlib, highdicom, nilearn, the pylibjpeg decoders), the other DICOM decoders and the test extra's
SimpleITK and pydicom-data. Core paths must finish with exit 0; ``--preview``, ``mitk sample`` and
``--format dicom-seg`` must stop before any work with exit 2 and ``pip install "mitk[EXTRA]"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from mitk.training.log import TrainingLog

OPTIONAL_MODULES = ("matplotlib", "highdicom", "nilearn", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls",
                    "gdcm", "SimpleITK", "pydicom_data", "data_store")

BLOCKER = f'''"""Test-only: the optional extras of mitk are not installed (tests/test_plain_install.py)."""
import sys

BLOCKED = frozenset({OPTIONAL_MODULES!r})


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''

PREVIEW_HINT = 'pip install "mitk[preview]"'


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables for a Python where the optional packages do not import."""
    site = tmp_path_factory.mktemp("plain_site")
    (site / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    paths = [str(site), str(root), str(root / "plugins"), *filter(None, os.environ.get("PYTHONPATH", "").split(
        os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MITK_DEBUG": "0"}


def plain_mitk(env: dict[str, str], *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mitk", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Exit ``code`` with one ``mitk: error:`` line on stderr that contains ``words``; return the line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and lines[0].startswith("mitk: error:"), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_the_optional_packages_do_not_import(plain_env: dict[str, str]) -> None:
    """The stand-in for a plain install works: each optional module fails to import, the core ones import."""
    code = ("import importlib, json, sys\n"
            "def imports(name):\n"
            "    try:\n        importlib.import_module(name)\n    except ImportError:\n        return False\n"
            "    return True\n"
            f"print(json.dumps({{name: imports(name) for name in {[*OPTIONAL_MODULES, 'numpy', 'pydicom', 'mitk']}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plain_env, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert not any(found[name] for name in OPTIONAL_MODULES)
    assert found["numpy"] and found["pydicom"] and found["mitk"]


def test_help_plugins_info_and_convert(plain_env: dict[str, str], brain_mr: Path, tmp_path: Path) -> None:
    assert plain_mitk(plain_env, "--help").returncode == 0
    listed = plain_mitk(plain_env, "plugins", "list")
    assert listed.returncode == 0, listed.stderr
    assert "threshold" in listed.stdout and "unet" in listed.stdout
    for path in (brain_mr, Path(get_testdata_file("CT_small.dcm"))):
        info = plain_mitk(plain_env, "info", path, "--json")
        assert info.returncode == 0, info.stderr
        assert "Traceback" not in info.stderr
    assert json.loads(info.stdout)  # the DICOM file described as JSON
    converted = plain_mitk(plain_env, "convert", get_testdata_file("CT_small.dcm"), tmp_path / "ct.nii.gz")
    assert converted.returncode == 0, converted.stderr
    assert nib.load(tmp_path / "ct.nii.gz").shape[:2] == (128, 128)


def test_segment_nifti_and_uncompressed_dicom_with_threshold(plain_env: dict[str, str], brain_mr: Path,
                                                             tmp_path: Path) -> None:
    """The DICOM reader imports and decodes native pixel data without highdicom and the pylibjpeg decoders."""
    dicom = Path(get_testdata_file("CT_small.dcm"))
    done = plain_mitk(plain_env, "segment", brain_mr, dicom, "--plugin", "threshold", "-d", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    assert [case["status"] for case in json.loads(done.stdout)["cases"]] == ["ok", "ok"]
    label_map = nib.load(tmp_path / "brain1_image_seg.nii.gz")
    assert label_map.shape == nib.load(brain_mr).shape and np.asanyarray(label_map.dataobj).any()
    assert (tmp_path / "CT_small_seg.nii.gz").is_file()


def test_compressed_dicom_names_the_dicom_extra(plain_env: dict[str, str], tmp_path: Path) -> None:
    jpeg_ls = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    done = plain_mitk(plain_env, "segment", jpeg_ls, "--plugin", "threshold", "-d", tmp_path)
    assert done.returncode == 1, done.stderr
    assert 'pip install "mitk[dicom]"' in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "extra"), [
    (["segment", "{image}", "--preview"], "preview"),
    (["segment", "{image}", "--format", "dicom-seg"], "dicom"),
    (["sample", "segment", "-d", "{out}/sample"], "sample"),
], ids=["preview", "dicom-seg", "sample"])
def test_optional_features_name_their_extra(plain_env: dict[str, str], brain_mr: Path, tmp_path: Path,
                                            args: list[str], extra: str) -> None:
    # A checkpoint that does not exist: the extra is checked before the model loads (which would fail on it).
    weights = ["--weights", str(tmp_path / "missing.safetensors"), "-d", str(tmp_path / "out")]
    command = [a.format(image=brain_mr, out=tmp_path) for a in args] + (weights if args[0] == "segment" else [])
    one_line_error(plain_mitk(plain_env, *command), 2, f'pip install "mitk[{extra}]"')
    assert not list(tmp_path.iterdir())  # nothing written


def test_nrrd_and_metaimage_name_the_itk_extra(plain_env: dict[str, str], brain_mr: Path, tmp_path: Path) -> None:
    """Reading or writing NRRD/MetaImage without SimpleITK: one line naming ``mitk[itk]``, nothing written."""
    header = Path(__file__).resolve().parent / "data" / "itk_formats" / "BrainProtonDensity3Slices.mha"
    one_line_error(plain_mitk(plain_env, "info", header), 2, 'pip install "mitk[itk]"')
    one_line_error(plain_mitk(plain_env, "convert", brain_mr, tmp_path / "out.nrrd"), 2, 'pip install "mitk[itk]"')
    assert not list(tmp_path.iterdir())


def write_tiny_cases(brain_mr: Path, brain_mr_label: Path, folder: Path) -> None:
    """Three 40×40×8 crops of the real MR and its tumour label, in imagesTr/labelsTr form."""
    image, label = nib.load(brain_mr), nib.load(brain_mr_label)
    array, labels = np.asanyarray(image.dataobj), (np.asanyarray(label.dataobj) > 0).astype(np.uint8)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for index, (i, j, k) in enumerate([(40, 30, 10), (50, 50, 9), (30, 60, 11)]):
        region = (slice(i, i + 40), slice(j, j + 40), slice(k, k + 8))
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [i, j, k] + image.affine[:3, 3]
        assert labels[region].any()
        nib.save(nib.Nifti1Image(array[region], affine), folder / "imagesTr" / f"case{index}.nii.gz")
        nib.save(nib.Nifti1Image(labels[region], affine), folder / "labelsTr" / f"case{index}.nii.gz")


@pytest.mark.slow
def test_train_segment_evaluate_without_matplotlib(plain_env: dict[str, str], brain_mr: Path, brain_mr_label: Path,
                                                   tmp_path: Path) -> None:
    """One epoch of a tiny U-Net finishes without matplotlib: no curve, one warning naming the preview extra."""
    data = tmp_path / "data"
    write_tiny_cases(brain_mr, brain_mr_label, data)
    run = tmp_path / "run"
    trained = plain_mitk(plain_env, "train", "segment", "--plugin", "unet", "--data", data, "-d", run,
                         "--epochs", "1", "--patch-size", "16,16,8", "--labels", "background,tumour",
                         "--set", "network.channels=[4,8]", "--set", "network.strides=[2]",
                         "--set", "spacing=null", "--set", "samples_per_case=1", "--json")
    assert trained.returncode == 0, trained.stderr
    assert trained.stderr.count(PREVIEW_HINT) == 1  # one warning, not one per epoch
    assert "training_curve.png" in trained.stderr and "Traceback" not in trained.stderr
    assert (run / "log.csv").is_file() and not (run / "training_curve.png").exists()
    checkpoint = Path(json.loads(trained.stdout)["checkpoint"])
    assert checkpoint.is_file()

    image = data / "imagesTr" / "case0.nii.gz"
    prediction = tmp_path / "pred" / "case0.nii.gz"
    segmented = plain_mitk(plain_env, "segment", image, "--weights", checkpoint, "-o", prediction)
    assert segmented.returncode == 0, segmented.stderr
    assert nib.load(prediction).shape == nib.load(image).shape

    evaluated = plain_mitk(plain_env, "evaluate", "segment", "--pred", prediction,
                           "--ref", data / "labelsTr" / "case0.nii.gz", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    (case,) = json.loads(evaluated.stdout)["cases"]
    assert case["status"] == "ok"


def test_training_log_without_matplotlib_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    log = TrainingLog(tmp_path)
    with caplog.at_level("WARNING", logger="mitk.training"):
        for epoch in (1, 2, 3):
            log.append({"epoch": epoch, "loss": 1.0 / epoch, "lr": 0.01, "seconds": 0.1, "val_mean_dice": 0.1})
    assert [r.getMessage().count(PREVIEW_HINT) for r in caplog.records] == [1]
    assert (tmp_path / "log.csv").read_text().count("\n") == 4 and not (tmp_path / "training_curve.png").exists()


def test_training_log_draws_the_curve_with_matplotlib(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path)
    log.append({"epoch": 1, "loss": 0.5, "lr": 0.01, "seconds": 0.1, "val_mean_dice": 0.2})
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
