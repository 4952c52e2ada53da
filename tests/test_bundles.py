"""MONAI bundles as plugins: the same labels and classes as ``python -m monai.bundle run`` on real images."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import BUNDLES, edit_config, make_bundle
from helpers import load

DATA = Path(__file__).parent / "data"
LUNG_CT = DATA / "lung1_image.nii.gz"  # a real CT crop (pyradiomics, BSD-3)
BRAIN_MR = DATA / "brain1_image.nii.gz"  # a real MR crop

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def monai_bundle_run(root: Path, *overrides: str) -> None:
    """MONAI's own runner on the bundle (CPU, no worker processes)."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs/inference.json"),
               "--bundle_root", str(root), "--dataloader#num_workers", "0", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, env={**__import__("os").environ,
                          "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def spleen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real spleen_ct_segmentation configs with seeded weights, and MONAI's label map of the lung CT crop."""
    folder = tmp_path_factory.mktemp("spleen")
    root = make_bundle("spleen_ct_segmentation", folder)
    (folder / "data" / "imagesTs").mkdir(parents=True)
    (folder / "data" / "imagesTs" / "case.nii.gz").write_bytes(LUNG_CT.read_bytes())
    monai_bundle_run(root, "--dataset_dir", str(folder / "data"), "--output_dir", str(folder / "monai"),
                     "--evaluator#amp", "False")
    return {"bundle": root, "monai": folder / "monai" / "case" / "case_trans.nii.gz"}


def test_segment_bundle_gives_monai_labels_on_the_input_grid(spleen: dict[str, Path], tmp_path: Path,
                                                             mitk_cli) -> None:
    out = tmp_path / "seg.nii.gz"
    done = mitk_cli("segment", LUNG_CT, "--weights", spleen["bundle"], "-o", out)
    assert done.returncode == 0, done.stderr
    ours = np.asarray(load(out).dataobj)
    theirs = np.asarray(load(spleen["monai"]).dataobj).squeeze().astype(np.uint8)
    assert ours.shape == theirs.shape
    assert 0 < int(theirs.sum()) < theirs.size  # the seeded network draws a real boundary, not all or nothing
    np.testing.assert_array_equal(ours, theirs)  # identical labels: same preprocessing, inferer and inversion
    import SimpleITK as sitk

    source, written = sitk.ReadImage(str(LUNG_CT)), sitk.ReadImage(str(out))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)


def test_load_api_runs_a_bundle_folder(spleen: dict[str, Path]) -> None:
    import mitk

    model = mitk.load(weights=spleen["bundle"], device="cpu")
    result = model.segment(LUNG_CT)
    assert result.labels == {0: "background", 1: "spleen"}
    theirs = np.asarray(load(spleen["monai"]).dataobj).squeeze()
    np.testing.assert_array_equal(result.label_map, theirs)


