"""``mitk plan``: the fingerprint against nnU-Net's own extractor and planner on real data, the derived
settings, and the plan → train round trip."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mitk.errors import InputError, UsageError
from mitk.training.fingerprint import analyse_case, fingerprint_cases
from mitk.training.planning import (
    Budget,
    default_plan_path,
    intensity_settings,
    make_plan,
    read_plan,
    target_spacing,
)

STATISTICS = ("mean", "median", "min", "max", "percentile_00_5", "percentile_99_5")


def nnunet_target_spacing(spacings: list[list[float]], shapes: list[list[float]]) -> list[float]:
    """nnU-Net's ExperimentPlanner.determine_fullres_target_spacing on the same table (its axes reversed, as
    its SimpleITK reader orders them)."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    planner = SimpleNamespace(overwrite_target_spacing=None, anisotropy_threshold=3,
                              dataset_fingerprint={"spacings": [s[::-1] for s in spacings],
                                                   "shapes_after_crop": [s[::-1] for s in shapes]})
    return [float(v) for v in ExperimentPlanner.determine_fullres_target_spacing(planner)[::-1]]


def _padded(image: Path, label: Path, folder: Path) -> tuple[Path, Path]:
    """The real MR case inside a zero border (as a skull-stripped or masked image has), to exercise the crop."""
    import nibabel as nib

    written = []
    for path in (image, label):
        source = nib.load(path)
        array = np.pad(np.asarray(source.dataobj), ((7, 3), (0, 12), (2, 0)))
        target = folder / path.name
        nib.Nifti1Image(array, source.affine).to_filename(target)
        written.append(target)
    return written[0], written[1]


@pytest.mark.parametrize("name", ["brain", "lung", "padded"])
def test_case_fingerprint_equals_nnunets_analyse_case(name, brain_mr, brain_mr_label, lung_ct, lung_ct_label,
                                                      tmp_path):
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    image, label = {"brain": (brain_mr, brain_mr_label), "lung": (lung_ct, lung_ct_label),
                    "padded": (brain_mr, brain_mr_label)}[name]
    if name == "padded":
        image, label = _padded(image, label, tmp_path)
    shape, spacing, _, statistics, relative = DatasetFingerprintExtractor.analyze_case(
        [str(image)], str(label), SimpleITKIO)
    ours = analyse_case(str(image), str(label))
    assert ours["shape_after_crop"] == [int(v) for v in shape][::-1]
    np.testing.assert_allclose(ours["spacing"], list(spacing)[::-1], rtol=1e-6)
    assert ours["relative_size_after_crop"] == pytest.approx(relative)
    for key in STATISTICS:
        assert ours["intensity"][0][key] == pytest.approx(float(statistics[0][key]), rel=1e-5, abs=1e-4), key
    if name == "padded":  # the crop removes the border again
        assert ours["shape_after_crop"] == [128, 128, 25] and ours["shape"] == [138, 140, 27]
    assert ours["label_voxels"]["1"] > 0 and len(ours["samples"][0]) == 10_000


def test_dataset_fingerprint_and_target_spacing_match_nnunet(brain_mr, brain_mr_label, lung_ct, lung_ct_label):
    cases = [{"image": str(brain_mr), "label": str(brain_mr_label)},
             {"image": str(lung_ct), "label": str(lung_ct_label)}]
    fingerprint = fingerprint_cases(cases, modality=None, labels={0: "background", 1: "lesion"})
    assert fingerprint["cases"] == 2
    assert target_spacing(fingerprint["spacings"], fingerprint["shapes_after_crop"]) == pytest.approx(
        nnunet_target_spacing(fingerprint["spacings"], fingerprint["shapes_after_crop"]))
    # pooled statistics are those of the 2 × 10,000 foreground samples, recomputed independently here
    samples = np.concatenate([analyse_case(c["image"], c["label"])["samples"][0] for c in cases])
    channel = fingerprint["intensity"][0]
    assert channel["mean"] == pytest.approx(float(samples.mean()))
    assert channel["std"] == pytest.approx(float(samples.std()))
    assert channel["percentile_99_5"] == pytest.approx(float(np.percentile(samples, 99.5)))
    lesion = fingerprint["labels"]["1"]
    assert lesion["cases_present"] == 2 and lesion["frequency"] == 1.0 and lesion["name"] == "lesion"
    assert lesion["median_volume_ml"] > 0


