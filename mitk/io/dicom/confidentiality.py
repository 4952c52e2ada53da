"""De-identify DICOM inputs: PS3.15 Annex E's Basic Application Level Confidentiality Profile and options.

The profile's attribute table (Table E.1-1, the Basic Profile column) comes from a maintained implementation of
the standard, ``dicom-anonymizer`` (KitwareMedical, BSD-3; its tables are generated from each edition of the
standard); the newest edition it ships is used. On top of it, mitk adds what a research user needs:

- **UIDs remapped consistently**: every UID that names an instance (anything not under the standard's own root
  ``1.2.840.10008``), at any depth and in the file meta header, becomes ``2.25.<n>`` where ``n`` is a keyed hash
  (HMAC-SHA-256) of the original. The same key gives the same mapping across files, series, studies and calls, so
  references between objects (a SEG to its images, a study's series) stay intact.
- **A pseudonym for the patient**: PatientID and PatientName become ``ANON<12 hex digits>``, a keyed hash of the
  original PatientID, so a patient's studies stay together (and group-aware training splits keep working).
- Options, named after the standard's columns: retain longitudinal temporal information with modified dates (every
  date shifted by one keyed, per-patient number of days: intervals between a patient's studies are kept), retain
  device identity, retain patient characteristics, clean descriptors (free-text descriptions kept, with every
  name, ID and date of the patient found in the file removed from them).
- The profile is applied recursively inside sequences; private attributes, overlays and curves are removed.
- Images that may carry identifying text in their pixels (BurnedInAnnotation YES, secondary captures, screen
  saves) are refused unless the caller allows them: pixel data is never inspected or changed here.

The module names no patient value in what it returns: :class:`Changes` counts actions per attribute keyword.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import importlib.util
import pkgutil
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from mitk.constants import __version__
from mitk.extras import require_module

STANDARD_UID_ROOT = "1.2.840.10008."
"""UIDs under this root name SOP classes, transfer syntaxes and other things of the standard: never remapped."""

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
"""The Secondary Capture SOP classes (and their multi-frame variants) share this prefix."""

DEVICE_IDENTITY = ("DeviceSerialNumber", "DeviceUID", "StationName", "DeviceLabel", "DeviceDescription",
                   "PlateID", "GeneratorID", "CassetteID", "GantryID", "DetectorID", "SourceSerialNumber",
                   "PerformedStationName", "ScheduledStationName", "ScheduledStationAETitle",
                   "PerformedStationAETitle")
"""Attributes the Retain Device Identity Option keeps (its column in Table E.1-1)."""

PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup",
                           "SmokingStatus", "PregnancyStatus", "PatientSexNeutered", "AdditionalPatientHistory",
                           "SpecialNeeds", "Allergies", "MedicalAlerts", "PatientSpeciesDescription")
"""Attributes the Retain Patient Characteristics Option keeps."""

DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "AcquisitionComments",
               "PerformedProcedureStepDescription", "RequestedProcedureDescription", "ReasonForStudy",
               "AdmittingDiagnosesDescription", "DerivationDescription", "ScheduledProcedureStepDescription",
               "ContrastBolusAgent", "CommentsOnThePerformedProcedureStep", "StudyComments")
"""Free-text attributes the Clean Descriptors Option keeps, cleaned."""

METHOD_CODES = {  # CID 7050, De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device": ("113109", "Retain Device Identity Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
}

IDENTIFYING_SOURCES = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber",
                       "InstitutionName", "ReferringPhysicianName", "PerformingPhysicianName",
                       "OperatorsName", "PatientBirthName", "PatientMotherBirthName", "PatientAddress",
                       "StudyID", "RequestingPhysician")
"""Attributes whose values are removed from descriptors by the Clean Descriptors Option."""

DATE_PATTERN = re.compile(r"\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b|\d{5,}")
"""Dates written out and long numbers (IDs, dates without separators) inside free text."""


@dataclass(frozen=True)
class Options:
    """Which of the profile's options apply (all off: the Basic Profile alone)."""

    retain_dates: bool = False
    retain_device: bool = False
    retain_patient_characteristics: bool = False
    clean_descriptors: bool = False
    allow_burned_in: bool = False

    def codes(self) -> list[tuple[str, str]]:
        """The CID 7050 codes of the profile and the options in force."""
        names = ["basic", *(name for name in ("retain_dates", "retain_patient_characteristics", "retain_device",
                                              "clean_descriptors") if getattr(self, name))]
        return [METHOD_CODES[name] for name in names]


