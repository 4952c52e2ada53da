"""A DICOM Part 10 header read without pydicom, for the plain case: a CT, MR or PET image file in explicit or
implicit VR little endian with native (uncompressed) pixel data.

``mitk convert`` reads a series of such files through :class:`ParsedHeader` and so never imports pydicom, whose
own import costs more than reading a whole series (it registers every pixel decoder and data source it knows).
Only the attributes mitk reads from a slice (:data:`ATTRIBUTES`) are kept, converted as pydicom converts them;
anything this reader does not handle — another transfer syntax or SOP class, enhanced functional groups,
several frames, text outside ASCII, an attribute it cannot convert, a structure it cannot follow — raises
:class:`Unsupported`, and the caller reads the input with pydicom instead.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
SYNTAX_NAMES = {IMPLICIT_VR_LITTLE_ENDIAN: "Implicit VR Little Endian",
                EXPLICIT_VR_LITTLE_ENDIAN: "Explicit VR Little Endian"}
SOP_CLASS_NAMES = {"1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
                   "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
                   "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage"}
"""The SOP classes read here, with pydicom's names for them (tests/test_convert_lean.py checks both tables)."""

ATTRIBUTES: dict[str, tuple[int, str]] = {
    # Identity, grouping and the image pixel module
    "SpecificCharacterSet": (0x00080005, "CS"), "ImageType": (0x00080008, "CS"),
    "SOPClassUID": (0x00080016, "UI"), "Modality": (0x00080060, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"), "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"), "AcquisitionNumber": (0x00200012, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"), "ImageOrientationPatient": (0x00200037, "DS"),
    "TemporalPositionIdentifier": (0x00200100, "IS"), "StackID": (0x00209056, "SH"),
    "TemporalPositionIndex": (0x00209128, "UL"), "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"), "PlanarConfiguration": (0x00280006, "US"),
    "NumberOfFrames": (0x00280008, "IS"), "Rows": (0x00280010, "US"), "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"), "BitsAllocated": (0x00280100, "US"), "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"), "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"), "RescaleType": (0x00281054, "LO"), "DoseGridScaling": (0x3004000E, "DS"),
    "ImagerPixelSpacing": (0x00181164, "DS"), "SpacingBetweenSlices": (0x00180088, "DS"),
    "EchoNumbers": (0x00180086, "IS"), "EchoTime": (0x00180081, "DS"), "TriggerTime": (0x00181060, "DS"),
    "DiffusionBValue": (0x00189087, "FD"),
    # The sidecar's acquisition parameters and descriptions (mitk.io.dicom.sidecar)
    "Manufacturer": (0x00080070, "LO"), "ManufacturerModelName": (0x00081090, "LO"),
    "StudyDescription": (0x00081030, "LO"), "SeriesDescription": (0x0008103E, "LO"),
    "BodyPartExamined": (0x00180015, "CS"), "PatientPosition": (0x00185100, "CS"),
    "SliceThickness": (0x00180050, "DS"), "KVP": (0x00180060, "DS"), "XRayTubeCurrent": (0x00181151, "IS"),
    "ExposureTime": (0x00181150, "IS"), "Exposure": (0x00181152, "IS"), "ConvolutionKernel": (0x00181210, "SH"),
    "FilterType": (0x00181160, "SH"), "SpiralPitchFactor": (0x00189311, "FD"), "CTDIvol": (0x00189345, "FD"),
    "ReconstructionDiameter": (0x00181100, "DS"), "ProtocolName": (0x00181030, "LO"),
    "MagneticFieldStrength": (0x00180087, "DS"), "RepetitionTime": (0x00180080, "DS"),
    "EffectiveEchoTime": (0x00189082, "FD"), "InversionTime": (0x00180082, "DS"), "FlipAngle": (0x00181314, "DS"),
    "EchoTrainLength": (0x00180091, "IS"), "ScanningSequence": (0x00180020, "CS"),
    "SequenceVariant": (0x00180021, "CS"), "ScanOptions": (0x00180022, "CS"),
    "MRAcquisitionType": (0x00180023, "CS"), "SequenceName": (0x00180024, "SH"),
    "PulseSequenceName": (0x00189005, "SH"), "PixelBandwidth": (0x00180095, "DS"),
    "ImagingFrequency": (0x00180084, "DS"), "ReceiveCoilName": (0x00181250, "SH"),
    "PercentPhaseFieldOfView": (0x00180094, "DS"), "InPlanePhaseEncodingDirection": (0x00181312, "CS"),
    "ParallelReductionFactorInPlane": (0x00189069, "FD"), "Units": (0x00541001, "CS"),
    "DecayCorrection": (0x00541102, "CS"), "AttenuationCorrectionMethod": (0x00541101, "LO"),
    "ReconstructionMethod": (0x00541103, "LO"),
}
"""Keyword → (tag, VR) of every attribute kept (tests/test_convert_lean.py checks them against pydicom)."""