@pytest.mark.parametrize("spacings, shapes", [
    ([[0.7, 0.7, 5.0], [0.8, 0.8, 10.0], [0.75, 0.75, 3.0], [0.7, 0.7, 6.0]],  # anisotropic: 10th percentile
     [[220, 200, 20], [240, 240, 12], [200, 210, 40], [230, 230, 18]]),
    ([[1.5, 1.5, 8.0], [1.4, 1.5, 9.0]], [[160, 160, 60], [150, 160, 70]]),  # coarse but many slices: median
    ([[1.0, 1.0, 1.0], [1.2, 0.9, 1.1], [0.8, 1.0, 1.3]], [[100, 120, 90], [80, 90, 100], [90, 100, 95]]),
])
def test_target_spacing_rule_is_nnunets(spacings, shapes):
    assert target_spacing(spacings, shapes) == pytest.approx(nnunet_target_spacing(spacings, shapes))


def test_modality_and_ct_normalisation_from_the_fingerprint(lung_ct, lung_ct_label, brain_mr, brain_mr_label):
    ct = fingerprint_cases([{"image": str(lung_ct), "label": str(lung_ct_label)}])["intensity"][0]
    mr = fingerprint_cases([{"image": str(brain_mr), "label": str(brain_mr_label)}])["intensity"][0]
    assert (ct["modality"], mr["modality"]) == ("CT", "MR")
    assert fingerprint_cases([{"image": str(lung_ct), "label": str(lung_ct_label)}],
                             modality={"0": "MRI"})["intensity"][0]["modality_source"] == "datalist"
    settings = intensity_settings(ct)
    assert intensity_settings(mr) == {"mode": "mr"}
    # the plugin's linear map a_min..a_max → b_min..b_max is clipping, then z-scoring with foreground stats
    values = np.array([-1000.0, ct["percentile_00_5"], 0.0, 40.0, ct["percentile_99_5"], 3000.0])
    mapped = settings["b_min"] + (np.clip(values, settings["a_min"], settings["a_max"]) - settings["a_min"]) * \
        (settings["b_max"] - settings["b_min"]) / (settings["a_max"] - settings["a_min"])
    expected = (np.clip(values, ct["percentile_00_5"], ct["percentile_99_5"]) - ct["mean"]) / ct["std"]
    np.testing.assert_allclose(mapped, expected, rtol=1e-4, atol=1e-4)


def test_budget_picks_the_network_size():
    fingerprint = {"spacings": [[4.5, 4.5, 4.5]] * 10, "shapes_after_crop": [[48, 48, 48]] * 10, "cases": 10,
                   "intensity": [{"modality": "MR"}]}
    small = make_plan(fingerprint, "unet", Budget("cpu", 4.0, 50.0))
    large = make_plan(fingerprint, "unet", Budget("cpu", 4.0, 500.0))
    gpu = make_plan(fingerprint, "unet", Budget("cuda", 8.0, None))
    assert small["settings"]["patch_size"] == [48, 48, 48]
    assert small["settings"]["network"] == {"channels": [8, 16, 32, 64], "strides": [2, 2, 2]}
    assert large["settings"]["network"]["channels"][0] == 32 and gpu["settings"]["network"]["channels"][0] == 32
    assert small["estimate"]["gflop_per_step"] <= 50.0
    tight = make_plan(fingerprint, "unet", Budget("cpu", 4.0, 2.0))  # the patch shrinks to fit
    assert np.prod(tight["settings"]["patch_size"]) < 48 ** 3 and tight["estimate"]["gflop_per_step"] <= 2.0
    with pytest.raises(UsageError, match="configures the plugins"):
        make_plan(fingerprint, "swinunetr", Budget("cpu", 4.0, 50.0))


def brain_cases(root: Path, count: int, labels: list[str]) -> Path:
    """``count`` real MR cases (the tests/data brain and its tumour label at a quarter of the in-plane
    resolution, 3.125 × 3.125 × 6.5 mm, cropped in x at different places, every other one stored with x
    reversed) and their ``dataset.json``."""
    import nibabel as nib
    from conftest import data_file

    image, label = (nib.load(data_file(name)) for name in ("brain1_image.nii.gz", "brain1_label.nii.gz"))
    arrays = [np.asarray(source.dataobj)[::4, ::4] for source in (image, label)]
    coarse = image.affine @ np.diag([4.0, 4.0, 1.0, 1.0])
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    listed = []
    for n in range(count):
        shift = np.eye(4)
        shift[0, 3] = n
        affine = coarse @ shift
        cropped = [a[n:n + 28] for a in arrays]
        if n % 2:
            flip = np.diag([-1.0, 1.0, 1.0, 1.0])
            flip[0, 3] = 27
            cropped, affine = [a[::-1] for a in cropped], affine @ flip
        entry = {"image": f"./imagesTr/brain{n}.nii.gz", "label": f"./labelsTr/brain{n}.nii.gz"}
        for array, key in zip(cropped, ("image", "label"), strict=True):
            nib.Nifti1Image(np.ascontiguousarray(array), affine).to_filename(root / entry[key])
        listed.append(entry)
    document = {"labels": {str(i): name for i, name in enumerate(labels)}, "modality": {"0": "MRI"},
                "training": listed[:-1], "validation": listed[-1:]}
    (root / "dataset.json").write_text(json.dumps(document))
    return root / "dataset.json"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    return brain_cases(tmp_path_factory.mktemp("plan_cases"), 3, ["background", "tumour"]).parent


