"""Does this model fit this image? (mitk/runner/fit.py): training records what the model saw; an input unlike it
is warned about (record + one stderr line) or refused where the network cannot run it, on real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke

from mitk.checkpoint import load_checkpoint, save_checkpoint
from mitk.image import Image
from mitk.io.reader import load_image
from mitk.runner.fit import assess, bundle_expectations, check_fit, training_expectations

DATA = Path(__file__).parent / "data"
LUNG_CT, BRAIN_MR = DATA / "lung1_image.nii.gz", DATA / "brain1_image.nii.gz"
TINY_DENSENET = ["--set", "image_size=[32,32]", "--set", "network.block_config=[2,2]",
                 "--set", "network.init_features=8", "--set", "network.growth_rate=8"]


def radiograph(name: str) -> Path:
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"pydicom-data radiograph {name} is not available")
    return Path(str(found))


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mitk: warning:")]


@pytest.fixture(scope="module")
def retina(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's real colour fundus photograph (CC0), as a PNG."""
    from PIL import Image as Picture
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "fundus.png"
    Picture.fromarray(data.retina()).save(path)
    return path


@pytest.fixture(scope="module")
def cr_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier trained by ``mitk train classify`` on two real CR radiographs (chest, extremity)."""
    chest, tibia = radiograph("RG1_UNCR.dcm"), radiograph("RG3_UNCR.dcm")
    folder = tmp_path_factory.mktemp("cr")
    cases = [{"image": str(chest), "label": "chest"}, {"image": str(tibia), "label": "extremity"}]
    (folder / "data.json").write_text(json.dumps({"training": cases, "validation": cases}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, _, stderr = invoke(["train", "classify", "--plugin", "densenet121", "--data", str(folder / "data.json"),
                                  "-d", str(folder / "run"), "--epochs", "1", "--batch-size", "2", "--seed", "0",
                                  "--device", "cpu", *TINY_DENSENET])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, stderr
    return folder / "run" / "best.safetensors"


def test_training_records_what_the_model_saw(cr_classifier: Path) -> None:
    expects = load_checkpoint(cr_classifier).expects
    assert expects["source"] == "training" and expects["cases"] == 2
    assert expects["modality"] == ["CR"] and expects["photometric"] == ["MONOCHROME1"]
    assert expects["colour"] is False and expects["channels"] == 1 and expects["spatial_dims"] == 2
    assert expects["spacing"] is None  # neither radiograph states its pixel spacing: nothing is assumed
    low, high = expects["intensity"]["p1"], expects["intensity"]["p99"]
    assert low[0] <= low[1] and high[0] <= high[1] and low[1] < high[1]


def test_fundus_photo_given_to_a_cr_classifier_is_warned_about(cr_classifier: Path, retina: Path,
                                                                 tmp_path: Path) -> None:
    """The issue's scenario: a CR radiograph classifier used to score a colour fundus photograph without a word."""
    code, stdout, stderr = invoke(["classify", str(retina), "--weights", str(cr_classifier), "-d", str(tmp_path),
                                   "--json"])
    assert code == 0, stderr  # it still runs: the runner can make grey of colour
    lines = warning_lines(stderr)
    assert len(lines) == 1, stderr
    assert "colour photograph given to a model trained on greyscale CR radiographs (MONOCHROME1)" in lines[0]
    record = json.loads((tmp_path / "fundus_class.json").read_text())
    assert record["predicted"] in ("chest", "extremity")
    assert len(record["fit"]) == 1 and "colour photograph" in record["fit"][0]
    assert json.loads(stdout)["cases"][0]["fit"] == record["fit"]


