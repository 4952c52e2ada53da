"""``mitk deidentify``'s work: walk the inputs, de-identify each DICOM file, write it under a pseudonymous name.

Outputs go to ``OUT/<study>/<series>/<instance>.dcm``, each name a remapped UID, so no file or folder name carries
an identifier of the input. One file that fails is reported and the others go on; every file is written
atomically, never over an input and never over an existing file without ``overwrite``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mitk.errors import MitkError, UsageError
from mitk.io.atomic import InputFiles, atomic_path, check_output
from mitk.io.dicom.confidentiality import Changes, Keyed, Options, deidentify

KEY_BYTES = 32
SKIPPED_NAMES = {"DICOMDIR"}


def read_key(path: Path | None, output: Path) -> tuple[bytes, bool]:
    """The secret key, and whether it persists: read from ``path``, created there (mode 0600) when missing, or a
    random key for this call alone when ``path`` is None. A key file inside the output folder is refused: the
    key would travel with the data it protects."""
    if path is None:
        return secrets.token_bytes(KEY_BYTES), False
    if _inside(path, output):
        raise UsageError("the key file must not be inside the output folder (it would be shared with the data)",
                         path)
    if path.exists():
        key = path.read_bytes()
        if len(key) < 16:
            raise UsageError(f"key file holds {len(key)} bytes; at least 16 are needed", path)
        return key, True
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(KEY_BYTES))
    return path.read_bytes(), True


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def input_files(paths: list[Path]) -> Iterator[tuple[Path, bool]]:
    """Each file to read, and whether the user named it (named files must be DICOM; files found in folders
    that are not DICOM are skipped). Hidden files and DICOMDIR are skipped."""
    for path in paths:
        if not path.exists():
            raise UsageError("no such file or folder", path)
        if path.is_file():
            yield path, True
            continue
        for folder, folders, names in sorted(os.walk(path)):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                if not name.startswith(".") and name.upper() not in SKIPPED_NAMES:
                    yield Path(folder) / name, False


@dataclass
class FileResult:
    """One input file's outcome: ``written``, ``refused`` (may show text in its pixels), ``failed`` or
    ``skipped`` (not DICOM, found in a folder)."""

    source: Path
    status: str
    output: Path | None = None
    reason: str | None = None


@dataclass
class Summary:
    """The counts a report shows; no value and no input name of a patient's."""

    results: list[FileResult] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)


def deidentify_files(paths: list[Path], output: Path, keyed: Keyed, options: Options, overwrite: bool = False,
                     on_result: Callable[[FileResult], None] | None = None) -> Summary:
    """De-identify every DICOM file under ``paths`` into ``output``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    inputs = InputFiles.of(paths)
    summary = Summary()
    for source, named in input_files(paths):
        try:
            dataset = pydicom.dcmread(source)
        except (InvalidDicomError, OSError, EOFError, ValueError) as error:
            if named or not isinstance(error, InvalidDicomError):
                result = FileResult(source, "failed", reason=f"not a readable DICOM file ({_reason(error)})")
            else:
                result = FileResult(source, "skipped", reason="not a DICOM file")
            _record(summary, result, on_result)
            continue
        result = _one(source, dataset, output, keyed, options, overwrite, inputs, summary.changes)
        _record(summary, result, on_result)
    return summary


def _one(source: Path, dataset: object, output: Path, keyed: Keyed, options: Options, overwrite: bool,
         inputs: InputFiles, changes: Changes) -> FileResult:
    from pydicom.dataset import Dataset

    assert isinstance(dataset, Dataset)
    try:
        done = deidentify(dataset, keyed, options)
    except ValueError as error:
        return FileResult(source, "refused", reason=str(error))
    names = [str(dataset.get(keyword, "") or "unknown") for keyword in
             ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    target = output.joinpath(*names[:2], names[2] + ".dcm")
    try:
        check_output(target, overwrite, inputs)
        with atomic_path(target, overwrite=overwrite, inputs=inputs) as temporary:
            dataset.save_as(temporary, enforce_file_format=True)
    except (MitkError, OSError) as error:
        return FileResult(source, "failed", reason=_reason(error))
    except Exception as error:  # pydicom refusing to encode a value: this file fails, the batch goes on
        return FileResult(source, "failed", reason=f"cannot write it ({_reason(error)})")
    changes.add(done)
    return FileResult(source, "written", output=target)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text


def _record(summary: Summary, result: FileResult, on_result: Callable[[FileResult], None] | None) -> None:
    summary.results.append(result)
    if on_result is not None:
        on_result(result)