_BY_TAG = {tag: (keyword, vr) for keyword, (tag, vr) in ATTRIBUTES.items()}
_REFUSED_TAGS = {0x52009229, 0x52009230}  # Shared and Per-frame Functional Groups: enhanced objects
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_VRS = {code.encode() for code in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH",
                                    "SL", "SS", "ST", "SV", "TM", "UI", "UL", "US", "UV")} | _LONG_VRS
_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHI")
_LENGTH = struct.Struct("<I")
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"}  # as mitk.io.dicom.pixels.raw_value reads them
_INTEGER = re.compile(r"[+-]?\d+")
_MAX_LENGTH = {"AE": 16, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "LT": 10240, "SH": 16, "ST": 1024, "UI": 64}
_FORMS = {vr: re.compile(form) for vr, form in (  # pydicom's checks of these VRs (pydicom.valuerep)
    ("CS", r"[A-Z0-9 _]*"), ("DS", r" *[+\-]?(\d+|\d+\.\d*|\.\d+)([eE][+\-]?\d+)? *|"),
    ("IS", r" *[+\-]?\d+ *|"), ("UI", r"((0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*)?"), ("AE", r"[\x20-\x7e]*"))}
"""Longest value and form per VR that pydicom accepts without a warning (``pydicom.valuerep``)."""
_NOT_TEXT = re.compile(rb"[^\x00\x20-\x7e]")  # text outside printable ASCII (NUL pads UIDs)
_READS = (1 << 13, 1 << 18, -1)
"""Bytes read before each try: most headers fit in 8 KiB, large private ones in 256 KiB more, then the rest."""
_MAX_DEPTH = 8
_DELIMITERS = {"item": 0xFFFEE000, "item end": 0xFFFEE00D, "sequence end": 0xFFFEE0DD}


class Unsupported(Exception):
    """The file is not one this reader handles; read it with pydicom."""


class NamedUID(str):
    """A UID with its name, as pydicom's ``UID.name`` gives it."""

    name: str

    def __new__(cls, value: str, name: str) -> NamedUID:
        uid = super().__new__(cls, value)
        uid.name = name
        return uid


class FileMeta:
    """The file meta information that mitk reads: its transfer syntax."""

    def __init__(self, syntax: NamedUID) -> None:
        self.TransferSyntaxUID = syntax

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.TransferSyntaxUID if keyword == "TransferSyntaxUID" else default


