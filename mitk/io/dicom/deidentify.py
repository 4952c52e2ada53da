"""De-identify derived DICOM objects: the PS3.15 Annex E Basic Application Level Confidentiality Profile.

:func:`deidentify_dataset` applies the profile's action codes to a pydicom ``Dataset`` that mitk
created itself (a DICOM SEG, say); source files are never touched. The action codes are those of
PS3.15 Table E.1-1:

- ``D``: replace with a non-zero-length dummy value of the same VR,
- ``Z``: replace with a zero-length value,
- ``X``: remove,
- ``U``: replace a UID with another one, consistently (:func:`remap_uid`).

Where the standard gives a compound code (``X/Z/D``), :data:`ACTIONS` holds the choice that keeps
the objects mitk writes valid (``D`` for the type 1 Content Date, ``X`` for optional dates). The
profile applies recursively inside sequences; private attributes and overlay/curve data are removed;
any UID not in :data:`ACTIONS` that names an instance (not a SOP class, transfer syntax or coding
scheme) is replaced too.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING

from mitk.constants import __version__

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

DUMMY_DATE = "20000101"
"""The dummy value of dates with action ``D`` (never a real date of the patient's)."""

DUMMY_TIME = "000000.00"
DUMMY_TEXT = "DEIDENTIFIED"

UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "mitk:deidentify")
"""Namespace of the name-based (version 5) UUIDs behind remapped UIDs."""

# PS3.15 Table E.1-1, Basic Profile column, for the attributes that identify patients, studies,
# staff, places and instances. Keyword -> action code.
ACTIONS: dict[str, str] = {
    # Patient
    "PatientName": "Z",
    "PatientID": "Z",
    "IssuerOfPatientID": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientReligiousPreference": "X",
    "PatientComments": "X",
    "PatientState": "X",
    "MedicalRecordLocator": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "AdditionalPatientHistory": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "SmokingStatus": "X",
    "LastMenstrualDate": "X",
    "SpecialNeeds": "X",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientAliasSequence": "X",
    # Study and request
    "StudyInstanceUID": "U",
    "StudyDate": "Z",
    "StudyTime": "Z",
    "StudyID": "Z",
    "AccessionNumber": "Z",
    "IssuerOfAccessionNumberSequence": "X",
    "StudyDescription": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmissionID": "X",
    "ReasonForStudy": "X",
    "ReasonForTheRequestedProcedure": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X",
    "RequestAttributesSequence": "X",
    "ReferencedStudySequence": "X",
    # Series, procedure step and staff
    "SeriesInstanceUID": "U",
    "SeriesDate": "X",
    "SeriesTime": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepDescription": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "ScheduledProcedureStepID": "X",
    # Equipment and place
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionCodeSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "D",
    "DeviceUID": "U",
    # Image, content and dates
    "ContentDate": "D",
    "ContentTime": "D",
    "AcquisitionDate": "X",
    "AcquisitionTime": "X",
    "AcquisitionDateTime": "X",
    "InstanceCreationDate": "X",
    "InstanceCreationTime": "X",
    "ContributionDateTime": "X",
    "ContentCreatorName": "Z",
    "ImageComments": "X",
    "FrameComments": "X",
    "DerivationDescription": "X",
    # Instance UIDs
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "SourceFrameOfReferenceUID": "U",
    "DimensionOrganizationUID": "U",
    "ConcatenationUID": "U",
    "InstanceCreatorUID": "U",
    "IrradiationEventUID": "U",
    "StorageMediaFileSetUID": "U",
    "TrackingUID": "U",
    "UID": "U",
    # Not in the table, but opaque bytes after the data set may hold anything.
    "DataSetTrailingPadding": "X",
}

KEEP_UIDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ReferencedTransferSyntaxUIDInFile", "ReferencedSOPClassUIDInFile", "ImplementationClassUID",
    "CodingSchemeUID", "ContextUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID",
    "PrivateInformationCreatorUID", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
})
"""UI attributes that name a class, a syntax or a coding scheme, never an instance: kept as they are."""

PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
CLEAN_DESCRIPTORS_CODE = ("113105", "DCM", "Clean Descriptors Option")


def remap_uid(uid: str, salt: str = "") -> str:
    """A replacement for ``uid``: the same input (and salt) always gives the same ``2.25.`` UID.

    The replacement is a name-based UUID of ``salt`` + ``uid`` in its ``2.25`` integer form, so that
    references between objects de-identified with the same salt stay consistent.
    """
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, salt + str(uid)).int}"


NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})


def _empty(vr: str) -> object:
    if vr == "SQ":
        return []
    return None if vr in NUMBER_VRS or vr.startswith("O") else ""


def _dummy(vr: str) -> object:
    if vr == "DA":
        return DUMMY_DATE
    if vr == "TM":
        return DUMMY_TIME
    if vr == "DT":
        return DUMMY_DATE + "000000"
    if vr in NUMBER_VRS:
        return 0
    if vr == "SQ":
        return []
    return DUMMY_TEXT


def _is_overlay_or_curve(element: DataElement) -> bool:
    group = element.tag.group
    return (0x5000 <= group <= 0x50FF) or (0x6000 <= group <= 0x60FF and element.tag.element in (0x3000, 0x4000))


def _replace_uids(element: DataElement, salt: str) -> None:
    value = element.value
    if not value:
        return
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        element.value = [remap_uid(v, salt) if v else v for v in value]
    else:
        element.value = remap_uid(value, salt)


def _action(element: DataElement) -> str | None:
    action = ACTIONS.get(element.keyword)
    if action is None and element.VR == "UI" and element.keyword not in KEEP_UIDS:
        values = element.value if isinstance(element.value, (list, tuple)) else [element.value]
        from pydicom.uid import UID_dictionary

        if any(v and str(v) not in UID_dictionary for v in values):
            action = "U"
    return action


def _apply_profile(dataset: Dataset, keep: Collection[str], salt: str, seen: set[int]) -> None:
    """Apply the profile to ``dataset`` and its sequence items, each item once even where it is shared."""
    if id(dataset) in seen:
        return
    seen.add(id(dataset))
    for element in list(dataset):
        if element.tag.is_private or _is_overlay_or_curve(element):
            del dataset[element.tag]
            continue
        if element.keyword in keep:
            continue
        action = _action(element)
        if action == "X":
            del dataset[element.tag]
        elif action == "Z":
            element.value = _empty(element.VR)
        elif action == "D":
            element.value = _dummy(element.VR)
        elif action == "U":
            _replace_uids(element, salt)
        elif element.VR == "SQ":
            for item in element.value:
                _apply_profile(item, (), salt, seen)


def _code_item(code: tuple[str, str, str]) -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def deidentify_dataset(dataset: Dataset, *, keep: Collection[str] = (), salt: str = "") -> Dataset:
    """Apply the Basic Application Level Confidentiality Profile to ``dataset`` in place and return it.

    Give it only objects mitk derived itself (or a copy): the inputs are never modified.
    ``keep`` names top-level attributes that the caller wrote itself from non-identifying values (for
    instance the SEG's ``SeriesDescription`` "mitk threshold segmentation"); keeping them is what the
    profile's Clean Descriptors Option allows, and that option is then recorded too. ``salt`` changes
    every remapped UID (see :func:`remap_uid`).
    """
    _apply_profile(dataset, frozenset(keep), salt, set())
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None and "SOPInstanceUID" in dataset:
        file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = f"mitk {__version__}: DICOM PS3.15 E.1 Basic Profile"[:64]
    methods = [PROFILE_CODE] + ([CLEAN_DESCRIPTORS_CODE] if keep else [])
    dataset.DeidentificationMethodCodeSequence = [_code_item(code) for code in methods]
    dataset.LongitudinalTemporalInformationModified = "REMOVED"
    return dataset
