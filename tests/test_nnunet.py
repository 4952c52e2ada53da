"""nnU-Net v2 model folders: the labels of nnU-Net's own predictor, safe loading, the folder's description."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import load

HERE = Path(__file__).parent
DATASET = HERE / "data" / "nnunet" / "Dataset990_LungCrop"
MODEL = DATASET / "nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres"
LUNG_CT = HERE / "data" / "lung1_image.nii.gz"  # a real CT crop (pyradiomics, BSD-3)

pytest.importorskip("nnunetv2")
pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def nnunet_predict(out: Path, *images: Path, options: tuple[str, ...] = ()) -> None:
    """nnU-Net's predictor (tests/nnunet_reference.py) on ``images``, labels written to ``out``."""
    command = [sys.executable, str(HERE / "nnunet_reference.py"), str(MODEL), str(out), *map(str, images), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def agreement(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    share = float((ours == theirs).mean())
    print(f"agreement with nnU-Net: {share:.6f} of {ours.size} voxels")  # shown with pytest -s
    return share


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real CT crops, one on the model's grid (one patch, no resampling), one whose header spacing
    differs (nnU-Net resamples it there and back, in-plane cubic, along z by nearest: anisotropic), with
    nnU-Net's labels of both."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("nnunet")
    (folder / "in").mkdir()
    image = sitk.ReadImage(str(LUNG_CT))
    native = sitk.RegionOfInterest(image, [64, 64, 16], [30, 30, 24])
    sitk.WriteImage(native, str(folder / "in" / "native.nii.gz"))
    other = sitk.RegionOfInterest(image, [56, 52, 12], [36, 34, 26])
    other.SetSpacing((0.7, 0.65, 4.0))
    sitk.WriteImage(other, str(folder / "in" / "resampled.nii.gz"))
    nnunet_predict(folder / "nnunet", folder / "in" / "native.nii.gz", folder / "in" / "resampled.nii.gz")
    return {"in": folder / "in", "nnunet": folder / "nnunet", "root": folder}


def test_segment_gives_nnunet_labels_on_the_input_grid(cases: dict[str, Path], mitk_cli) -> None:
    import SimpleITK as sitk

    out = cases["root"] / "mitk"
    inputs = cases["root"] / "batch"
    shutil.copytree(cases["in"], inputs)
    (inputs / "broken.nii.gz").write_bytes(b"not an image")  # one bad case fails alone
    done = mitk_cli("segment", inputs, "--weights", MODEL, "-d", out, "--manifest", cases["root"] / "m.json")
    assert "broken.nii.gz" in done.stderr and "2 ok" in done.stderr and "1 failed" in done.stderr, done.stderr
    records = {Path(r["input"]).name: r for r in map(json.loads, (cases["root"] / "m.json").read_text().splitlines())}
    assert records["broken.nii.gz"]["status"] == "failed"
    assert records["native.nii.gz"]["status"] == records["resampled.nii.gz"]["status"] == "ok"
    for name in ("native", "resampled"):
        ours = np.asarray(load(out / f"{name}_seg.nii.gz").dataobj)
        theirs = np.asarray(load(cases["nnunet"] / f"{name}.nii.gz").dataobj)
        assert 0 < int(theirs.sum()) < theirs.size  # the model draws lesion and background: a real boundary
        assert agreement(ours, theirs) >= 0.999, name
        source, written = sitk.ReadImage(str(cases["in"] / f"{name}.nii.gz")), sitk.ReadImage(
            str(out / f"{name}_seg.nii.gz"))
        assert written.GetSize() == source.GetSize()
        np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)


def test_load_api_runs_the_dataset_folder_with_one_configuration(cases: dict[str, Path]) -> None:
    import mitk

    model = mitk.load(weights=DATASET, device="cpu")
    result = model.segment(cases["in"] / "resampled.nii.gz")
    assert result.labels == {0: "background", 1: "lesion"}
    theirs = np.asarray(load(cases["nnunet"] / "resampled.nii.gz").dataobj)
    assert agreement(np.asarray(result.label_map), theirs) >= 0.999


def test_folds_mirroring_and_step_follow_nnunet(cases: dict[str, Path]) -> None:
    import mitk

    image = cases["in"] / "native.nii.gz"
    nnunet_predict(cases["root"] / "fold0", image, options=("--folds", "0", "--no-mirroring", "--step", "0.75"))
    model = mitk.load(weights=MODEL, device="cpu", settings={"folds": "0", "mirroring": False, "tile_step_size": 0.75})
    assert list(model.loaded.network.keys()) == ["fold_0"]
    ours = np.asarray(model.segment(image).label_map)
    theirs = np.asarray(load(cases["root"] / "fold0" / "native.nii.gz").dataobj)
    assert agreement(ours, theirs) >= 0.999
    ensemble = np.asarray(load(cases["nnunet"] / "native.nii.gz").dataobj)
    assert agreement(ours, ensemble) < 1.0  # one unmirrored fold is another prediction than the ensemble


def test_info_describes_the_model_folder(run_inprocess) -> None:
    code, out, err = run_inprocess("info", "--weights", MODEL, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["dataset"] == "Dataset990_LungCrop" and document["configuration"] == "3d_fullres"
    assert document["trainer"] == "nnUNetTrainer_1epoch" and document["folds"] == ["0", "1"]
    assert document["labels"] == {"0": "background", "1": "lesion"} and document["channels"] == ["CT"]
    assert document["target_spacing"] == pytest.approx([0.5703125, 0.5703125, 5.0])
    assert document["normalization"] == ["CTNormalization"]


def copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "Dataset990_LungCrop" / MODEL.name
    shutil.copytree(MODEL, target)
    return target


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_hostile_checkpoint_runs_nothing(tmp_path: Path, run_inprocess) -> None:
    import torch

    model = copy_model(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"network_weights": {}, "payload": Payload(marker)}, model / "fold_1" / "checkpoint_final.pth")
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", model, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and not marker.exists()
    assert "fold_1" in err and "refused" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "seg.nii.gz").exists()
    torch.load(model / "fold_1" / "checkpoint_final.pth", weights_only=False)  # what nnU-Net itself does
    assert marker.exists()  # the payload is live: plain unpickling runs it