def test_info_shows_what_a_bundle_declares(spleen: dict[str, Path], run_inprocess) -> None:
    code, out, err = run_inprocess("info", "--weights", spleen["bundle"], "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["task"] == "segment" and document["plugin"] == "monai-bundle-segmentation"
    assert document["input_channels"] == 1 and document["modality"] == "CT"
    assert document["labels"] == {"0": "background", "1": "spleen"}
    assert document["spacing"] == [1.5, 1.5, 2.0]
    assert document["licence"] == "Apache License" and document["weights"] == "models/model.pt"
    assert document["expects"]["modality"] == ["CT"] and document["expects"]["spatial_dims"] == 3
    code, out, _ = run_inprocess("info", "--weights", BUNDLES / "brats_mri_segmentation")
    assert code == 0 and "T1c" in out and "FLAIR" in out
    code, out, err = run_inprocess("plugins", "info", spleen["bundle"], "--json")  # the same, from `plugins`
    assert code == 0 and json.loads(out) == document, err


def test_detection_bundle_is_refused_with_the_reason(tmp_path: Path, run_inprocess) -> None:
    """lung_nodule_ct_detection's detector is built by Python calls and its inferer is the bundle's own code."""
    root = BUNDLES / "lung_nodule_ct_detection"
    code, out, err = run_inprocess("info", "--weights", root, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["task"] is None and "detection bundles are not run yet" in document["runnable"]
    assert document["expects"]["modality"] == ["CT"] and document["input_channels"] == 1
    code, _, err = run_inprocess("detect", LUNG_CT, "--weights", root, "-d", tmp_path / "out")
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "detection bundles are not run yet" in err and "scripts.detection_inferer.RetinaNetInferer" in err
    assert not (tmp_path / "out").exists()


def test_ct_bundle_warns_about_an_mr_image(spleen: dict[str, Path], tmp_path: Path, run_inprocess) -> None:
    inputs = tmp_path / "mr"
    inputs.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (inputs / name).write_bytes(BRAIN_MR.read_bytes())
    code, _, err = run_inprocess("segment", inputs, "--weights", spleen["bundle"], "-d", tmp_path / "out")
    assert code == 0, err
    assert err.count("trained on CT") == 2  # once for each image, not once per process
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", spleen["bundle"], "-o", tmp_path / "l.nii.gz")
    assert code == 0 and "trained on CT" not in err


def test_channel_count_that_does_not_fit_is_refused(tmp_path: Path, run_inprocess) -> None:
    """A four-channel model (the spleen configs declaring four MR-style inputs) given a one-channel CT."""
    def four_inputs(metadata: dict) -> None:
        metadata["network_data_format"]["inputs"]["image"].update(
            num_channels=4, channel_def={"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"})

    root = tmp_path / "four"
    import shutil

    shutil.copytree(BUNDLES / "spleen_ct_segmentation", root)
    edit_config(root, "configs/metadata.json", four_inputs)
    edit_config(root, "configs/inference.json", lambda d: d["network_def"].update(in_channels=4))
    _save_seeded_weights(root)
    out = tmp_path / "seg.nii.gz"
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", out)
    assert code != 0
    assert "has 1 channel(s) but the model expects 4 channel(s) (T1c, T1, T2, FLAIR)" in err and "Traceback" not in err
    assert not out.exists()


def _save_seeded_weights(root: Path) -> None:
    import torch

    from mitk.bundles import read_bundle
    from mitk.bundles.resolver import SafeResolver

    torch.manual_seed(0)
    (root / "models").mkdir(exist_ok=True)
    torch.save(SafeResolver(read_bundle(root).inference).build("network_def").state_dict(),
               root / "models" / "model.pt")


def test_sigmoid_multilabel_bundle_is_refused_with_a_reason(tmp_path: Path, run_inprocess) -> None:
    root = make_bundle("brats_mri_segmentation", tmp_path)
    code, _, err = run_inprocess("segment", BRAIN_MR, "--weights", root, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "sigmoid multi-label" in err and "Traceback" not in err


def test_a_config_made_for_an_older_monai_is_refused_naming_the_key() -> None:
    """swin_unetr_btcv_segmentation passes ``img_size``, which the installed MONAI's SwinUNETR no longer takes."""
    from mitk.bundles import read_bundle
    from mitk.bundles.resolver import SafeResolver
    from mitk.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"network_def: SwinUNETR could not be built: .*img_size"):
        SafeResolver(read_bundle(BUNDLES / "swin_unetr_btcv_segmentation").inference).build("network_def")


@pytest.mark.parametrize("name", ["spleen_ct_segmentation", "brats_mri_segmentation", "endoscopic_tool_segmentation",
                                  "endoscopic_inbody_classification"])
def test_safe_resolver_builds_the_real_configs(name: str) -> None:
    """Every vendored config's network, preprocessing and inferer build from the allow-list alone."""
    import torch

    from mitk.bundles import read_bundle
    from mitk.bundles.resolver import SafeResolver

    resolver = SafeResolver(read_bundle(BUNDLES / name).inference)
    assert isinstance(resolver.build("network_def"), torch.nn.Module)
    steps = [type(step).__name__ for step in resolver.build("preprocessing").transforms]
    assert "LoadImaged" not in steps and "EnsureChannelFirstd" not in steps and steps
    assert type(resolver.build("inferer")).__name__ in ("SimpleInferer", "SlidingWindowInferer")


def test_classify_bundle_gives_monai_class_and_probabilities(tmp_path: Path, mitk_cli) -> None:
    """The real endoscopic_inbody_classification configs on a real colour photograph (scikit-image's retina)."""
    import skimage.data
    import torch
    from monai.bundle import ConfigParser
    from PIL import Image as Picture

    root = make_bundle("endoscopic_inbody_classification", tmp_path)
    photo = tmp_path / "retina.png"
    Picture.fromarray(skimage.data.retina()[::8, ::6]).save(photo)
    (root / "label").mkdir()
    (root / "label" / "test_samples.json").write_text(json.dumps([{"image": str(photo)}]))
    monai_bundle_run(root, "--output_dir", str(tmp_path / "monai"))
    with (tmp_path / "monai" / "predictions.csv").open() as handle:
        theirs = [float(v) for v in next(csv.reader(handle))[1:]]
    done = mitk_cli("classify", photo, "--weights", root, "--json", "-d", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    case = json.loads(done.stdout)["cases"][0]
    names = ["in body", "out body"]
    assert case["predicted"] == names[int(np.argmax(theirs))]
    # The probabilities themselves, against MONAI's own parser on the same (trusted, real) config.
    parser = ConfigParser()
    parser.read_config(str(root / "configs/inference.json"))
    parser["bundle_root"] = str(root)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(root / "models/model.pt", weights_only=True))
    sample = parser.get_parsed_content("preprocessing")({"image": str(photo)})["image"]
    with torch.inference_mode():
        expected = torch.softmax(network.eval()(sample.as_tensor()[None])[0], 0).tolist()
    np.testing.assert_allclose([case["probabilities"][n] for n in names], expected, atol=1e-5)


def test_weights_that_do_not_fit_the_bundle_network_are_refused(spleen: dict[str, Path], tmp_path: Path,
                                                                run_inprocess) -> None:
    import shutil

    root = tmp_path / "bundle"
    shutil.copytree(spleen["bundle"], root)
    edit_config(root, "configs/inference.json", lambda d: d["network_def"].update(channels=[8, 16, 32, 64, 128]))
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "weights do not fit" in err


def test_a_bad_case_fails_alone_in_a_bundle_batch(spleen: dict[str, Path], tmp_path: Path, run_inprocess) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "good.nii.gz").write_bytes(LUNG_CT.read_bytes())
    (inputs / "bad.nii.gz").write_bytes(b"not a NIfTI file")
    code, out, err = run_inprocess("segment", inputs, "--weights", spleen["bundle"], "-d", tmp_path / "out", "--json")
    document = json.loads(out)
    assert code != 0 and document["summary"]["ok"] == 1 and document["summary"]["failed"] == 1
    assert document["plugin"] == "monai-bundle-segmentation"
    assert (tmp_path / "out" / "good_seg.nii.gz").is_file() and not (tmp_path / "out" / "bad_seg.nii.gz").exists()
    failed = next(case for case in document["cases"] if case["status"] == "failed")
    assert "bad.nii.gz" in failed["input"] and "Traceback" not in err


def test_info_weights_describes_a_mitk_checkpoint_too(tmp_path: Path, run_inprocess) -> None:
    import torch

    from mitk.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "tiny.safetensors", {"w": torch.zeros(2)}, task="segment", plugin="unet",
                           plugin_version="0.0.1", config={}, metrics={"dice": 0.5})
    code, out, err = run_inprocess("info", "--weights", path, "--json")
    assert code == 0, err
    assert json.loads(out) == {"path": str(path), "task": "segment", "plugin": "unet", "plugin_version": "0.0.1",
                               "tensors": 1, "metrics": {"dice": 0.5},
                               "expects": "not recorded (trained before mitk recorded it: inputs not checked)"}
    expects = {"source": "training", "modality": ["CT"], "channels": 1, "spatial_dims": 3}
    path = save_checkpoint(tmp_path / "new.safetensors", {"w": torch.zeros(2)}, task="segment", plugin="unet",
                           plugin_version="0.0.1", config={}, expects=expects)
    code, out, err = run_inprocess("info", "--weights", path, "--json")
    assert code == 0 and json.loads(out)["expects"] == expects, err
    code, _, err = run_inprocess("info", LUNG_CT, "--weights", path)
    assert code != 0 and "not both" in err
    code, _, err = run_inprocess("info")
    assert code != 0 and "give an image" in err