class ParsedHeader:
    """The attributes of :data:`ATTRIBUTES` that one file has: ``get``/attribute access give the value pydicom
    would (int, float, str, or a list of them), :meth:`raw` what :func:`mitk.io.dicom.pixels.raw_value` gives.

    Values are converted when first asked for (a series' later slices are asked for a few only); one that this
    reader cannot convert as pydicom would raises :class:`Unsupported` then."""

    def __init__(self, path: Path, syntax: str, elements: dict[str, tuple[str, bytes]], pixel_offset: int) -> None:
        self.path = path
        self.transfer_syntax = syntax
        self.file_meta = FileMeta(NamedUID(syntax, SYNTAX_NAMES[syntax]))
        self.pixel_offset = pixel_offset
        """File offset of the (7FE0,0010) element."""
        self._elements = elements
        self._values: dict[str, Any] = {}
        sop_class = self._value("SOPClassUID")
        if sop_class not in SOP_CLASS_NAMES:
            raise Unsupported(f"SOP class {sop_class}")
        self._values["SOPClassUID"] = NamedUID(sop_class, SOP_CLASS_NAMES[sop_class])

    def _value(self, keyword: str) -> Any:
        if keyword not in self._values:
            found = self._elements.get(keyword)
            self._values[keyword] = None if found is None else _convert(keyword, *found)
        return self._values[keyword]

    def get(self, keyword: str, default: Any = None) -> Any:
        value = self._value(keyword) if keyword in ATTRIBUTES else None
        return default if value is None else value

    def raw(self, keyword: str) -> Any:
        found = self._elements.get(keyword)
        if found is None or not found[1]:
            return None
        if found[0] in _TEXT_VRS:  # read from the bytes, as raw_value reads a pydicom header's raw element
            parts = [part.strip(" \x00") for part in found[1].decode("ascii").split("\\")]
            return (parts[0] or None) if len(parts) == 1 else parts
        return self._value(keyword)  # numbers as raw_value unpacks them; other VRs as pydicom converts them

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._elements

    def __getattr__(self, keyword: str) -> Any:
        if keyword.startswith("_") or keyword not in self._elements:
            raise AttributeError(keyword)
        return self._value(keyword)


def parse_header(path: Path) -> ParsedHeader:
    """Read ``path``'s header up to its pixel data; :class:`Unsupported` for anything beyond the plain case."""
    try:
        with open(path, "rb") as handle:
            data = b""
            for size in _READS:
                more = handle.read(size)
                if not more and data:
                    break
                data += more
                try:
                    return _parse(path, data)
                except _NeedMore:
                    continue
        raise Unsupported("no pixel data")
    except (OSError, struct.error, UnicodeDecodeError) as error:
        raise Unsupported(str(error)) from None


class _NeedMore(Exception):
    """The header runs past the bytes read so far."""


def _parse(path: Path, data: bytes) -> ParsedHeader:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Unsupported("not DICOM")
    position, syntax = 132, None
    while position + 8 <= len(data) and data[position:position + 2] == b"\x02\x00":  # group 0002, explicit VR
        tag, _, length, start = _element(data, position, explicit=True)
        if tag == 0x00020010:
            syntax = data[start:start + length].decode("ascii").strip(" \x00")
        position = start + length
    if syntax not in SYNTAX_NAMES:
        raise Unsupported(f"transfer syntax {syntax}")
    explicit = syntax == EXPLICIT_VR_LITTLE_ENDIAN
    elements: dict[str, tuple[str, bytes]] = {}
    end = len(data)
    while True:  # the top level, inline: most of the time of reading a series goes here
        if position + 12 > end:
            raise _NeedMore
        if explicit:
            group, element, code, length = _EXPLICIT.unpack_from(data, position)
            if code in _LONG_VRS:
                length, start = _LENGTH.unpack_from(data, position + 8)[0], position + 12
            elif code in _VRS:
                start = position + 8
            else:
                raise Unsupported("malformed VR")
            vr: str | None = code.decode()
        else:
            group, element, length = _IMPLICIT.unpack_from(data, position)
            start, vr = position + 8, None
        tag = group << 16 | element
        if tag == _PIXEL_DATA:
            if length == 0xFFFFFFFF:
                raise Unsupported("encapsulated pixel data")
            return ParsedHeader(path, syntax, elements, position)
        if group >= 0x7FE0 or tag in _REFUSED_TAGS:
            raise Unsupported(f"element ({group:04X},{element:04X})")
        if length == 0xFFFFFFFF:
            if vr not in (None, "SQ"):
                raise Unsupported(f"undefined length {vr}")
            position = _skip_sequence(data, start, explicit, 1)
            continue
        position = start + length
        known = _BY_TAG.get(tag)
        if known is not None:
            if position > end:
                raise _NeedMore
            if vr is not None and vr != known[1]:
                raise Unsupported(f"{known[0]} has VR {vr}")
            elements[known[0]] = (known[1], data[start:position])