def test_an_architecture_outside_the_allow_list_is_refused(tmp_path: Path, run_inprocess) -> None:
    model = copy_model(tmp_path)
    plans = json.loads((model / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    architecture["arch_kwargs"]["nonlin"] = "os.system"
    (model / "plans.json").write_text(json.dumps(plans))
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", model, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "nonlin='os.system'" in err and "Traceback" not in err
    architecture["arch_kwargs"]["nonlin"] = "torch.nn.LeakyReLU"
    architecture["network_class_name"] = "subprocess.Popen"
    (model / "plans.json").write_text(json.dumps(plans))
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", model, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "'subprocess.Popen' is not one mitk builds" in err


def test_a_dataset_folder_with_several_configurations_names_them(tmp_path: Path, run_inprocess) -> None:
    model = copy_model(tmp_path)
    shutil.copytree(model, model.parent / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", model.parent, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "holds 2 nnU-Net configurations" in err
    assert "nnUNetTrainer__nnUNetPlans__3d_fullres" in err and MODEL.name in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_fold_and_weights_that_do_not_fit_are_named(tmp_path: Path, run_inprocess) -> None:
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", MODEL, "--set", "folds=0,3",
                                 "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "no checkpoint for fold 3" in err
    model = copy_model(tmp_path)
    dataset = json.loads((model / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "CT", "1": "PET"}  # a network for two channels: the weights are for one
    (model / "dataset.json").write_text(json.dumps(dataset))
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", model, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "do not fit plugin 'nnunet'" in err and len(err.strip().splitlines()) == 1


def test_without_nnunetv2_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from mitk_builtin._nnunet_predict import quiet_import

    from mitk.errors import PluginError

    for name in [n for n in sys.modules if n == "nnunetv2" or n.startswith("nnunetv2.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(PluginError, match=r'pip install "mitk\[nnunet\]"'):
        quiet_import()


def test_nothing_imports_torchvision() -> None:
    code = ("import sys, mitk_builtin._nnunet, mitk.nnunet.loading; "
            "from mitk_builtin._nnunet_predict import quiet_import; quiet_import(); "
            "assert 'torchvision' not in sys.modules and 'timm' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_command_without_nnunetv2_names_the_extra(tmp_path: Path) -> None:
    """A plain install: nnunetv2 (and its network package) do not import; one line, exit non-zero, no output."""
    out = tmp_path / "seg.nii.gz"
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('nnunetv2', 'dynamic_network_architectures'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from mitk.__main__ import main\n"
            f"sys.argv = ['mitk', 'segment', {str(LUNG_CT)!r}, '--weights', {str(MODEL)!r}, '-o', {str(out)!r}]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert 'pip install "mitk[nnunet]"' in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()
