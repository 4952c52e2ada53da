"""Decoding DICOM pixel data into stored values.

Native (uncompressed) little- and big-endian data is read straight from the file into the caller's
preallocated array, using the pixel data offset found while reading the header; everything else
(JPEG, JPEG-LS, JPEG 2000, RLE, deflated files, zip members) goes through ``pydicom.pixels``, whose
compressed-data decoders come from the pylibjpeg plugins (``pip install "mitk[dicom]"``).

Every path ends in :func:`mask_unused_bits`: the bits above BitsStored, which PS3.5 §8.1.1 lets a writer
fill with anything, are cleared (unsigned data) or replaced by the sign bit (PixelRepresentation 1), as
pydicom's ``pixel_array`` and SimpleITK do. Values are never inverted: MONOCHROME1 (higher is darker)
keeps its stored values, the photometric interpretation only says how to display them. :func:`check_layout`
refuses headers whose values cannot be read as meant (BitsStored 0, PALETTE COLOR without its tables);
:func:`apply_palette` turns palette indices into RGB.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.errors import InputError
from mitk.io.dicom.header import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, ParsedHeader
from mitk.io.limits import read_member

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

INSTALL_HINT = 'pip install "mitk[dicom]"'
ImplicitVRLittleEndian, ExplicitVRLittleEndian = IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN
ExplicitVRBigEndian = "1.2.840.10008.1.2.2"
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
"""Native (uncompressed, not deflated) transfer syntaxes, read here without pydicom's decoders; pydicom itself is
imported only where a header or pixel data needs it (``mitk convert`` of a plain series never does)."""
PIXEL_DATA_TAG = (0x7FE0, 0x0010)
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_FAST_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR")


@dataclass(frozen=True)
class PixelLayout:
    """How one frame's stored values are laid out (the Image Pixel module)."""

    rows: int
    columns: int
    samples: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    signed: bool = False
    photometric: str = "MONOCHROME2"
    planar: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        """``(rows, columns)`` or ``(rows, columns, samples)``."""
        return (self.rows, self.columns) if self.samples == 1 else (self.rows, self.columns, self.samples)

    @property
    def dtype(self) -> np.dtype:
        """Stored values' dtype, from BitsAllocated and PixelRepresentation (1-bit data unpacks to uint8)."""
        if self.bits_allocated == 1:
            return np.dtype(np.uint8)
        if self.bits_allocated not in (8, 16, 32, 64):
            raise InputError(f"unsupported BitsAllocated {self.bits_allocated}")
        return np.dtype(f"{'i' if self.signed else 'u'}{self.bits_allocated // 8}")

    def describe(self) -> str:
        return f"{self.columns}×{self.rows}" + (f"×{self.samples}" if self.samples > 1 else "") + f" {self.dtype}"


def pixel_layout(header: Dataset | ParsedHeader) -> PixelLayout:
    """The layout of ``header``'s frames."""

    def number(keyword: str, default: int) -> int:
        value = raw_value(header, keyword)
        try:
            return int(value) if value is not None else default
        except (TypeError, ValueError):
            return default

    bits = number("BitsAllocated", 16)
    return PixelLayout(number("Rows", 0), number("Columns", 0), number("SamplesPerPixel", 1), bits,
                       number("BitsStored", bits), number("PixelRepresentation", 0) == 1,
                       str(raw_value(header, "PhotometricInterpretation") or "MONOCHROME2"),
                       number("PlanarConfiguration", 0))


