"""Size limits: decompression bombs, zip bombs and huge DICOM headers are refused before allocation.

Bombs are built cheaply in ``tmp_path``: gzip members and full-flush deflate segments of zeros are
compressed once and repeated, so a 4 GiB payload costs a few megabytes and a fraction of a second.
Reads that could allocate run in a child process whose address space is capped at 2 GiB
(``RLIMIT_AS``): a reader that inflates or allocates what the header or archive claims dies there with
a MemoryError instead of answering with one InputError.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import series_from_nifti

from mitk.env import env_size
from mitk.errors import InputError, UsageError
from mitk.io.dicom import list_series, read_dicom
from mitk.io.limits import ChunkedMember, check_inflated_size, format_bytes
from mitk.io.nifti import read_nifti

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_SPACE = 2 << 30
SEGMENT = 64 << 20
CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from mitk.errors import InputError
from mitk.io.reader import load_image
try:
    image = load_image(sys.argv[1])
except InputError as error:
    print(json.dumps({{"error": str(error)}}))
else:
    print(json.dumps({{"shape": list(image.shape)}}))
"""


def read_in_capped_child(path: Path, **env: str) -> dict[str, object]:
    """``load_image(path)`` in a child limited to 2 GiB of address space: its JSON answer."""
    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **env,
                 "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", CHILD.format(limit=ADDRESS_SPACE), str(path)],
                            capture_output=True, text=True, env=child_env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def nifti_bytes(data: np.ndarray, **header: object) -> bytes:
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    for key, value in header.items():
        image.header[key] = value
    return image.to_bytes()


def gzip_zeros(count: int) -> bytes:
    """``count`` (a multiple of 64 MiB) zero bytes as repeated gzip members: about 1 KiB per MiB."""
    assert count % SEGMENT == 0
    return gzip.compress(bytes(SEGMENT), compresslevel=9) * (count // SEGMENT)


def deflate_zeros(count: int) -> bytes:
    """A raw deflate stream of ``count`` (a multiple of 64 MiB) zeros: one full-flush segment repeated."""
    assert count % SEGMENT == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(bytes(SEGMENT)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return segment * (count // SEGMENT) + b"\x03\x00"  # an empty final block


def write_zip(path: Path, members: list[tuple[str, int, bytes, int, int]], encrypted: tuple[str, ...] = ()) -> Path:
    """A zip written by hand: ``(name, method, stored bytes, crc, declared size)`` per member."""
    body, directory = io.BytesIO(), io.BytesIO()
    for name, method, stored, crc, size in members:
        offset = body.tell()
        encoded = name.encode()
        flags = 1 if name in encrypted else 0
        body.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0, crc, len(stored), size,
                               len(encoded), 0) + encoded + stored)
        directory.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0, crc,
                                    len(stored), size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start, length = body.tell(), directory.tell()
    path.write_bytes(body.getvalue() + directory.getvalue()
                     + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), length, start, 0))
    return path


def stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)


@pytest.fixture
def small_volume() -> np.ndarray:
    return np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10)


# ---------------------------------------------------------------------------------------------------
# Sizes from the environment
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "size"), [("1048576", 1 << 20), ("512M", 512 << 20), ("1.5G", 3 << 29),
                                            ("2GiB", 2 << 30), ("1t", 1 << 40), (" 64 kb ", 64 << 10)])
def test_env_size_reads_binary_units(monkeypatch: pytest.MonkeyPatch, text: str, size: int) -> None:
    monkeypatch.setenv("MITK_TEST_SIZE", text)
    assert env_size("MITK_TEST_SIZE", 7) == size


def test_env_size_default_and_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MITK_TEST_SIZE", raising=False)
    assert env_size("MITK_TEST_SIZE", 7) == 7
    monkeypatch.setenv("MITK_TEST_SIZE", "lots")
    with pytest.raises(UsageError, match="MITK_TEST_SIZE"):
        env_size("MITK_TEST_SIZE", 7)


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (5, 1536, 3 << 30)] == ["5 bytes", "1.5 KiB", "3.0 GiB"]


# ---------------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------------
def test_gzip_bomb_behind_a_small_header_is_refused_without_inflating(tmp_path: Path,
                                                                       small_volume: np.ndarray) -> None:
    """4 MB on disk, 4 GiB inflated: only the header and the bytes it describes are decompressed."""
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(nifti_bytes(small_volume)) + gzip_zeros(4 << 30))
    assert bomb.stat().st_size < 8 << 20
    answer = read_in_capped_child(bomb)
    assert "runs past" in str(answer.get("error")), answer
    assert str(bomb) in str(answer["error"])