@dataclass
class Changes:
    """What was done, counted per attribute keyword and action; never a value."""

    actions: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: Changes) -> None:
        self.actions.update(other.actions)

    def as_dict(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for (keyword, action), count in sorted(self.actions.items()):
            table.setdefault(keyword, {})[action] = count
        return table


class Keyed:
    """Consistent pseudonyms from a secret key: UIDs, the patient's pseudonym and their date shift."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the de-identification key must hold at least 16 bytes")
        self._key = key

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str) -> str:
        """``2.25.<128-bit integer>``: a UID under the UUID-derived root (PS3.5 B.2), at most 44 characters."""
        return "2.25." + str(int.from_bytes(self._digest("uid", value.strip())[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        return "ANON" + self._digest("patient", patient_id.strip()).hex()[:12].upper()

    def day_shift(self, patient_id: str) -> int:
        """Days to add to every date of this patient: between -3650 and -365 (dates move back 1 to 10 years)."""
        return -(365 + int.from_bytes(self._digest("days", patient_id.strip())[:4], "big") % 3286)


def profile_table() -> tuple[str, dict[Any, Callable[[Dataset, Any], None]]]:
    """The newest Table E.1-1 edition that ``dicom-anonymizer`` ships, and its action per tag."""
    require_module("dicomanonymizer", "mitk deidentify")
    from dicomanonymizer import dicom_anonymization_databases, simpledicomanonymizer

    editions = sorted(info.name for info in pkgutil.iter_modules(dicom_anonymization_databases.__path__)
                      if info.name.startswith("dicomfields_"))
    edition = editions[-1]
    return edition, simpledicomanonymizer.initialize_actions(edition)


def table_edition() -> str:
    """The edition of the standard's table in use, e.g. ``2026c``, with the package version."""
    from importlib import metadata

    edition = profile_table()[0].removeprefix("dicomfields_")
    return f"PS3.15 Table E.1-1 ({edition}, dicom-anonymizer {metadata.version('dicom-anonymizer')})"


def burned_in_reason(dataset: Dataset) -> str | None:
    """Why the pixels may carry identifying text, or None."""
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES"
    if str(dataset.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE):
        return "a secondary capture (screenshots and scans often show names in their pixels)"
    image_type = dataset.get("ImageType", [])
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    if any(str(value).upper() == "SCREEN SAVE" for value in values):
        return "a screen save (ImageType SCREEN SAVE)"
    return None


def identifying_strings(dataset: Dataset) -> list[str]:
    """The patient's names, IDs and dates found in the file, longest first: what cleaning removes."""
    found: set[str] = set()
    for keyword in IDENTIFYING_SOURCES:
        value = dataset.get(keyword)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for item in values:
            text = str(item)
            found.add(text)
            found.update(part for part in re.split(r"[\^\s,]+", text) if len(part) >= 2)
    return sorted((text for text in found if text.strip()), key=len, reverse=True)


def clean_text(text: str, identifying: Iterable[str]) -> str:
    """``text`` without any of the ``identifying`` strings (case-insensitive), dates or long numbers."""
    for value in identifying:
        text = re.sub(re.escape(value), " ", text, flags=re.IGNORECASE)
    text = DATE_PATTERN.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


def shift_date(value: str, days: int) -> str | None:
    """A DA or DT value moved by ``days`` (time and zone kept); None when it is not a date."""
    text = value.strip()
    if "-" in text[1:8] or len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        moved = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8])) + datetime.timedelta(days=days)
    except ValueError:
        return None
    return moved.strftime("%Y%m%d") + text[8:]


def _keep(dataset: Dataset, tag: Any) -> None:
    """Leave the attribute for the later passes (UIDs are remapped, sequences profiled item by item)."""


def _rules(base: dict[Any, Callable[[Dataset, Any], None]], options: Options, context: _Context
           ) -> dict[Any, Callable[[Dataset, Any], None]]:
    """The base table with mitk's overrides for UIDs, the patient's pseudonym and the options."""
    rules: dict[Any, Callable[[Dataset, Any], None]] = {}
    for tag, action in base.items():
        name = getattr(action, "__name__", "")
        if name in ("replace_UID", "delete_or_empty_or_replace_UID"):
            rules[tag] = _keep
        elif options.retain_dates and len(tag) == 2 and dictionary_VR_or_none(tag) in ("DA", "DT"):
            rules[tag] = context.shift
        elif options.retain_dates and len(tag) == 2 and dictionary_VR_or_none(tag) == "TM":
            rules[tag] = _keep  # times of day stay: with the dates shifted they no longer date anything
    for keyword in ("PatientID", "PatientName"):
        rules[_tag(keyword)] = context.pseudonymise
    kept = (DEVICE_IDENTITY if options.retain_device else ()) + (
        PATIENT_CHARACTERISTICS if options.retain_patient_characteristics else ())
    for keyword in kept:
        rules[_tag(keyword)] = _keep
    if options.clean_descriptors:
        for keyword in DESCRIPTORS:
            rules[_tag(keyword)] = context.clean
    return rules