@dataclass
class FrameRef:
    """Where the stored values of one 2-D frame live, and how to turn them into real values."""

    path: Path
    """The file on disk, or the zip archive that holds ``member``."""
    header: Dataset | ParsedHeader
    """The file's dataset without pixel data (shared by all frames of a multi-frame file)."""
    member: str | None = None
    frame: int | None = None
    """0-based frame number inside a multi-frame object; ``None`` for a single-frame file."""
    pixel_offset: int | None = None
    """File offset of the (7FE0,0010) element of native data, when known."""
    slope: float = 1.0
    intercept: float = 0.0
    layout: PixelLayout = field(default_factory=lambda: PixelLayout(0, 0))
    transfer_syntax: str = ImplicitVRLittleEndian
    """The transfer syntax UID (a pydicom ``UID`` when the header was read by pydicom)."""

    def __post_init__(self) -> None:
        if self.layout.rows == 0:
            self.layout = pixel_layout(self.header)
        if isinstance(self.header, ParsedHeader):
            self.transfer_syntax = self.header.transfer_syntax
            return
        meta = getattr(self.header, "file_meta", None)
        if meta is not None and meta.get("TransferSyntaxUID"):
            from pydicom.uid import UID

            self.transfer_syntax = UID(str(meta.TransferSyntaxUID))

    @property
    def name(self) -> str:
        """The file as a user would name it (``archive.zip:member`` inside a zip)."""
        return f"{self.path.name}:{self.member}" if self.member else self.path.name

    def read_bytes(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        return read_member(self.path, self.member)  # bounded by MITK_MAX_IMAGE_BYTES, read in steps


_NUMERIC_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"}
_TAGS: dict[str, tuple[int, str]] = {}


def raw_value(dataset: Dataset | ParsedHeader, keyword: str) -> Any:
    """A top-level value read without pydicom's element conversion (fast, for scanning many headers).

    Binary numbers come back as int/float, ASCII VRs (CS, DS, IS, UI...) as a stripped str, multi-valued
    ones as a list; other VRs go through pydicom. ``None`` when absent or empty.
    """
    if isinstance(dataset, ParsedHeader):
        return dataset.raw(keyword)
    from pydicom.dataelem import RawDataElement

    if keyword not in _TAGS:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(keyword)
        _TAGS[keyword] = (tag, dictionary_VR(tag))
    tag, vr = _TAGS[keyword]
    element = dataset.get_item(tag)
    if element is None:
        return None
    if not isinstance(element, RawDataElement):
        value = element.value
        return None if value is None or (isinstance(value, (str, bytes)) and not value) else value
    data = element.value
    if not data:
        return None
    if vr in _NUMERIC_FORMATS:
        code = _NUMERIC_FORMATS[vr]
        count = len(data) // struct.calcsize(code)
        values = struct.unpack(("<" if element.is_little_endian else ">") + code * count,
                               data[: count * struct.calcsize(code)])
        return None if not values else values[0] if count == 1 else list(values)
    if vr in _TEXT_VRS:
        parts = [part.strip(" \x00") for part in data.decode("latin-1").split("\\")]
        return (parts[0] or None) if len(parts) == 1 else parts
    return dataset.get(keyword)


PALETTE_TABLES = tuple(f"{colour}PaletteColorLookupTable{part}" for colour in ("Red", "Green", "Blue")
                       for part in ("Descriptor", "Data"))
"""The elements a PALETTE COLOR image needs (segmented tables are not read)."""


def check_layout(ref: FrameRef) -> None:
    """Refuse, with one line naming the file, an Image Pixel module whose values cannot be read as meant:
    BitsStored of 0 or more than BitsAllocated, or PALETTE COLOR without its three lookup tables."""
    layout = ref.layout
    if layout.bits_allocated != 1 and not 0 < layout.bits_stored <= layout.bits_allocated:
        raise InputError(f"BitsStored {layout.bits_stored} is not a bit depth between 1 and BitsAllocated "
                         f"{layout.bits_allocated}: the header is broken", ref.name)
    if layout.photometric == "PALETTE COLOR":
        missing = [keyword for keyword in PALETTE_TABLES if raw_value(ref.header, keyword) is None]
        if missing:
            raise InputError(f"PhotometricInterpretation is PALETTE COLOR but {missing[0]} is missing: the stored "
                             "values are indices into a colour table the file does not have", ref.name)


def apply_palette(ref: FrameRef, indices: np.ndarray) -> np.ndarray:
    """PALETTE COLOR indices through the file's red, green and blue tables: RGB on a new last axis."""
    from pydicom.pixels import apply_color_lut

    assert not isinstance(ref.header, ParsedHeader)  # that reader leaves PALETTE COLOR to pydicom
    try:
        return np.asarray(apply_color_lut(indices, ref.header))
    except Exception as error:  # pydicom raises several types for inconsistent tables
        raise InputError(f"unusable palette colour lookup table ({type(error).__name__}: {_error_text(error)})",
                         ref.name) from None


def check_decoder(ref: FrameRef) -> None:
    """Raise a one-line InputError, with the install hint, when ``ref``'s transfer syntax cannot be decoded."""
    syntax = ref.transfer_syntax
    if syntax in NATIVE_SYNTAXES:
        return
    import pydicom.pixels
    from pydicom.uid import UID

    syntax = UID(syntax)
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError:
        raise InputError(f"pixel data in {syntax.name} ({syntax}) cannot be decoded by mitk", ref.name) from None
    if not decoder.is_available:
        raise InputError(f"no decoder for {syntax.name} is installed; install one with: {INSTALL_HINT}",
                         ref.name)


def decode_into(ref: FrameRef, out: np.ndarray, source: Dataset | None = None) -> None:
    """Write the stored values of ``ref`` into ``out`` (C-contiguous, ``ref.layout``'s shape and dtype).

    ``source`` is an already loaded dataset with pixel data (used for multi-frame files). Whichever way
    the frame is decoded, the bits above BitsStored are masked (see :func:`mask_unused_bits`);
    MONOCHROME1 values are returned as stored, not inverted.
    """
    if source is None and _fast_path_possible(ref, out):
        _read_native(ref, out)
    else:
        values = decode_frame(ref, source)
        if values.shape != out.shape:
            raise InputError(f"decoded frame has shape {values.shape}, expected {out.shape}", ref.name)
        out[...] = values
    mask_unused_bits(ref.layout, out)


def mask_unused_bits(layout: PixelLayout, out: np.ndarray) -> None:
    """Ignore the bits of ``out`` above BitsStored, in place, as pydicom's ``pixel_array`` and SimpleITK do.

    Unsigned values keep their low BitsStored bits; signed values (PixelRepresentation 1) are also
    sign-extended from bit BitsStored - 1. Nothing changes when BitsStored fills the allocated bits.
    """
    if out.dtype.kind not in "iu":
        return
    width = out.dtype.itemsize * 8
    stored = layout.bits_stored
    if not 0 < stored < width:
        return
    if out.dtype.kind == "u":
        np.bitwise_and(out, out.dtype.type((1 << stored) - 1), out=out)
    else:
        np.left_shift(out, width - stored, out=out)
        np.right_shift(out, width - stored, out=out)


def decode_frame(ref: FrameRef, source: Dataset | None = None) -> np.ndarray:
    """Decode one frame with pydicom (any transfer syntax with an installed decoder)."""
    import pydicom.pixels

    check_decoder(ref)
    dataset = source if source is not None else load_dataset(ref)
    try:
        return pydicom.pixels.pixel_array(dataset, index=ref.frame)
    except Exception as error:  # pydicom raises many types for corrupt or truncated data
        raise InputError(f"cannot decode pixel data ({type(error).__name__}: {_error_text(error)})",
                         ref.name) from None


def load_dataset(ref: FrameRef) -> Dataset:
    """The whole dataset of ``ref``'s file, pixel data included (for decoding many frames of one file)."""
    import pydicom

    try:
        if ref.member is not None:
            return pydicom.dcmread(io.BytesIO(ref.read_bytes()))
        return pydicom.dcmread(ref.path)
    except Exception as error:
        raise InputError(f"unreadable DICOM file ({type(error).__name__}: {_error_text(error)})",
                         ref.name) from None


def decode_frames(dataset: Dataset | str | Path, frames: Iterable[int] | None = None) -> np.ndarray:
    """All (or the listed) frames of one object as stored values, shape ``(frames, rows, columns[, samples])``."""
    import pydicom
    from pydicom.dataset import Dataset

    if not isinstance(dataset, Dataset):
        dataset = pydicom.dcmread(dataset)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    indices = list(range(count) if frames is None else frames)
    layout = pixel_layout(dataset)
    out = np.empty((len(indices), *layout.shape), dtype=layout.dtype)
    path = Path(getattr(dataset, "filename", None) or "<dataset>")
    for n, index in enumerate(indices):
        decode_into(FrameRef(path, dataset, frame=index if count > 1 else None), out[n], source=dataset)
    return out


def _fast_path_possible(ref: FrameRef, out: np.ndarray) -> bool:
    layout = ref.layout
    return (ref.pixel_offset is not None and ref.member is None and ref.transfer_syntax in NATIVE_SYNTAXES
            and layout.bits_allocated in (8, 16, 32) and layout.photometric in _FAST_PHOTOMETRIC
            and (out.ndim == 2 or layout.planar == 0) and out.flags.c_contiguous)


def _read_native(ref: FrameRef, out: np.ndarray) -> None:
    """Read one frame of native pixel data from its file offset into ``out``, without another parse."""
    big_endian = ref.transfer_syntax == ExplicitVRBigEndian
    explicit = ref.transfer_syntax != ImplicitVRLittleEndian
    assert ref.pixel_offset is not None
    with open(ref.path, "rb", buffering=0) as handle:
        handle.seek(ref.pixel_offset)
        head = handle.read(12)
        if len(head) < 8:
            raise InputError("truncated file: no pixel data after the header", ref.name)
        order = ">" if big_endian else "<"
        group, element = struct.unpack(f"{order}HH", head[:4])
        if (group, element) != PIXEL_DATA_TAG:
            raise InputError("no pixel data element where the header ends", ref.name)
        if explicit and head[4:6] in _LONG_VRS:
            (length,), start = struct.unpack(f"{order}I", head[8:12]), ref.pixel_offset + 12
        elif explicit:
            (length,), start = struct.unpack(f"{order}H", head[6:8]), ref.pixel_offset + 8
        else:
            (length,), start = struct.unpack(f"{order}I", head[4:8]), ref.pixel_offset + 8
        if length == 0xFFFFFFFF:
            raise InputError("encapsulated pixel data in a native transfer syntax", ref.name)
        frame_bytes = out.nbytes
        offset = (ref.frame or 0) * frame_bytes
        if offset + frame_bytes > length:
            raise InputError(f"pixel data too short: {length} bytes for frame {(ref.frame or 0) + 1} of "
                             f"{frame_bytes} bytes", ref.name)
        handle.seek(start + offset)
        view = out.data.cast("B")
        got = handle.readinto(view)
        while got is not None and 0 < got < frame_bytes:
            more = handle.readinto(view[got:])
            if not more:
                break
            got += more
    if got != frame_bytes:
        raise InputError(f"truncated pixel data: {got or 0} of {frame_bytes} bytes", ref.name)
    if big_endian and out.dtype.itemsize > 1:
        out.byteswap(inplace=True)


def _error_text(error: BaseException) -> str:
    """An exception's message on one line, shortened."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= 300 else text[:297] + "..."