def test_trailing_data_after_the_voxels_is_refused(tmp_path: Path, small_volume: np.ndarray) -> None:
    path = tmp_path / "trailing.nii.gz"
    path.write_bytes(gzip.compress(nifti_bytes(small_volume) + b"\0" * 100))
    with pytest.raises(InputError, match="runs past the 1792 bytes its header describes"):
        read_nifti(path)
    exact = tmp_path / "exact.nii.gz"
    exact.write_bytes(gzip.compress(nifti_bytes(small_volume)))
    assert np.array_equal(read_nifti(exact).array, small_volume)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_claiming_terabytes_is_refused_by_size(tmp_path: Path, suffix: str) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((32767, 32767, 32767))
    header.set_data_dtype(np.int16)
    header.set_data_offset(352)
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 1000
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    with pytest.raises(InputError, match=r"NIfTI voxel data \(64\.0 TiB\) is over the limit of 32\.0 GiB "
                                         r"\(set MITK_MAX_IMAGE_BYTES"):
        read_nifti(path)


def test_a_header_within_the_limit_but_beyond_memory_is_an_input_error(tmp_path: Path) -> None:
    """3 GiB of zeros under a 3 GiB header, read with 2 GiB of address space: one line, no MemoryError."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1536))
    header.set_data_dtype(np.int16)
    header.set_data_offset(352)
    path = tmp_path / "big.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4) + gzip_zeros(3 << 30))
    answer = read_in_capped_child(path)
    assert "not enough memory for NIfTI header and voxel data (3.0 GiB)" in str(answer.get("error")), answer
    refused = read_in_capped_child(path, MITK_MAX_IMAGE_BYTES="1G")
    assert "over the limit of 1.0 GiB" in str(refused.get("error")), refused


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_vox_offset_inside_the_header_is_refused(tmp_path: Path, suffix: str) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((2, 2, 2))
    header.set_data_dtype(np.uint8)  # vox_offset stays 0: nibabel would read the header's bytes as voxels
    raw = header.binaryblock + b"\0" * 4 + bytes(range(8))
    path = tmp_path / f"offset{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    with pytest.raises(InputError, match="vox_offset 0 points inside the 348-byte header"):
        read_nifti(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_image_limit_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                suffix: str) -> None:
    data = np.zeros((64, 64, 64), np.int16)  # 512 KiB
    path = tmp_path / f"volume{suffix}"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "256K")
    with pytest.raises(InputError, match=r"\(512\.0 KiB\) is over the limit of 256\.0 KiB"):
        read_nifti(path)
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "1M")
    assert read_nifti(path).shape == (64, 64, 64)


# ---------------------------------------------------------------------------------------------------
# Zip archives
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def series_members(anatomical_t1: Path, tmp_path: Path) -> tuple[list[tuple[str, int, bytes, int, int]], object]:
    written = series_from_nifti(anatomical_t1, tmp_path / "series", "axial", modality="MR")
    return [stored(f"study/{file.name}", file.read_bytes()) for file in written.files], written


def test_zip_member_that_inflates_to_gigabytes_is_only_sniffed(tmp_path: Path, series_members: tuple) -> None:
    """A 3 GiB member beside a series: its first bytes say it is not DICOM, and the series is read."""
    members, written = series_members
    bomb = deflate_zeros(3 << 30)
    archive = write_zip(tmp_path / "bomb.zip", [*members, ("zeros.bin", zipfile.ZIP_DEFLATED, bomb, 0, 3 << 30)])
    assert archive.stat().st_size < 8 << 20
    answer = read_in_capped_child(archive)
    assert answer.get("shape") == list(written.expected_array.shape), answer


def test_zip_member_lying_about_its_size_costs_one_chunk(tmp_path: Path) -> None:
    """A member that declares 200 bytes but inflates to 1 GiB is read in 1 MiB steps and ends at 200."""
    archive = write_zip(tmp_path / "liar.zip", [("liar.dcm", zipfile.ZIP_DEFLATED, deflate_zeros(1 << 30),
                                                 zlib.crc32(bytes(200)), 200)])
    with zipfile.ZipFile(archive) as handle, ChunkedMember(handle.open("liar.dcm")) as member:
        assert member.read(4 << 30) == bytes(200)


def test_zip_keeps_the_series_beside_a_member_over_the_limit(tmp_path: Path, series_members: tuple,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    members, written = series_members
    big = bytes(2 << 20)
    archive = write_zip(tmp_path / "mixed.zip", [*members, stored("big.dcm", big), stored("secret.dcm", big[:200]),
                                                 stored("study/~lock", b""),
                                                 ("broken.dcm", zipfile.ZIP_DEFLATED, b"\xff" * 100, 0, 1000)],
                        encrypted=("secret.dcm",))
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "1M")
    with caplog.at_level(logging.WARNING, logger="mitk.io.dicom"):
        listing = list_series(archive)
        image = read_dicom(archive)
    assert np.array_equal(image.array, written.expected_array)
    assert listing.skipped_files == 4
    assert any("big.dcm" in m and "2.0 MiB is over the limit of 1.0 MiB" in m for m in caplog.messages), \
        caplog.messages
    assert any("secret.dcm" in m and "encrypted" in m for m in caplog.messages), caplog.messages
    assert any("broken.dcm" in m and "unreadable compressed data" in m for m in caplog.messages), caplog.messages


def test_zip_whose_members_declare_too_much_is_refused(tmp_path: Path, series_members: tuple,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    members, _ = series_members
    archive = write_zip(tmp_path / "total.zip", [*members, stored("a.bin", bytes(1 << 20)),
                                                 stored("b.bin", bytes(1 << 20))])
    monkeypatch.setenv("MITK_MAX_ZIP_BYTES", "2M")
    with pytest.raises(InputError, match=r"zip members declare 2\.\d MiB uncompressed, over the limit of 2\.0 MiB"):
        list_series(archive)
    monkeypatch.setenv("MITK_MAX_ZIP_BYTES", "3M")
    assert len(list_series(archive).series) == 1


# ---------------------------------------------------------------------------------------------------
# DICOM headers that claim huge images
# ---------------------------------------------------------------------------------------------------
def rt_dose(tmp_path: Path, name: str, **attributes: object) -> Path:
    import pydicom
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    path = tmp_path / name
    dataset.save_as(path)
    return path


def test_dicom_with_huge_rows_columns_frames_is_refused_by_size(tmp_path: Path) -> None:
    path = rt_dose(tmp_path, "huge.dcm", Rows=65535, Columns=65535)
    answer = read_in_capped_child(path)
    assert "over the limit of 32.0 GiB" in str(answer.get("error")), answer
    assert "65535×65535" in str(answer["error"])


def test_dicom_volume_over_the_limit_is_refused_before_assembly(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = rt_dose(tmp_path, "dose.dcm")
    frames = read_dicom(path).array.nbytes
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", str(frames - 1))
    with pytest.raises(InputError, match="over the limit"):
        read_dicom(path)


def test_dicom_frame_count_beyond_the_file_is_refused(tmp_path: Path) -> None:
    path = rt_dose(tmp_path, "frames.dcm", Rows=1, Columns=1)
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.NumberOfFrames = 100_000_000
    dataset.GridFrameOffsetVector = [0.0, 1.0]
    dataset.save_as(path)
    with pytest.raises(InputError, match="NumberOfFrames 100000000 is more than a file of"):
        list_series(path)


def deflated_dicom(path: Path, pixel_bytes: int) -> Path:
    """CT_small's header, deflated, with a native PixelData element of ``pixel_bytes`` zeros."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.PixelData
    dataset.Rows = dataset.Columns = 4096
    dataset.NumberOfFrames = pixel_bytes // (4096 * 4096 * 2)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, dataset)
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, dataset.file_meta)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
    head += compressor.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + head + deflate_zeros(pixel_bytes))
    return path


def test_deflated_dicom_bomb_is_counted_before_pydicom_inflates_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = deflated_dicom(tmp_path / "deflated.dcm", 128 << 20)
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "64M")
    with pytest.raises(InputError, match=r"deflated DICOM dataset inflates to more than the limit of 64\.0 MiB"):
        list_series(path)
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "1G")
    assert list_series(path).series[0].size == [4096, 4096, 4]


def test_inflated_size_is_counted_in_bounded_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "1G")
    assert check_inflated_size(io.BytesIO(deflate_zeros(SEGMENT * 2)), None) == SEGMENT * 2


def test_a_malformed_limit_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             small_volume: np.ndarray) -> None:
    from helpers import invoke

    path = tmp_path / "small.nii.gz"
    path.write_bytes(gzip.compress(nifti_bytes(small_volume)))
    monkeypatch.setenv("MITK_MAX_IMAGE_BYTES", "lots")
    code, _, stderr = invoke(["info", str(path)])
    assert code == 2
    assert stderr.strip() == "mitk: error: MITK_MAX_IMAGE_BYTES='lots' is not a size in bytes (e.g. 512M, 32G)"