def test_a_folder_that_is_not_a_bundle_is_named(tmp_path: Path, run_inprocess) -> None:
    (tmp_path / "model" / "configs").mkdir(parents=True)
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", tmp_path / "model", "-o", tmp_path / "s.nii.gz")
    assert code != 0 and "is a folder but not a MONAI bundle (no configs/inference.json)" in err
    (tmp_path / "model" / "configs" / "inference.yaml").write_text("network_def: {}\n")
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", tmp_path / "model", "-o", tmp_path / "s.nii.gz")
    assert code != 0 and "only JSON bundle configs are read" in err


def test_keep_largest_component_of_the_bundle_is_applied(spleen: dict[str, Path], tmp_path: Path) -> None:
    """The bundle's KeepLargestConnectedComponentd becomes the plugin's postprocess step (here on the air of the
    real CT, which is in many pieces)."""
    import shutil

    import torch
    from scipy import ndimage

    from mitk.bundles import read_bundle
    from mitk.plugin_manager import get_registry

    root = tmp_path / "bundle"
    shutil.copytree(spleen["bundle"], root)
    edit_config(root, "configs/inference.json", lambda d: d["postprocessing"]["transforms"].insert(
        3, {"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": [1]}))
    bundle = read_bundle(root)
    plugin = get_registry().get("monai-bundle-segmentation").load()
    postprocess = plugin.postprocess(plugin.resolve_config({"bundle": bundle.inference,
                                                            "metadata": bundle.metadata}))
    air = (np.asarray(load(LUNG_CT).dataobj) < -500).astype(np.uint8)
    assert ndimage.label(air)[1] > 1
    kept = postprocess(torch.from_numpy(air)[None]).numpy()[0]
    labelled, _ = ndimage.label(air)
    largest = np.bincount(labelled[labelled > 0]).argmax()
    np.testing.assert_array_equal(kept, labelled == largest)


def test_every_vendored_bundle_is_described_and_licensed() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    folders = sorted(p.name for p in BUNDLES.iterdir() if p.is_dir())
    assert len(folders) >= 5
    for name in folders:
        assert f"`{name}`" in readme
        assert "Apache License" in (BUNDLES / name / "LICENSE").read_text(encoding="utf-8")
        assert sorted(p.name for p in (BUNDLES / name / "configs").iterdir()) == ["inference.json", "metadata.json"]
