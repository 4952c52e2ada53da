"""The Python API (``mitk.load``, ``model.<task>``, ``mitk.<task>``) on real images: the same files as the
CLI byte for byte, in-memory inputs with the file's geometry, one load for many images, typed errors."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import invoke

import mitk
from mitk.errors import InputError, OutputExistsError, PluginError, UsageError
from mitk.tasks import ClassificationPlugin, DetectionPlugin, RegistrationPlugin
from mitk.types import Image, SegmentationResult

pytestmark = pytest.mark.usefixtures("single_threaded_torch")

TINY_UNET = {"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0],
             "network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}}


@pytest.fixture(scope="module")
def unet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, seeded, untrained unet saved as a mitk checkpoint (what ``mitk train`` writes)."""
    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("unet", "segment").load()
    config = plugin.resolve_config(TINY_UNET)
    torch.manual_seed(0)
    network = plugin.network(config)
    path = tmp_path_factory.mktemp("weights") / "best.safetensors"
    return save_checkpoint(path, network.state_dict(), task="segment", plugin="unet", plugin_version=None,
                           config=config)


@pytest.fixture(scope="module")
def unet(unet_weights: Path) -> mitk.Model:
    return mitk.load(weights=unet_weights, device="cpu")


# ---------------------------------------------------------------------------------------------------
# Small plugins of the other tasks, live for a test (mitk.testing's mitk_plugins fixture)
# ---------------------------------------------------------------------------------------------------


class MeanIntensity(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        mean = batch.float().mean(dim=(1, 2, 3, 4))
        return torch.stack([-mean / 100, mean / 100], dim=1)


class Brightness(ClassificationPlugin):
    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"class_names": ["dark", "bright"], "in_channels": 1}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        return MeanIntensity()

    def inference_transforms(self, config: dict[str, Any]) -> Any:
        return lambda data: data


class BrightestBox(DetectionPlugin):
    """One box around the brightest voxel."""

    needs_weights = False
    trainable = False

    def inference_transforms(self, config: dict[str, Any]) -> Any:
        return lambda data: data

    def detect(self, image: torch.Tensor, model: Any, config: dict[str, Any]) -> Any:
        i, j, k = np.unravel_index(int(torch.argmax(image[0])), tuple(image.shape[1:]))
        return np.array([[i - 2, j - 2, k - 1, i + 3, j + 3, k + 2]], float), np.array([0.9]), np.array([1])


class Shift(RegistrationPlugin):
    """Moves 4 mm to the right: a known matrix."""

    needs_weights = False
    trainable = False

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any]) -> Any:
        matrix = np.eye(4)
        matrix[0, 3] = 4.0
        return matrix, None


class ApiTestPlugins:
    @staticmethod
    @mitk.hookimpl
    def mitk_register_plugins(register: Any) -> None:
        register("api-brightness", task="classify", factory=Brightness)
        register("api-brightest", task="detect", factory=BrightestBox)
        register("api-shift", task="register", factory=Shift)


@pytest.fixture
def api_plugins(mitk_plugins: Any) -> None:
    mitk_plugins(ApiTestPlugins())


def copies(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in paths]


# ---------------------------------------------------------------------------------------------------
# The API writes the CLI's files, byte for byte
# ---------------------------------------------------------------------------------------------------


