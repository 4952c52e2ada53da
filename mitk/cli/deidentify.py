"""``mitk deidentify``: apply DICOM PS3.15's Basic Application Level Confidentiality Profile to DICOM inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mitk.cli.common import STATE, JsonOption, OverwriteOption, emit_json, plain_table, say

if TYPE_CHECKING:
    from mitk.io.dicom.deidentify_files import FileResult

EPILOG = ("Exit status: 0 every file written; 1 none written; 2 usage error; 3 some file failed or was refused. "
          "Outputs are OUT/<study>/<series>/<instance>.dcm, named by remapped UIDs.")


def deidentify(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT...", help="DICOM files or folders (searched "
                                                                          "recursively).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="Secret key file for the UID mapping, pseudonyms and date shifts: the same key maps the "
                      "same study the same way in every call. Created (mode 0600) when missing. Keep it "
                      "private; without it the mapping holds for this call only.")] = None,
    retain_dates: Annotated[bool, typer.Option(
        "--retain-dates", help="Retain longitudinal temporal information with modified dates: every date moves "
                               "back by one secret number of days per patient (1-10 years); times are kept.")
    ] = False,
    retain_device: Annotated[bool, typer.Option(
        "--retain-device", help="Retain device identity (serial numbers, station names).")] = False,
    retain_patient_characteristics: Annotated[bool, typer.Option(
        "--retain-patient-characteristics", help="Retain sex, age, size and weight.")] = False,
    clean_descriptors: Annotated[bool, typer.Option(
        "--clean-descriptors", help="Keep free-text descriptions (study, series, protocol, comments) with the "
                                    "patient's names, IDs and dates removed from them.")] = False,
    allow_burned_in: Annotated[bool, typer.Option(
        "--allow-burned-in", help="Also process images that may show identifying text in their pixels "
                                  "(BurnedInAnnotation YES, secondary captures, screen saves); their pixels are "
                                  "not changed.")] = False,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """De-identify DICOM files with the PS3.15 Basic Profile (the standard's full attribute table).

    Every instance UID is remapped consistently (references between files stay intact), the patient gets a
    pseudonym (a keyed hash of the PatientID), private attributes, overlays and curves are removed; options
    retain shifted dates, device identity, patient characteristics or cleaned descriptions. A report of what
    changed (counts per attribute, never a value) is written as OUT/deidentify-report-<time>.json.
    """
    import datetime
    import json
    import sys

    from mitk.errors import UsageError
    from mitk.extras import require_module
    from mitk.io.atomic import check_writable_folder, write_text_atomic
    from mitk.io.dicom.confidentiality import Keyed, Options, table_edition
    from mitk.io.dicom.deidentify_files import deidentify_files, read_key

    require_module("dicomanonymizer", "mitk deidentify")
    for path in inputs:
        if path.exists() and path.is_dir() and (output.resolve() == path.resolve()
                                                or path.resolve() in output.resolve().parents):
            raise UsageError("the output folder must not be inside an input folder", output)
    output.mkdir(parents=True, exist_ok=True)
    check_writable_folder(output)
    secret, persists = read_key(key, output)
    if not persists and not STATE.quiet and not as_json:
        say("no --key: UIDs, pseudonyms and date shifts are consistent within this call only")
    options = Options(retain_dates, retain_device, retain_patient_characteristics, clean_descriptors,
                      allow_burned_in)

    def report_line(result: FileResult) -> None:
        status, reason = result.status, result.reason
        if status in ("failed", "refused"):
            sys.stderr.write(f"mitk: {status}: {result.source}: {reason}\n")

    summary = deidentify_files(inputs, output, Keyed(secret), options, overwrite, on_result=report_line)
    counts = {status: summary.count(status) for status in ("written", "refused", "failed", "skipped")}
    if counts["written"] + counts["refused"] + counts["failed"] == 0:  # before any report is written
        raise UsageError("no DICOM file found in the inputs", inputs[0])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "mitk": "deidentify", "profile": table_edition(), "options": [meaning for _, meaning in options.codes()],
        "key": "persistent" if persists else "this call only", "files": counts,
        "refused": sorted({result.reason or "" for result in summary.results if result.status == "refused"}),
        "attributes": summary.changes.as_dict(),
    }
    report = output / f"deidentify-report-{stamp}.json"
    write_text_atomic(report, json.dumps(document, indent=2) + "\n", overwrite=overwrite)
    code = 0 if counts["refused"] + counts["failed"] == 0 else (1 if counts["written"] == 0 else 3)
    if as_json:
        emit_json({**document, "report": str(report), "exit_code": code})
    else:
        rows = [{"": status, "files": count} for status, count in counts.items() if count]
        say(plain_table(rows, ["", "files"]))
        say(f"wrote {counts['written']} file(s) under {output}; report {report.name}")
    raise typer.Exit(code)