def _element(data: bytes, position: int, explicit: bool) -> tuple[int, str | None, int, int]:
    """``(tag, VR or None when implicit, value length, value offset)`` of the element at ``position``."""
    if position + 8 > len(data):
        raise _NeedMore
    group, element = struct.unpack_from("<HH", data, position)
    tag = group << 16 | element
    if not explicit or group == 0xFFFE:
        return tag, None, struct.unpack_from("<I", data, position + 4)[0], position + 8
    code = data[position + 4:position + 6]
    if not (code.isalpha() and code.isupper()):
        raise Unsupported("malformed VR")
    if code in _LONG_VRS:
        if position + 12 > len(data):
            raise _NeedMore
        return tag, code.decode(), struct.unpack_from("<I", data, position + 8)[0], position + 12
    return tag, code.decode(), struct.unpack_from("<H", data, position + 6)[0], position + 8


def _skip_sequence(data: bytes, position: int, explicit: bool, depth: int) -> int:
    """The offset after the undefined-length sequence whose items start at ``position``."""
    if depth > _MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    while True:
        tag, _, length, start = _element(data, position, explicit)
        if tag == _DELIMITERS["sequence end"]:
            return start
        if tag != _DELIMITERS["item"]:
            raise Unsupported("malformed sequence")
        if length != 0xFFFFFFFF:
            position = start + length
            continue
        position = start
        while True:
            tag, vr, length, start = _element(data, position, explicit)
            if tag == _DELIMITERS["item end"]:
                position = start
                break
            if length == 0xFFFFFFFF:
                if vr not in (None, "SQ"):
                    raise Unsupported(f"undefined length {vr}")
                position = _skip_sequence(data, start, explicit, depth + 1)
            else:
                position = start + length
        if position > len(data):
            raise _NeedMore


def _convert(keyword: str, vr: str, data: bytes) -> Any:
    """The value pydicom gives (lists for several values), ``None`` when empty; Unsupported when unsure."""
    if vr in _NUMBERS:
        code = _NUMBERS[vr]
        size = struct.calcsize(code)
        if len(data) % size:
            raise Unsupported(f"{keyword}: odd length")
        values = list(struct.unpack(f"<{len(data) // size}{code}", data))
        return None if not values else values[0] if len(values) == 1 else values
    if _NOT_TEXT.search(data):
        raise Unsupported(f"{keyword}: text outside ASCII")
    texts = data.decode("ascii").split("\\")
    for text in texts:
        _check_valid(keyword, vr, text)
    parts = [part.strip(" \x00") for part in texts]
    if vr == "DS":
        numbers = [_decimal(keyword, part) for part in parts if part]
        return _one_or_list(numbers, len(parts))
    if vr == "IS":
        if not all(_INTEGER.fullmatch(part) for part in parts if part):
            raise Unsupported(f"{keyword}: not an integer string")
        return _one_or_list([int(part) for part in parts if part], len(parts))
    if len(parts) > 1 and keyword in ("Modality", "SeriesDescription", "SOPClassUID", "SeriesInstanceUID",
                                      "StudyInstanceUID", "PhotometricInterpretation"):
        raise Unsupported(f"{keyword}: several values")
    return (parts[0] or None) if len(parts) == 1 else parts  # pydicom keeps empty values among several


def _check_valid(keyword: str, vr: str, text: str) -> None:
    """Unsupported for a value pydicom would warn about when converting it (too long, or not of its VR's form):
    the pydicom path then reads it, and its warning is counted as ever."""
    if len(text) > _MAX_LENGTH.get(vr, 1 << 16):
        raise Unsupported(f"{keyword}: value longer than {vr} allows")
    form = _FORMS.get(vr)
    if form is not None and not form.fullmatch(text.rstrip("\x00" if vr != "UI" else "\x00 ")):
        raise Unsupported(f"{keyword}: not a valid {vr}")
    if vr == "IS" and text.strip(" \x00") and not -(1 << 31) <= int(text.strip(" \x00")) < (1 << 31):
        raise Unsupported(f"{keyword}: IS out of range")


def _decimal(keyword: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Unsupported(f"{keyword}: not a decimal string") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Unsupported(f"{keyword}: not finite")
    return value


def _one_or_list(values: list[Any], count: int) -> Any:
    if len(values) != count:  # an empty value among several: leave the subtleties to pydicom
        if values:
            raise Unsupported("empty value among several")
        return None
    return values[0] if count == 1 else values
