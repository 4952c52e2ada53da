"""Classifier inputs: PNG/JPEG pictures (scikit-image's real fundus photographs), MONOCHROME1 radiographs
(pydicom-data's real CR images), and the 2-D/3-D and channel checks of ``network_input``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.errors import InputError
from mitk.io.reader import load_image
from mitk.tasks.classify.runner import display_values, network_input


@pytest.fixture(scope="module")
def fundus_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's real colour fundus photograph (1411×1411×3), shrunk to 256² for speed."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "retina.png"
    Image.fromarray(data.retina()).resize((256, 256)).save(path)
    return path


@pytest.fixture(scope="module")
def microaneurysms_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's real 102×102 green-channel fundus crop with microaneurysms, as a greyscale JPEG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "microaneurysms.jpg"
    Image.fromarray(data.microaneurysms()).save(path, quality=95)
    return path


def radiograph(name: str) -> Path:
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} is not available (pip install pydicom-data)")
    return Path(str(found))


def test_colour_png_reads_as_columns_rows_channels(fundus_png: Path) -> None:
    from PIL import Image

    image = load_image(fundus_png)
    pixels = np.asarray(Image.open(fundus_png))
    assert image.array.shape == (256, 256, 1, 3)
    assert np.array_equal(image.array[:, :, 0, :], np.transpose(pixels, (1, 0, 2)))
    assert image.meta["format"] == "photo" and image.meta["photo"]["channels"] == 3
    assert np.allclose(np.diag(image.affine), [-1, -1, 1, 1])


def test_greyscale_jpeg_and_16_bit_png(microaneurysms_jpeg: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = load_image(microaneurysms_jpeg)
    assert image.array.shape == (102, 102, 1)
    sixteen = tmp_path / "sixteen.png"
    values = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(values).save(sixteen)
    read = load_image(sixteen)
    assert read.array.shape == (40, 30, 1) and read.array.max() == values.max()
    assert np.array_equal(read.array[:, :, 0].T, values)


def test_unreadable_picture_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="not a readable PNG or JPEG") as caught:
        load_image(broken)
    assert str(caught.value.path) == str(broken)


def test_monochrome1_radiograph_is_inverted_for_the_network(tmp_path: Path) -> None:
    """RG3 is a real MONOCHROME1 tibia CR: the network must see bone bright, exactly as the same pixels
    stored as MONOCHROME2 with inverted values."""
    import pydicom

    path = radiograph("RG3_UNCR.dcm")
    image = load_image(path)
    stored = np.asarray(image.array, dtype=np.float32)
    shown = display_values(image)
    assert np.allclose(shown, stored.min() + stored.max() - stored)
    dataset = pydicom.dcmread(path)
    dataset.PhotometricInterpretation = "MONOCHROME2"
    pixels = dataset.pixel_array
    dataset.PixelData = (int(pixels.min()) + int(pixels.max()) - pixels.astype(np.int32)).astype(
        pixels.dtype).tobytes()
    flipped = tmp_path / "rg3_monochrome2.dcm"
    dataset.save_as(flipped)
    one = network_input(load_image(path), spatial_dims=2, in_channels=1)
    two = network_input(load_image(flipped), spatial_dims=2, in_channels=1)
    assert tuple(one.shape) == (1, 1760, 1760)
    assert np.allclose(one.numpy(), two.numpy())


def test_chest_radiograph_with_zero_pixel_spacing_reads() -> None:
    image = load_image(radiograph("RG1_UNCR.dcm"))
    tensor = network_input(image, spatial_dims=2, in_channels=1)
    assert tuple(tensor.shape) == (1, 1841, 1955)


def test_dimension_and_channel_checks(fundus_png: Path, brain_mr: Path) -> None:
    grey = network_input(load_image(fundus_png), spatial_dims=2, in_channels=1)
    assert tuple(grey.shape) == (1, 256, 256)
    colour = network_input(load_image(fundus_png), spatial_dims=2, in_channels=3)
    weights = np.asarray([0.299, 0.587, 0.114])
    assert np.allclose(grey.numpy()[0], np.tensordot(colour.numpy(), weights, axes=([0], [0])), atol=1e-3)
    with pytest.raises(InputError, match="the model takes 2-D inputs"):
        network_input(load_image(brain_mr), spatial_dims=2, in_channels=1)
    with pytest.raises(InputError, match="a 2-D image but the model takes 3-D"):
        network_input(load_image(fundus_png), spatial_dims=3, in_channels=1)


def test_classify_csv_never_overwrites_an_input(fundus_png: Path, tmp_path: Path) -> None:
    before = fundus_png.read_bytes()
    code, stdout, stderr = invoke(["classify", str(fundus_png), "--weights", str(tmp_path / "none.safetensors"),
                                   "--csv", str(fundus_png), "--overwrite"])
    assert code == 2 and stdout == ""
    assert "refusing to write over the input" in stderr and "Traceback" not in stderr
    assert fundus_png.read_bytes() == before
