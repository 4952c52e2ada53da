"""A failed case's record carries the provenance of its attempt (input digest where the file reads, plugin,
settings, versions), and ``mitk report`` shows it in the case's section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from helpers import invoke


def test_a_failed_case_has_provenance_and_the_report_shows_it(brain_mr: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(brain_mr.read_bytes()[:3000])  # a real file cut short, as a killed copy leaves it
    manifest = tmp_path / "m.jsonl"
    code, _, stderr = invoke(["segment", str(brain_mr), str(damaged), "--plugin", "threshold", "--set", "bins=64",
                              "-d", str(tmp_path / "out"), "--manifest", str(manifest)])
    assert code == 3, stderr
    records = {Path(r["input"]).name: r for r in map(json.loads, manifest.read_text().splitlines())}
    failed, ok = records["damaged.nii.gz"], records[brain_mr.name]
    assert failed["status"] == "failed" and failed["error"]
    provenance = failed["provenance"]
    assert provenance["input_digest"]["sha256"] == hashlib.sha256(damaged.read_bytes()).hexdigest()
    assert provenance["plugin"] == "threshold" and provenance["settings"]["bins"] == 64
    assert provenance["versions"]["mitk"] and provenance["invocation"]["overrides"] == {"bins": 64}
    assert {k: v for k, v in provenance.items() if k not in ("input_digest", "input_path")} == {
        k: v for k, v in ok["provenance"].items() if k not in ("input_digest", "input_path")}
    report = tmp_path / "report.html"
    code, _, stderr = invoke(["report", str(manifest), "-o", str(report)])
    assert code in (0, 1), stderr
    html = report.read_text()
    section = html[html.index("Case 2: damaged.nii.gz"):]  # cases in manifest order
    assert provenance["input_digest"]["sha256"] in section and "segment run 1" in section
    assert "different segment runs are mixed" not in html