def _tag(keyword: str) -> tuple[int, int]:
    tag = Tag(keyword)
    return tag.group, tag.element


def dictionary_VR_or_none(tag: tuple[int, ...]) -> str | None:
    try:
        return str(dictionary_VR(Tag(tag[0], tag[1])))
    except KeyError:
        return None


@dataclass
class _Context:
    """One file's keyed values and the actions that need them."""

    keyed: Keyed
    pseudonym: str
    days: int
    identifying: list[str]
    changes: Changes

    def pseudonymise(self, dataset: Dataset, tag: Any) -> None:
        if tag in dataset:
            dataset[tag].value = self.pseudonym

    def shift(self, dataset: Dataset, tag: Any) -> None:
        if tag not in dataset or dataset[tag].VR not in ("DA", "DT") or not dataset[tag].value:
            return
        moved = shift_date(str(dataset[tag].value), self.days)
        dataset[tag].value = moved if moved is not None else ""

    def clean(self, dataset: Dataset, tag: Any) -> None:
        if tag in dataset and isinstance(dataset[tag].value, str):
            dataset[tag].value = clean_text(dataset[tag].value, self.identifying)


def _profile(dataset: Dataset, rules: dict[Any, Callable[[Dataset, Any], None]],
             base: Callable[[], dict[Any, Callable[[Dataset, Any], None]]]) -> None:
    """Apply the table to ``dataset`` and, recursively, to every item of the sequences it keeps."""
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset

    anonymize_dataset(dataset, rules, delete_private_tags=True, base_rules_gen=base)
    for element in list(dataset):
        if element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                _profile(item, rules, base)


def _remap_uids(dataset: Dataset, keyed: Keyed) -> None:
    """Replace every instance UID, at any depth, by its keyed counterpart."""
    for element in dataset.iterall():
        if element.VR != "UI" or not element.value:
            continue
        values = element.value if isinstance(element.value, (list, tuple)) or \
            type(element.value).__name__ == "MultiValue" else [element.value]
        remapped = [value if str(value).startswith(STANDARD_UID_ROOT) else keyed.uid(str(value))
                    for value in values]
        element.value = remapped if len(remapped) > 1 else remapped[0]


def _count(before: dict[int, Any], after: Dataset, options: Options, changes: Changes) -> None:
    """Count, per keyword, what happened to each top-level attribute of the original."""
    for tag, (vr, value) in before.items():
        keyword = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if Tag(tag).is_private:
            keyword = "private attribute"
        if tag not in after:
            action = "removed"
        elif after[tag].VR == "SQ":
            action = "profiled"
        elif after[tag].value == value:
            continue
        elif vr == "UI":
            action = "remapped"
        elif after[tag].value in ("", None, b""):
            action = "emptied"
        elif options.retain_dates and vr in ("DA", "DT"):
            action = "shifted"
        else:
            action = "replaced"
        changes.actions[(keyword, action)] += 1


def deidentify(dataset: Dataset, keyed: Keyed, options: Options) -> Changes:
    """De-identify ``dataset`` in place (file meta header included) and count what changed.

    Raises ``ValueError`` naming the reason when the pixels may carry identifying text and
    ``options.allow_burned_in`` is off.
    """
    reason = burned_in_reason(dataset)
    if reason is not None and not options.allow_burned_in:
        raise ValueError(f"may show identifying text in its pixels: {reason} (--allow-burned-in to process it)")
    edition, table = profile_table()
    patient = str(dataset.get("PatientID", "") or dataset.get("PatientName", "") or "")
    changes = Changes()
    context = _Context(keyed, keyed.pseudonym(patient), keyed.day_shift(patient), identifying_strings(dataset),
                       changes)
    before = {int(element.tag): (element.VR, element.value) for element in dataset}
    rules = _rules(table, options, context)
    _profile(dataset, rules, lambda: dict(table))
    _remap_uids(dataset, keyed)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    _count(before, dataset, options, changes)
    _mark(dataset, options, edition)
    return changes


def _mark(dataset: Dataset, options: Options, edition: str) -> None:
    """The attributes that say the object was de-identified, and how (PS3.15 E.1.1)."""
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = f"mitk {__version__}: PS3.15 E.1 {edition.removeprefix('dicomfields_')}"[:64]
    items = []
    for value, meaning in options.codes():
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = Sequence(items)
    dataset.LongitudinalTemporalInformationModified = "MODIFIED" if options.retain_dates else "REMOVED"


def loaded() -> bool:
    """Whether the maintained table is installed (the ``dicom`` extra)."""
    return importlib.util.find_spec("dicomanonymizer") is not None
