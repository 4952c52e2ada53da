"""2-D and colour images are first-class in ``mitk segment``: a picture gets a PNG label map (NIfTI when asked),
areas in mm² with the pixel spacing's source (DICOM, or 1 mm stated as assumed), colour reaches the plugins that
take it (threshold: its luminance) and a plugin that cannot take colour says so in one line. Real images: scikit-
image's fundus photograph and microaneurysm crop, pydicom's CT slice and pydicom-data's radiograph."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mitk_builtin._threshold import ThresholdSegmenter
from PIL import Image as Picture

from mitk.image import Image
from mitk.io.photo import luminance
from mitk.io.reader import load_image

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The greyscale microaneurysm crop as PNG, the colour fundus photograph (every 4th pixel) as JPEG."""
    import skimage.data

    folder = tmp_path_factory.mktemp("pictures")
    Picture.fromarray(skimage.data.microaneurysms()).save(folder / "micro.png")
    Picture.fromarray(skimage.data.retina()[::4, ::4]).save(folder / "fundus.jpg", quality=95)
    return {"grey": folder / "micro.png", "colour": folder / "fundus.jpg"}


def read_png(path: Path) -> np.ndarray:
    with Picture.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture)


def stats(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_greyscale_png_gives_a_png_mask_with_areas_in_mm2(pictures: dict[str, Path], tmp_path: Path,
                                                           run_inprocess) -> None:
    import mitk

    code, _, err = run_inprocess("segment", pictures["grey"], "--plugin", "threshold", "--stats",
                                 "--output-dir", tmp_path)
    assert code == 0, err
    mask = read_png(tmp_path / "micro_seg.png")
    expected = mitk.segment(str(pictures["grey"]), plugin="threshold").label_map[:, :, 0].T
    assert mask.shape == (102, 102) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)
    (row,) = stats(tmp_path / "micro_seg_stats.csv")
    assert int(row["pixels"]) == int(mask.sum()) > 0
    assert float(row["area_mm2"]) == int(row["pixels"])  # 1 mm pixels: assumed, and said so
    assert row["spacing_source"] == "unknown (1 mm assumed)" and "volume_ml" not in row
    assert "mm²" in err and "assumed" in err and " mL" not in err
    code, _, err = run_inprocess("segment", pictures["grey"], "--plugin", "threshold", "-o", tmp_path / "m.nii.gz")
    assert code == 0, err
    np.testing.assert_array_equal(load_image(tmp_path / "m.nii.gz").array[:, :, 0].T, expected)


def test_a_mask_is_never_jpeg(pictures: dict[str, Path], tmp_path: Path, run_inprocess) -> None:
    code, _, err = run_inprocess("segment", pictures["grey"], "--plugin", "threshold", "-o", tmp_path / "m.jpg")
    assert code == 2 and "never written as JPEG" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_threshold_segments_the_luminance_of_a_colour_photograph(pictures: dict[str, Path], tmp_path: Path,
                                                                run_inprocess) -> None:
    import mitk

    image = load_image(pictures["colour"])
    assert image.array.shape[-1] == 3
    grey = luminance(image.array)
    with Picture.open(pictures["colour"]) as picture:  # Pillow's own RGB → L (ITU-R BT.601, rounded to 8 bit)
        pillow = np.asarray(picture.convert("L")).T[:, :, None].astype(np.float32)
    assert np.abs(grey - pillow).max() <= 0.5 + 1e-3
    code, _, err = run_inprocess("segment", pictures["colour"], "--plugin", "threshold", "--output-dir", tmp_path)
    assert code == 0, err
    mask = read_png(tmp_path / "fundus_seg.png")
    expected = mitk.segment(Image(array=grey, affine=image.affine), plugin="threshold").label_map[:, :, 0].T
    np.testing.assert_array_equal(mask, expected)
    assert 0.3 < mask.mean() < 0.95  # the fundus disc against the black surround