def test_plan_then_train_uses_the_plan_and_records_it(planned, run_inprocess, tmp_path, single_threaded_torch):
    from mitk_builtin._segment_networks import UNetSegmenter

    from mitk.checkpoint import load_checkpoint
    from mitk.settings import check_saved_config
    from mitk.training.train import train

    code, out, err = run_inprocess("plan", planned, "--device", "cpu", "--gflop", "1", "--json")
    assert code == 0, err
    summary = json.loads(out)
    plan = read_plan(default_plan_path(planned / "dataset.json"))
    assert summary["plan"] == str(planned / "mitk-plan.json")
    # the cases' voxel size (LAS and RAS storage alike: reorienting keeps the axis order)
    assert plan["settings"]["spacing"] == pytest.approx([3.125, 3.125, 6.5])
    assert plan["settings"]["intensity"] == {"mode": "mr"} and plan["fingerprint"]["cases"] == 3
    strides = plan["settings"]["network"]["strides"]
    assert all(side % 2 ** len(strides) == 0 for side in plan["settings"]["patch_size"])
    code, _, err = run_inprocess("plan", planned, "--device", "cpu")
    assert code != 0 and "exists already" in err  # never overwrites without --overwrite

    plan["settings"]["network"]["num_res_units"] = 1  # a plan is human-editable: the edit is used
    (planned / "mitk-plan.json").write_text(json.dumps(plan))
    patch = [4 * 2 ** len(strides)] * 3
    train("segment", plugin="unet", data=planned / "dataset.json", output_dir=tmp_path / "run",
          options={"epochs": 1, "device": "cpu", "seed": 0}, overrides={"patch_size": patch, "samples_per_case": 1})
    config = load_checkpoint(tmp_path / "run" / "last.safetensors").config
    assert config["plan"]["file"] == str((planned / "mitk-plan.json").resolve())
    assert config["spacing"] == plan["settings"]["spacing"]
    assert config["network"]["channels"] == plan["settings"]["network"]["channels"]
    assert config["network"]["num_res_units"] == 1
    assert config["patch_size"] == patch  # --set / --patch-size still win over the plan
    assert config["training"]["batch_size"] == plan["training"]["batch_size"]
    with warnings.catch_warnings():  # `mitk segment` reads the recorded plan without a warning
        warnings.simplefilter("error")
        assert check_saved_config(UNetSegmenter(), config, source="run")["plan"] == config["plan"]

    with pytest.raises(UsageError, match="is for plugin 'unet'"):
        train("segment", plugin="segresnet", data=planned / "dataset.json", output_dir=tmp_path / "other",
              plan=planned / "mitk-plan.json", options={"epochs": 1, "device": "cpu"})


def test_no_plan_and_a_bad_plan(planned, tmp_path, run_inprocess):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"format": 1, "task": "segment", "plugin": "unet",
                               "settings": {"network": {"chanels": [4, 8]}}}))
    code, _, err = run_inprocess("train", "segment", "--plugin", "unet", "--data", planned / "dataset.json",
                                 "-d", tmp_path / "run", "--plan", bad)
    assert code != 0 and "chanels" in err and "Traceback" not in err
    code, _, err = run_inprocess("train", "segment", "--plugin", "unet", "--data", planned / "dataset.json",
                                 "-d", tmp_path / "run", "--plan", bad, "--no-plan")
    assert code == 2 and "contradict" in err
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="not a mitk plan"):
        read_plan(tmp_path / "x.json")


def test_plan_paths():
    assert default_plan_path(Path("/data/set/dataset.json")) == Path("/data/set/mitk-plan.json")


def test_a_data_set_without_foreground_is_refused(brain_mr, tmp_path):
    import nibabel as nib

    source = nib.load(brain_mr)
    empty = tmp_path / "empty_label.nii.gz"
    nib.Nifti1Image(np.zeros(source.shape, np.uint8), source.affine).to_filename(empty)
    with pytest.raises(InputError, match="no case has a foreground label"):
        fingerprint_cases([{"image": str(brain_mr), "label": str(empty)}])
