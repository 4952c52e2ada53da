"""Real radiographs with broken Image Pixel or spacing attributes are refused or warned about, never read
silently: pydicom-data's CR radiographs RG1 (chest) and RG3 (tibia), with one attribute edited by pydicom."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from helpers import invoke

from mitk.checkpoint import save_checkpoint
from mitk.io.dicom import read_dicom


def pydicom_data(name: str) -> Path:
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"pydicom-data's {name} is not available")
    return Path(str(found))


def edited(name: str, folder: Path, output: str, edit: Callable[[pydicom.Dataset], None]) -> Path:
    dataset = pydicom.dcmread(pydicom_data(name))
    edit(dataset)
    path = folder / output
    dataset.save_as(path)
    return path


def set_attribute(keyword: str, value: Any) -> Callable[[pydicom.Dataset], None]:
    return lambda dataset: setattr(dataset, keyword, value)


REFUSED = {
    "palette_without_table.dcm": (set_attribute("PhotometricInterpretation", "PALETTE COLOR"),
                                  "PhotometricInterpretation is PALETTE COLOR but RedPaletteColorLookupTableDescriptor "
                                  "is missing"),
    "bits_stored_0.dcm": (set_attribute("BitsStored", 0), "BitsStored 0 is not a bit depth between 1 and "
                                                         "BitsAllocated 16"),
    "bits_stored_17.dcm": (set_attribute("BitsStored", 17), "BitsStored 17 is not a bit depth"),
}


@pytest.mark.parametrize("output", sorted(REFUSED))
def test_broken_pixel_attributes_are_refused_in_one_line(output: str, tmp_path: Path, mitk_run: Any) -> None:
    edit, message = REFUSED[output]
    path = edited("RG3_UNCR.dcm", tmp_path, output, edit)
    target = tmp_path / "out.nii.gz"
    done = mitk_run("convert", path, target)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mitk: error: {output}: {message}"), done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("out*"))  # no partial files


def test_one_broken_radiograph_does_not_stop_a_batch(tmp_path: Path) -> None:
    """``mitk classify`` on a broken and a sound radiograph: the broken one fails with its line, the other is
    classified, and the exit status says "partial" (3)."""
    from mitk.plugin_manager import get_registry

    plugin = get_registry().get("resnet", "classify").load()
    config = plugin.resolve_config({"class_names": ["a", "b"], "spatial_dims": 2, "in_channels": 1,
                                    "image_size": [64, 64]})
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "resnet.safetensors", plugin.network(config).state_dict(), task="classify",
                              plugin="resnet", plugin_version="0", config=config)
    broken = edited("RG3_UNCR.dcm", tmp_path, "bits_stored_0.dcm", set_attribute("BitsStored", 0))
    sound = pydicom_data("RG3_UNCR.dcm")
    code, stdout, stderr = invoke(["classify", str(broken), str(sound), "--weights", str(weights), "--json"])
    assert code == 3, stderr
    cases = {Path(c["input"]).name: c for c in json.loads(stdout)["cases"]}
    assert cases["RG3_UNCR.dcm"]["status"] == "ok"
    assert cases["bits_stored_0.dcm"]["status"] == "failed"
    assert "BitsStored 0" in cases["bits_stored_0.dcm"]["error"]


SPACINGS = {
    "negative": (["-0.1", "0.1"], "'-0.1\\0.1'"),
    "nan": (["NaN", "0.1"], "'NaN\\0.1'"),
}


@pytest.mark.parametrize("kind", sorted(SPACINGS))
def test_negative_or_nan_pixel_spacing_is_warned_about(kind: str, tmp_path: Path) -> None:
    value, shown = SPACINGS[kind]
    path = edited("RG3_UNCR.dcm", tmp_path, f"{kind}.dcm", set_attribute("PixelSpacing", value))
    target = tmp_path / f"{kind}.nii.gz"
    code, _, stderr = invoke(["convert", str(path), str(target)])
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("mitk: warning:")]
    assert warnings == [f"mitk: warning: {kind}.dcm: PixelSpacing {shown} is not a pixel spacing (two positive "
                        "numbers); 1 mm assumed"]
    sidecar = json.loads(target.with_name(f"{kind}.json").read_text())
    assert sidecar["spacing_source"] == "unknown (1 mm assumed)"


def test_a_broken_pixel_spacing_falls_back_to_imager_pixel_spacing_with_a_warning(tmp_path: Path) -> None:
    def edit(dataset: pydicom.Dataset) -> None:
        dataset.PixelSpacing = ["-0.143", "-0.143"]
        dataset.ImagerPixelSpacing = ["0.15", "0.16"]  # row spacing, column spacing

    path = edited("RG3_UNCR.dcm", tmp_path, "imager.dcm", edit)
    code, _, stderr = invoke(["info", str(path), "--json"])
    assert code == 0, stderr
    assert "mitk: warning: imager.dcm: PixelSpacing '-0.143\\-0.143' is not a pixel spacing (two positive " \
           "numbers); ImagerPixelSpacing used instead" in stderr
    image = read_dicom(path)
    assert np.allclose(np.abs(np.diag(image.affine))[:2], [0.16, 0.15])  # i runs along columns


def test_the_real_zero_spacing_of_rg1_is_warned_about(tmp_path: Path) -> None:
    """RG1's header really says PixelSpacing 0.000\\0.000: read with 1 mm, as before, but no longer silently."""
    code, _, stderr = invoke(["info", str(pydicom_data("RG1_UNCR.dcm"))])
    assert code == 0, stderr
    assert "mitk: warning: RG1_UNCR.dcm: PixelSpacing '0.000\\0.000' is not a pixel spacing" in stderr


def test_a_sound_radiograph_reads_without_warnings(tmp_path: Path) -> None:
    """RG3 has no spacing at all, and an empty PixelSpacing (a type 2 element: "unknown") is no error either."""
    code, _, stderr = invoke(["info", str(pydicom_data("RG3_UNCR.dcm"))])
    assert code == 0 and "warning" not in stderr, stderr
    empty = edited("RG3_UNCR.dcm", tmp_path, "empty.dcm", set_attribute("PixelSpacing", None))
    assert pydicom.dcmread(empty)["PixelSpacing"].is_empty
    code, _, stderr = invoke(["info", str(empty)])
    assert code == 0 and "warning" not in stderr, stderr


def test_palette_colour_with_its_tables_reads_as_rgb() -> None:
    """pydicom's real PALETTE COLOR ultrasound: indices through its tables, as pydicom's apply_color_lut gives."""
    from pydicom.pixels import apply_color_lut

    path = pydicom_data("OBXXXX1A.dcm")
    dataset = pydicom.dcmread(path)
    expected = apply_color_lut(dataset.pixel_array, dataset)  # rows × columns × 3
    image = read_dicom(path)
    assert image.array.shape == (dataset.Columns, dataset.Rows, 1, 3)
    assert np.array_equal(image.array[:, :, 0, :], np.swapaxes(expected, 0, 1))
    code, stdout, stderr = invoke(["info", str(path), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["shape"] == [800, 600, 1, 3]


def test_palette_colour_rgb_is_bounded_like_any_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 480 KB of indices pass a 1 MB limit; the 2.7 MiB of RGB they expand to is refused in one line."""
    path = pydicom_data("OBXXXX1A.dcm")
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "1000000")
    code, _, stderr = invoke(["info", str(path)])
    assert code == 1 and "RGB of 1 palette colour frame(s) of 800×600 uint8" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1