def test_a_radiograph_like_the_training_ones_passes_without_a_word(cr_classifier: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(["classify", str(radiograph("RG3_UNCR.dcm")), "--weights", str(cr_classifier),
                              "-d", str(tmp_path)])
    assert code == 0, stderr
    assert warning_lines(stderr) == []
    assert "fit" not in json.loads((tmp_path / "RG3_UNCR_class.json").read_text())


def test_the_python_api_warns_too(cr_classifier: Path, retina: Path) -> None:
    import mitk
    from mitk.errors import MitkWarning

    model = mitk.load(weights=cr_classifier, device="cpu")
    with pytest.warns(MitkWarning, match="colour photograph given to a model trained on greyscale CR"):
        model.classify(retina)


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CT segmentation checkpoint whose expectations are those training records for the real lung CT crop."""
    from mitk_builtin._segment_networks import UNetSegmenter

    plugin = UNetSegmenter()
    config = plugin.resolve_config({"network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ct") / "ct.safetensors"
    save_checkpoint(path, plugin.network(config).state_dict(), task="segment", plugin="unet", plugin_version=None,
                    config=config, expects=training_expectations([load_image(LUNG_CT)]))
    return path


def test_mr_given_to_a_ct_model_is_warned_about(ct_model: Path, tmp_path: Path) -> None:
    """pyradiomics' brain MR crop given to a model whose training image was the lung CT crop."""
    code, stdout, stderr = invoke(["segment", str(BRAIN_MR), str(LUNG_CT), "--weights", str(ct_model),
                                   "-d", str(tmp_path), "--json"])
    assert code == 0, stderr
    lines = warning_lines(stderr)
    assert len(lines) == 1 and "brain1_image.nii.gz: intensities" in lines[0] and "unlike training's" in lines[0]
    records = {Path(r["input"]).name: r for r in json.loads(stdout)["cases"]}
    assert "unlike training's" in records["brain1_image.nii.gz"]["fit"][0]
    assert "fit" not in records["lung1_image.nii.gz"]  # the training image itself fits
    assert (tmp_path / "brain1_image_seg.nii.gz").is_file()  # a warning, not a refusal


def test_an_older_checkpoint_without_expectations_is_not_checked(tmp_path: Path) -> None:
    from mitk_builtin._segment_networks import UNetSegmenter

    plugin = UNetSegmenter()
    config = plugin.resolve_config({"network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}})
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, plugin.network(config).state_dict(), task="segment", plugin="unet", plugin_version=None,
                    config=config)
    assert load_checkpoint(path).expects == {}
    code, _, stderr = invoke(["segment", str(BRAIN_MR), "--weights", str(path), "-d", str(tmp_path)])
    assert code == 0 and warning_lines(stderr) == [], stderr


def test_what_cannot_run_is_refused_in_one_line_naming_the_file(tmp_path: Path) -> None:
    """Four channels expected, one given; a 3-D model given a 2-D image; and the reverse."""
    mr = load_image(BRAIN_MR)
    four = {"channels": 4, "channel_names": ["T1c", "T1", "T2", "FLAIR"], "spatial_dims": 3}
    with pytest.raises(Exception, match=r"brain1_image.nii.gz: has 1 channel\(s\) but the model expects 4 "
                                        r"channel\(s\) \(T1c, T1, T2, FLAIR\)"):
        check_fit(four, mr)
    plane = Image(array=np.asarray(mr.array)[:, :, 12:13], affine=mr.affine, path=Path("slice.nii.gz"))
    assert [f.message for f in assess({"spatial_dims": 3}, plane)] == ["is a 2-D image but the model takes 3-D inputs"]
    assert [f.level for f in assess({"spatial_dims": 2}, mr)] == ["refuse"]
    # through the CLI: a nonzero exit, the file named, no traceback, no output
    from mitk_builtin._segment_networks import UNetSegmenter

    plugin = UNetSegmenter()
    config = plugin.resolve_config({"network": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
                                    "in_channels": 4})
    path = tmp_path / "four.safetensors"
    save_checkpoint(path, plugin.network(config).state_dict(), task="segment", plugin="unet", plugin_version=None,
                    config=config, expects={"source": "training", "channels": 4, "spatial_dims": 3})
    code, _, stderr = invoke(["segment", str(BRAIN_MR), "--weights", str(path), "-o", str(tmp_path / "seg.nii.gz")])
    assert code != 0 and "Traceback" not in stderr
    assert "brain1_image.nii.gz: has 1 channel(s) but the model expects 4 channel(s)" in stderr
    assert not (tmp_path / "seg.nii.gz").exists()


def test_modality_from_dicom_and_from_a_bundle(retina: Path) -> None:
    """A DICOM CR given to a CT bundle is named by its modality; a colour photo to an RGB bundle fits; a CR and
    a DX radiograph are the same kind of image."""
    metadata = json.loads((DATA / "bundles/spleen_ct_segmentation/configs/metadata.json").read_text())
    ct = bundle_expectations(metadata)
    assert ct is not None and ct["modality"] == ["CT"] and ct["channels"] == 1 and ct["spatial_dims"] == 3
    cr = load_image(radiograph("RG3_UNCR.dcm"))
    volume = Image(array=np.repeat(np.asarray(cr.array)[:64, :64], 4, axis=2), affine=cr.affine, meta=cr.meta)
    assert [(f.level, f.aspect) for f in assess(ct, volume)] == [("warn", "modality")]
    assert "a CR image given to a model trained on greyscale CT images" in assess(ct, volume)[0].message
    photo = json.loads((DATA / "bundles/endoscopic_inbody_classification/configs/metadata.json").read_text())
    assert assess(bundle_expectations(photo), load_image(retina)) == []
    dx = {"modality": ["DX"], "colour": False, "channels": 1, "spatial_dims": 2}
    assert assess(dx, cr) == []
    assert [f.aspect for f in assess(bundle_expectations(photo), cr)] == ["colour"]


def test_ct_bundle_warns_about_an_image_without_air() -> None:
    metadata = json.loads((DATA / "bundles/spleen_ct_segmentation/configs/metadata.json").read_text())
    expects = bundle_expectations(metadata)
    assert [f.aspect for f in assess(expects, load_image(BRAIN_MR))] == ["intensity"]
    assert assess(expects, load_image(LUNG_CT)) == []


def test_spacing_far_from_training_is_warned_about() -> None:
    ct = load_image(LUNG_CT)
    expects = training_expectations([ct])
    coarse = Image(array=ct.array, affine=ct.affine @ np.diag([4.0, 4.0, 1.0, 1.0]), meta=ct.meta)
    assert [f.aspect for f in assess(expects, coarse)] == ["spacing"]
    assert assess(expects, ct) == []


def _with_expectations(base: type, expects: dict) -> type:
    return type(f"Expecting{base.__name__}", (base,), {"expects": expects})


def test_detect_and_register_check_too(mitk_plugins, tmp_path: Path) -> None:
    """A plugin's declared ``expects`` (as a pretrained plugin declares them) is checked by every task's job."""
    from mitk_builtin._detect_blob import BlobDetector
    from mitk_builtin._registration import AffineRegistration

    from mitk import hookimpl

    class Plugins:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
            register("blob-2d", task="detect", factory=_with_expectations(BlobDetector, {"spatial_dims": 2}))
            register("affine-ct", task="register",
                     factory=_with_expectations(AffineRegistration, {"modality": ["CT"], "hounsfield": True}))

    mitk_plugins(Plugins())
    code, _, stderr = invoke(["detect", str(LUNG_CT), "--plugin", "blob-2d", "-d", str(tmp_path / "boxes")])
    assert code != 0 and "lung1_image.nii.gz: is a 3-D volume but the model takes 2-D inputs" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "boxes").exists()
    code, stdout, stderr = invoke(["register", str(LUNG_CT), str(BRAIN_MR), "--plugin", "affine-ct",
                                   "--set", "levels=[4]", "--set", "iterations=[5]", "--set", "samples=2000",
                                   "--set", "transform=rigid", "-d", str(tmp_path / "warped"), "--json"])
    assert code == 0, stderr
    assert [line for line in warning_lines(stderr) if "trained on CT" in line] == [
        "mitk: warning: brain1_image.nii.gz: the model was trained on CT (Hounsfield units) but this image has "
        "almost no value below -100 (no air): is it CT?"]
    assert "trained on CT" in json.loads(stdout)["cases"][0]["fit"][0]