class GreenNetwork(torch.nn.Module):
    """Foreground where the green channel is above 100: only possible if the colour channels arrive."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        foreground = (image[:, 1:2] > 100).float()
        return torch.cat([1.0 - foreground, foreground], dim=1)


class GreenSegmenter(ThresholdSegmenter):
    colour = "channels"
    needs_torch = True  # its network (the green channel) is what the test checks

    def default_config(self) -> dict[str, Any]:
        return {**super().default_config(), "in_channels": 3, "largest_component": False}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        return GreenNetwork()


class GreyOnly(ThresholdSegmenter):
    colour = "channels"  # one input channel (no in_channels): colour is refused


def test_colour_reaches_a_plugin_that_takes_it_and_is_refused_by_one_that_cannot(
        pictures: dict[str, Path], tmp_path: Path, run_inprocess, mitk_plugins: Any) -> None:
    from mitk import hookimpl

    class Plugins:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register("green", task="segment", factory=GreenSegmenter)
            register("grey-only", task="segment", factory=GreyOnly)

    mitk_plugins(Plugins())
    code, _, err = run_inprocess("segment", pictures["colour"], "--plugin", "green", "--output-dir", tmp_path)
    assert code == 0, err
    with Picture.open(pictures["colour"]) as picture:
        green = np.asarray(picture)[..., 1]
    np.testing.assert_array_equal(read_png(tmp_path / "fundus_seg.png"), (green > 100).astype(np.uint8))
    code, _, err = run_inprocess("segment", pictures["colour"], "--plugin", "grey-only", "--output-dir",
                                 tmp_path / "refused")
    assert code == 1
    (line,) = [line for line in err.splitlines() if "fundus.jpg" in line]
    assert "plugin grey-only cannot take colour images" in line and "RGB" in line
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").iterdir())


def test_radiograph_and_ct_slice_areas_use_the_dicom_pixel_spacing(tmp_path: Path, run_inprocess) -> None:
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    radiograph = get_testdata_file("RG3_UNCR.dcm")  # pydicom-data: a real CR without any pixel spacing
    code, _, err = run_inprocess("segment", ct, radiograph, "--plugin", "threshold", "--stats",
                                 "--output-dir", tmp_path)
    assert code == 0, err
    (ct_row,) = stats(tmp_path / "CT_small_seg_stats.csv")
    spacing = load_image(ct).spacing
    assert float(ct_row["area_mm2"]) == pytest.approx(int(ct_row["pixels"]) * spacing[0] * spacing[1], rel=1e-6)
    assert ct_row["pixel_spacing_mm"] == "0.661468×0.661468" and "unknown" not in ct_row["spacing_source"]
    (rg_row,) = stats(tmp_path / "RG3_UNCR_seg_stats.csv")
    assert rg_row["spacing_source"] == "unknown (1 mm assumed)" and float(rg_row["area_mm2"]) == int(rg_row["pixels"])
    assert load_image(tmp_path / "RG3_UNCR_seg.nii.gz").spatial_shape == (1760, 1760, 1)


def test_detect_still_runs_on_a_2d_picture(pictures: dict[str, Path], tmp_path: Path, run_inprocess) -> None:
    code, _, err = run_inprocess("detect", pictures["grey"], "--plugin", "blob", "--output-dir", tmp_path)
    assert code == 0, err
    assert list(tmp_path.glob("micro*"))


def test_the_preview_of_a_picture_is_one_panel(pictures: dict[str, Path], tmp_path: Path, run_inprocess) -> None:
    code, _, err = run_inprocess("segment", pictures["colour"], "--plugin", "threshold", "--preview",
                                 "--output-dir", tmp_path)
    assert code == 0, err
    with Picture.open(tmp_path / "fundus_seg_preview.png") as preview:
        assert preview.size == (400, 450)  # one 400-pixel panel and the legend, no empty side views
        pixels = np.asarray(preview.convert("RGB")).astype(int)
    assert (pixels[50:350, 50:350, 0] - pixels[50:350, 50:350, 2]).mean() > 10  # the red label overlay shows


def test_a_folder_of_pictures_stands_for_its_pictures_not_their_masks(pictures: dict[str, Path], tmp_path: Path,
                                                                       run_inprocess) -> None:
    from mitk.io.inputs import expand_inputs
    from mitk.taskspecs import derived_suffixes

    folder = tmp_path / "pictures"
    folder.mkdir()
    for path in pictures.values():
        (folder / path.name).write_bytes(path.read_bytes())
    code, _, err = run_inprocess("segment", folder, "--plugin", "threshold")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["fundus.jpg", "fundus_seg.png", "micro.png", "micro_seg.png"]
    assert [case.path.name for case in expand_inputs([str(folder)], derived_suffixes())] == ["fundus.jpg",
                                                                                            "micro.png"]
    code, out, err = run_inprocess("evaluate", "segment", "--pred", folder / "micro_seg.png", "--ref",
                                   folder / "micro_seg.png", "--json")
    assert code == 0, err
    assert '"dice": 1.0' in out


def test_png_label_maps_round_trip_8_and_16_bit_and_refuse_other_values(tmp_path: Path) -> None:
    from mitk.errors import InputError
    from mitk.io.photo import write_png

    labels = (np.arange(40 * 30).reshape(40, 30, 1) % 300).astype(np.uint16)
    for name, array in (("l16.png", labels), ("l8.png", (labels % 200).astype(np.uint8))):
        write_png(array, tmp_path / name)
        back = load_image(tmp_path / name).array
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)
    for bad in (labels.astype(np.float32) / 2, labels.astype(np.int16) - 1, np.zeros((4, 4, 2), np.uint8)):
        with pytest.raises(InputError):
            write_png(bad, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_a_detector_that_takes_one_channel_says_the_photo_is_colour(pictures: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    from helpers import invoke

    code, _, err = invoke(["detect", str(pictures["colour"]), "--plugin", "blob", "-d", str(tmp_path / "out")])
    assert code == 1
    assert "fundus.jpg: a colour image (RGB, 3 channels): this command takes one channel" in err
    assert "4-D" not in err
    code, _, err = invoke(["detect", str(pictures["grey"]), "--plugin", "blob", "-d", str(tmp_path / "grey")])
    assert code == 0, err
