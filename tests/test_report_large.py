"""A 1,000-case batch stays usable (a sortable summary of bounded size linking one file per case), and records of
two runs given as two manifests are said to be mixed, per case."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import invoke
from report_batch import Batch, shared_batch


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    return shared_batch(tmp_path_factory.getbasetemp())


def test_a_thousand_cases_from_two_runs(batch: Batch, tmp_path: Path) -> None:
    record = json.loads(batch.manifests["segment"].read_text().splitlines()[0])
    assert record["status"] == "ok"
    manifests = []
    for run, bins in ((1, record["provenance"]["settings"]["bins"]), (2, 64)):
        lines = []
        for number in range(500):  # inputs that are gone: the report says so and draws no picture
            name = tmp_path / f"case{run}_{number:04d}.nii.gz"
            provenance = {**record["provenance"], "input_path": str(name),
                          "settings": {**record["provenance"]["settings"], "bins": bins}}
            lines.append(json.dumps({**record, "input": str(name), "provenance": provenance}))
        manifests.append(tmp_path / f"segment{run}.jsonl")
        manifests[-1].write_text("\n".join(lines) + "\n")
    target = tmp_path / "summary.html"
    code, stdout, stderr = invoke(["report", *map(str, manifests), "-o", str(target), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["cases"] == 1000
    summary = target.read_text()
    files = list((tmp_path / "summary_cases").glob("case-*.html"))
    assert len(files) == 1000  # above 50 cases: one file per case, without being asked
    assert len(re.findall(r"<tr>", summary)) >= 1000 and 'id="cases"' in summary
    assert target.stat().st_size < 2_000_000
    assert "<th>segment run 1</th>" in summary and "<th>segment run 2</th>" in summary
    first = (tmp_path / "summary_cases" / "case-00001.html").read_text()
    assert "outputs of 2 different segment runs are mixed here" in first and "segment run 1" in first