def test_segment_files_equal_the_cli_files(tmp_path: Path, unet_weights: Path, unet: mitk.Model,
                                           brain_mr: Path, lung_ct: Path, anatomical_t1: Path) -> None:
    inputs = copies([brain_mr, lung_ct, anatomical_t1], tmp_path / "in")
    code, _, err = invoke(["segment", *map(str, inputs), "--weights", str(unet_weights), "--device", "cpu",
                           "--probabilities", "--output-dir", str(tmp_path / "cli")])
    assert code == 0, err
    api = tmp_path / "api"
    for path, result in zip(inputs, unet.segment(inputs, probabilities=True), strict=True):
        stem = path.name.split(".")[0]
        result.save(api / f"{stem}_seg.nii.gz", probabilities=api / f"{stem}_seg_prob.nii.gz")
        for name in (f"{stem}_seg.nii.gz", f"{stem}_seg_prob.nii.gz"):
            assert (api / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert len(set(np.unique(result.label_map))) == 2  # an untrained network still labels both classes
    # to_nifti is the image save() writes
    written = nib.load(api / "anatomical_seg.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj), result.to_nifti().get_fdata().astype(np.uint8))
    assert written.header.get_intent()[0] == "label"


def test_threshold_one_shot_equals_the_cli(tmp_path: Path, lung_ct: Path) -> None:
    (source,) = copies([lung_ct], tmp_path / "in")
    code, _, err = invoke(["segment", str(source), "--plugin", "threshold", "-o", str(tmp_path / "cli.nii.gz")])
    assert code == 0, err
    mitk.segment(source, plugin="threshold").save(tmp_path / "api.nii.gz")
    assert (tmp_path / "api.nii.gz").read_bytes() == (tmp_path / "cli.nii.gz").read_bytes()


@pytest.mark.usefixtures("api_plugins")
def test_classify_and_detect_records_equal_the_cli(tmp_path: Path, brain_mr: Path, lung_ct: Path) -> None:
    inputs = copies([brain_mr, lung_ct], tmp_path / "in")
    for task, plugin, suffix in (("classify", "api-brightness", "_class"), ("detect", "api-brightest", "_boxes")):
        code, _, err = invoke([task, *map(str, inputs), "--plugin", plugin, "-d", str(tmp_path / task)])
        assert code == 0, err
        model = mitk.load(plugin)
        assert model.task.value == task
        for path in inputs:
            result = getattr(model, task)(path)
            name = path.name.split(".")[0] + suffix + ".json"
            result.save(tmp_path / "api" / name)
            cli = json.loads((tmp_path / task / name).read_text())
            assert "provenance" in cli  # the batch's record says how it was made; result.save() writes the result
            cli.pop("provenance")
            assert json.loads((tmp_path / "api" / name).read_text()) == cli
    boxes = mitk.detect(inputs[1], plugin="api-brightest")
    assert boxes.to_numpy().shape == (1, 6) and boxes.boxes_world.shape == (1, 6)
    assert mitk.classify(inputs[1], plugin="api-brightness").to_numpy().sum() == pytest.approx(1.0)


@pytest.mark.usefixtures("api_plugins")
def test_register_files_equal_the_cli(tmp_path: Path, brain_mr: Path, anatomical_t1: Path) -> None:
    fixed, moving = copies([anatomical_t1, brain_mr], tmp_path / "in")
    code, _, err = invoke(["register", str(fixed), str(moving), "--plugin", "api-shift",
                           "-o", str(tmp_path / "cli.nii.gz"), "--transform", str(tmp_path / "cli.json")])
    assert code == 0, err
    result = mitk.load("api-shift").register(fixed, moving)
    result.save(tmp_path / "api.nii.gz", transform=tmp_path / "api.json")
    assert (tmp_path / "api.nii.gz").read_bytes() == (tmp_path / "cli.nii.gz").read_bytes()
    assert (tmp_path / "api.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert np.array_equal(result.warped.affine, nib.load(fixed).affine)
    assert result.to_sitk().GetSize() == nib.load(fixed).shape
    with pytest.raises(UsageError, match="refusing to write over the input"):
        result.save(fixed, overwrite=True)  # the fixed image is an input of the call too


# ---------------------------------------------------------------------------------------------------
# In-memory inputs: the geometry of the file
# ---------------------------------------------------------------------------------------------------


def test_in_memory_inputs_give_the_file_geometry(unet: mitk.Model, lung_ct: Path, mitk_volume: Path) -> None:
    """LPS CT and an oblique volume, as nibabel, SimpleITK and MONAI MetaTensor images."""
    from monai.data import MetaTensor
    from monai.transforms import LoadImage

    for path in (lung_ct, mitk_volume):
        expected = unet.segment(path)
        nibabel_image = nib.load(path)
        itk_image = sitk.ReadImage(str(path))
        meta = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
        lps = MetaTensor(meta.as_tensor(), affine=torch.as_tensor(np.diag([-1.0, -1, 1, 1]) @ nibabel_image.affine),
                         meta={"space": "LPS"})
        for source in (nibabel_image, itk_image, meta, lps):
            result = unet.segment(source)
            np.testing.assert_allclose(result.affine, expected.affine, atol=1e-4)
            assert np.array_equal(result.label_map, expected.label_map), type(source).__name__
            assert result.grid is not None
            assert result.grid.path == (path if source is nibabel_image or source is meta else None)
        # back to SimpleITK: the input's own origin, spacing and direction (LPS)
        label_image = unet.segment(itk_image).to_sitk()
        assert label_image.GetSize() == itk_image.GetSize()
        np.testing.assert_allclose(label_image.GetOrigin(), itk_image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(label_image.GetSpacing(), itk_image.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(label_image.GetDirection(), itk_image.GetDirection(), atol=1e-6)
        assert np.array_equal(sitk.GetArrayFromImage(label_image).transpose(2, 1, 0), expected.label_map)
    assert expected.to_nifti().header["sform_code"] == nib.load(mitk_volume).header["sform_code"]


def test_a_simpleitk_image_made_in_memory(unet: mitk.Model) -> None:
    """An oblique LPS image built in SimpleITK, never on disk: RAS affine = flip · (direction · spacing)."""
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.normal(100, 20, (20, 24, 28)).astype(np.float32))  # (k, j, i)
    angle = np.deg2rad(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((1.5, 2.0, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    result = unet.segment(image)
    assert result.label_map.shape == (28, 24, 20)
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-1, -1, 1]) @ direction @ np.diag([1.5, 2.0, 3.0])
    expected[:3, 3] = [-10.0, 20.0, 30.0]
    np.testing.assert_allclose(result.affine, expected, atol=1e-9)
    # a voxel's world position agrees with SimpleITK's own (LPS → RAS)
    world = np.array(image.TransformIndexToPhysicalPoint((3, 5, 7))) * [-1, -1, 1]
    np.testing.assert_allclose(result.affine @ [3, 5, 7, 1], [*world, 1], atol=1e-9)


def test_an_array_needs_its_affine(unet: mitk.Model, anatomical_t1: Path) -> None:
    image = nib.load(anatomical_t1)
    array = np.asarray(image.dataobj)
    with pytest.raises(UsageError, match="affine="):
        unet.segment(array)
    with pytest.raises(UsageError, match="4x4"):
        unet.segment(array, affine=np.eye(3))
    with pytest.raises(UsageError, match="own geometry"):
        unet.segment(image, affine=image.affine)
    result = unet.segment(array, affine=image.affine)
    assert np.array_equal(result.label_map, unet.segment(anatomical_t1).label_map)
    assert np.array_equal(result.affine, image.affine)


# ---------------------------------------------------------------------------------------------------
# Load once, run many
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fifty_images(tmp_path_factory: pytest.TempPathFactory, anatomical_t1: Path) -> list[Path]:
    """50 small crops of the real T1, each on its own grid."""
    folder = tmp_path_factory.mktemp("fifty")
    image = nib.load(anatomical_t1)
    array = np.asarray(image.dataobj)
    paths = []
    for n in range(50):
        i, j = n % 10, n // 10
        crop = array[i:i + 16, j:j + 16, 4:20]
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [i, j, 4] + image.affine[:3, 3]
        paths.append(folder / f"crop_{n:02d}.nii.gz")
        nib.save(nib.Nifti1Image(crop, affine), paths[-1])
    return paths


@pytest.fixture
def count_loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    import mitk.runner.model as runner_model
    import mitk.tasks.segment.runner as runner_segment

    counts = {"load_model": 0, "runner": 0}
    load_model, runner_init = runner_model.load_model, runner_segment.SegmentationRunner.__init__

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        counts["load_model"] += 1
        return load_model(*args, **kwargs)

    def counted_init(self: Any, *args: Any, **kwargs: Any) -> None:
        counts["runner"] += 1
        runner_init(self, *args, **kwargs)

    monkeypatch.setattr(runner_model, "load_model", counted_load)
    monkeypatch.setattr(runner_segment.SegmentationRunner, "__init__", counted_init)
    return counts


def test_fifty_paths_with_one_load(unet_weights: Path, fifty_images: list[Path], count_loads: dict[str, int]
                                   ) -> None:
    model = mitk.load(weights=unet_weights, device="cpu")
    results = model.segment(fifty_images)
    assert count_loads == {"load_model": 1, "runner": 1}
    assert len(results) == 50
    for path, result in zip(fifty_images, results, strict=True):
        assert result.grid is not None and result.grid.path == path
        np.testing.assert_array_equal(result.affine, nib.load(path).affine)
    # one by one through the same model: still one load, the same label maps
    for path, result in zip(fifty_images[:5], results[:5], strict=True):
        assert np.array_equal(model.segment(path).label_map, result.label_map)
    # a list to the one-shot helper: one load for all
    assert len(mitk.segment(fifty_images[:10], weights=unet_weights, device="cpu")) == 10
    assert count_loads == {"load_model": 2, "runner": 2}


def test_an_iterator_streams_and_workers_keep_the_order(unet: mitk.Model, fifty_images: list[Path]) -> None:
    read: list[Path] = []

    def paths() -> Iterator[Path]:
        for path in fifty_images[:12]:
            read.append(path)
            yield path

    stream = unet.segment(paths())
    assert isinstance(stream, Iterator) and read == []  # nothing read before it is asked for
    first = next(stream)
    assert read == fifty_images[:1] and first.grid is not None and first.grid.path == fifty_images[0]
    sequential = [first, *stream]
    parallel = list(unet.segment(iter(fifty_images[:12]), workers=3))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pooled = unet.segment(fifty_images[:12], executor=pool)
        assert pool.submit(lambda: "still open").result() == "still open"  # the caller's pool is left running
    for one, other, third in zip(sequential, parallel, pooled, strict=True):
        assert one.grid is not None and other.grid is not None and one.grid.path == other.grid.path
        assert third.grid is not None and third.grid.path == one.grid.path
        assert np.array_equal(one.label_map, other.label_map) and np.array_equal(one.label_map, third.label_map)
    with pytest.raises(UsageError, match="workers= must be a positive integer"):
        unet.segment(fifty_images[:2], workers=0)


def test_one_model_shared_by_threads(unet: mitk.Model, fifty_images: list[Path]) -> None:
    """The documented contract: calls from many threads are safe and give the sequential results."""
    expected = {path: unet.segment(path).label_map for path in fifty_images[:8]}
    got: dict[Path, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(paths: list[Path]) -> None:
        try:
            for path in paths:
                got[path] = unet.segment(path).label_map
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(fifty_images[n:8:4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[path], expected[path]) for path in expected)


# ---------------------------------------------------------------------------------------------------
# Errors: typed, one line, no SystemExit, no printing
# ---------------------------------------------------------------------------------------------------


def test_errors_are_typed_exceptions(tmp_path: Path, unet: mitk.Model, anatomical_t1: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="no such file"):
        unet.segment(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"bad\.nii\.gz"):
        unet.segment([anatomical_t1, tmp_path / "bad.nii.gz"])
    with pytest.raises(PluginError, match="unknown plugin 'nope'"):
        mitk.load("nope")
    with pytest.raises(PluginError, match="needs trained weights"):
        mitk.load("unet")
    with pytest.raises(UsageError, match="plugin name or weights"):
        mitk.load()
    with pytest.raises(UsageError, match=r"is a segment plugin: call model.segment"):
        unet.classify(anatomical_t1)
    with pytest.raises(UsageError, match="unknown option"):
        unet.segment(anatomical_t1, probabilites=True)
    with pytest.raises(UsageError, match="one image"):
        unet.segment(anatomical_t1, anatomical_t1)
    with pytest.raises(UsageError, match=r"cannot use a builtins\.dict"):
        unet.segment({"image": anatomical_t1})
    for error in (InputError, PluginError, UsageError):
        assert issubclass(error, mitk.errors.MitkError) and not issubclass(error, SystemExit)
    assert capsys.readouterr() == ("", "")


def test_save_is_atomic_and_never_overwrites(tmp_path: Path, unet: mitk.Model, anatomical_t1: Path) -> None:
    (source,) = copies([anatomical_t1], tmp_path)
    result = unet.segment(source)
    before = source.read_bytes()
    with pytest.raises(UsageError, match="refusing to write over the input"):
        result.save(source, overwrite=True)
    assert source.read_bytes() == before
    target = result.save(tmp_path / "out" / "labels.nii.gz")
    with pytest.raises(OutputExistsError, match=r"exists already \(pass overwrite=True"):
        result.save(target)
    with pytest.raises(UsageError, match="no probabilities"):
        result.save(tmp_path / "other.nii.gz", probabilities=tmp_path / "prob.nii.gz")
    with pytest.raises(UsageError, match="writes NIfTI"):
        result.save(tmp_path / "labels.dcm")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["anatomical.nii", "labels.nii.gz"]
    result.save(target, overwrite=True)


def test_warnings_go_through_warnings_and_logging(tmp_path: Path, unet_weights: Path, lung_ct: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint's unknown setting: a SettingsWarning (a MitkWarning); a resampled DICOM series: a log record.
    Neither is printed."""
    from dicom_factory import write_series

    from mitk.checkpoint import load_checkpoint, save_checkpoint
    from mitk.settings import SettingsWarning

    saved = load_checkpoint(unet_weights)
    odd = save_checkpoint(tmp_path / "odd.safetensors", saved.state_dict, task="segment", plugin="unet",
                          plugin_version=None, config={**saved.config, "from_the_future": 1})
    with pytest.warns(SettingsWarning, match="from_the_future"):
        mitk.load(weights=odd, device="cpu")
    image = nib.load(lung_ct)
    write_series(np.asarray(image.dataobj)[40:72, 40:72, :10], image.affine, tmp_path / "gap", drop=(4,))
    with pytest.raises(mitk.errors.GeometryError, match="allow-resample"):
        mitk.segment(tmp_path / "gap", plugin="threshold")
    with caplog.at_level("WARNING"):
        result = mitk.segment(tmp_path / "gap", plugin="threshold", allow_resample=True)
    assert any("resampled" in record.getMessage() for record in caplog.records)
    assert result.label_map.shape[:2] == (32, 32)
    assert capsys.readouterr() == ("", "")
    # in a program that set up no logging, the record is not printed either (Python's last-resort handler would)
    code = (f"import mitk, logging; r = mitk.segment({str(tmp_path / 'gap')!r}, plugin='threshold', "
            "allow_resample=True); logging.getLogger('mitk.io.dicom').warning('x'); print(r.label_map.shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("(32, 32"), done.stderr
    assert "resampled" not in done.stderr and "x\n" not in done.stderr


def test_results_are_the_typed_results(unet: mitk.Model, anatomical_t1: Path) -> None:
    result = unet.segment(anatomical_t1)
    assert isinstance(result, SegmentationResult)
    assert result.to_numpy() is result.label_map
    assert result.plugin == "unet" and result.labels == {0: "background", 1: "foreground"}
    assert result.grid is not None and result.grid.array.strides == (0, 0, 0)  # the input's voxels are not kept
    assert [row["label"] for row in result.statistics()] == [1]


def test_a_dicom_folder_with_series_equals_the_cli(tmp_path: Path, lung_ct: Path) -> None:
    """A folder of two real-CT series: ``series=`` picks one, as ``--series`` does; the same label map file."""
    from dicom_factory import write_series

    image = nib.load(lung_ct)
    array = np.asarray(image.dataobj)[32:96, 32:96, :12]
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ [32, 32, 0] + image.affine[:3, 3]
    folder = tmp_path / "dicom"
    write_series(array, affine, folder / "a", modality="CT", description="first", series_number=1)
    write_series(array[::-1], affine @ np.diag([-1.0, 1, 1, 1]) @ np.array(
        [[1, 0, 0, -(array.shape[0] - 1)], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), folder / "b",
        modality="CT", description="second", series_number=2)
    code, _, err = invoke(["segment", str(folder), "--plugin", "threshold", "--series", "1",
                           "-o", str(tmp_path / "cli.nii.gz")])
    assert code == 0, err
    model = mitk.load("threshold")
    model.segment(folder, series="1").save(tmp_path / "api.nii.gz")
    assert (tmp_path / "api.nii.gz").read_bytes() == (tmp_path / "cli.nii.gz").read_bytes()
    first = model.segment(folder, series="0")
    np.testing.assert_allclose(first.affine, affine, atol=1e-3)
    assert first.label_map.shape == array.shape
    code, _, err = invoke(["segment", str(folder), "--plugin", "threshold", "-o", str(tmp_path / "x.nii.gz")])
    with pytest.raises(mitk.errors.MitkError) as refused:
        model.segment(folder)
    assert code != 0 and str(refused.value) in err  # the CLI's message, word for word
    with pytest.raises(UsageError, match="series= picks a DICOM series"):
        model.segment(image, series="0")


def test_errors_skip_goes_on_past_a_bad_input_with_a_warning(tmp_path: Path, unet: mitk.Model,
                                                             fifty_images: list[Path]) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    inputs = [fifty_images[0], bad, fifty_images[1]]
    with pytest.raises(InputError, match=r"bad\.nii\.gz"):
        unet.segment(inputs)
    with pytest.warns(mitk.errors.MitkWarning, match=r"skipped .*bad\.nii\.gz.*gzip") as caught:
        results = unet.segment(inputs, errors="skip")
    assert len(caught) == 1
    assert [r.grid.path for r in results] == [fifty_images[0], fifty_images[1]]
    with pytest.warns(mitk.errors.MitkWarning):
        assert len(list(unet.segment(iter(inputs), errors="skip", workers=2))) == 2
    with pytest.raises(UsageError, match="errors="):
        unet.segment(inputs, errors="ignore")
    with pytest.raises(UsageError, match="for a list or an iterator"):
        unet.segment(fifty_images[0], errors="skip")


@pytest.mark.usefixtures("api_plugins")
def test_channels_where_the_task_table_allows_them(unet: mitk.Model, anatomical_t1: Path) -> None:
    """``image_channels`` of the task table: classification takes a 4-D image (channels last), as ``mitk
    classify`` does; segmentation refuses it with the CLI's message."""
    image = nib.load(anatomical_t1)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    two_channels = np.stack([volume, volume * 2], axis=-1)
    result = mitk.classify(two_channels, affine=image.affine, plugin="api-brightness",
                           settings={"in_channels": 2})
    assert result.class_names == ["dark", "bright"]
    with pytest.raises(InputError, match="expected a 3-D volume, got 4-D"):
        unet.segment(two_channels, affine=image.affine)
