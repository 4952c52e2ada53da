"""Sharded batches (``--shard I/N``) and ``mitk manifest merge``.

Real processes on 20 real inputs (crops of the pyradiomics brain and lung volumes in tests/data) through the
threshold segmenter: two concurrent shards write exactly the files of one unsharded run; a shard killed with
SIGKILL resumes with ``--skip-existing``; the split is stable when files are added. The killed shard is held
at a known point by a gate (as in test_interrupt.py), so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import pytest
from helpers import invoke

from mitk.errors import UsageError
from mitk.io.inputs import expand_inputs
from mitk.runner.shards import Shard, merge_manifests, shard_of

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SEGMENT = ["segment", "--plugin", "threshold", "cohort"]

GATED = '''
"""mitk, held right after the label map of call MITK_TEST_GATE_AT is written to its temporary file."""
import os, sys, time
from pathlib import Path

import mitk.io.nifti
from mitk.cli import main

real_write, calls = mitk.io.nifti.write_nifti, [0]


def gated_write(*args, **kwargs):
    real_write(*args, **kwargs)
    calls[0] += 1
    if calls[0] == int(os.environ["MITK_TEST_GATE_AT"]):
        Path(os.environ["MITK_TEST_MARKER"]).write_text(str(os.getpid()))
        time.sleep(120)
        sys.exit("the test never killed this shard")


mitk.io.nifti.write_nifti = gated_write
main(sys.argv[1:])
'''


def environment() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
            "MITK_DISABLE_PLUGIN_AUTOLOAD": "1"}


def start(root: Path, *args: str, launcher: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """``mitk ARGS`` in ``root`` (inputs named relative to it, as a job script would)."""
    program = [str(launcher)] if launcher else ["-m", "mitk"]
    return subprocess.Popen([sys.executable, *program, *args], cwd=root, env={**environment(), **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def summary(**counts: int) -> dict[str, int]:
    """The ``summary`` of ``mitk manifest merge --json``, every shard having run."""
    return {**counts, "in_shards_not_run": 0}


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cohort/``: 20 real volumes, 48×48×12 crops at different places of the brain MR and the lung CT."""
    folder = tmp_path_factory.mktemp("shards")
    (folder / "cohort").mkdir()
    for name in ("brain1", "lung1"):
        image: Any = nib.load(DATA / f"{name}_image.nii.gz")
        for k in range(10):
            i, j = (k % 5) * 16, (k // 5) * 40
            nib.save(image.slicer[i:i + 48, j:j + 48, 4:16], folder / "cohort" / f"{name}_{k:02d}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def runs(root: Path) -> dict[str, tuple[int, str, str]]:
    """One unsharded run and shards 0/2 and 1/2, all three at the same time."""
    processes = {
        "single": start(root, *SEGMENT, "-d", "single", "--manifest", "single.jsonl"),
        **{f"shard{i}": start(root, *SEGMENT, "-d", "sharded", "--shard", f"{i}/2", "--manifest",
                              f"shard{i}.jsonl", "--json") for i in (0, 1)}}
    return {name: finish(process) for name, process in processes.items()}


def assigned(root: Path, shard: Shard) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        return [str(case.path) for case in shard.select(expand_inputs(["cohort"]))]


# ---------------------------------------------------------------------------------------------------
# Parsing and selection
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "index", "count"), [("0/1", 0, 1), ("3/10", 3, 10), (" 9 / 10 ", 9, 10)])
def test_shard_parses(text: str, index: int, count: int) -> None:
    assert Shard.parse(text) == Shard(index, count)
    assert str(Shard.parse(text)) == f"{index}/{count}"


@pytest.mark.parametrize("text", ["3/2", "2/2", "a/b", "0/0", "-1/2", "1", "1/", "/2", "1/2/3", "1.0/2", ""])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        Shard.parse(text)


@pytest.mark.parametrize("value", ["3/2", "a/b", "0/0"])
def test_bad_shard_is_a_one_line_usage_error(run_inprocess: Any, root: Path, value: str) -> None:
    code, _, stderr = run_inprocess(*SEGMENT[:3], str(root / "cohort"), "--shard", value, "-d",
                                         str(root / "never"))
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "--shard" in stderr and "Traceback" not in stderr
    assert not (root / "never").exists()


def test_selection_is_a_partition_that_stays_put_when_files_are_added(root: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(root / "cohort", cohort)
    before = {(i, n): [c.path for c in Shard(i, n).select(expand_inputs([str(cohort)]))]
              for n in (2, 3, 7) for i in range(n)}
    for n in (2, 3, 7):
        parts = [before[(i, n)] for i in range(n)]
        everything = [path for part in parts for path in part]
        assert sorted(everything) == sorted(c.path for c in expand_inputs([str(cohort)]))  # complete
        assert len(set(everything)) == len(everything)  # disjoint
    for k in range(10):  # the cohort grows
        shutil.copy(cohort / f"brain1_{k:02d}.nii.gz", cohort / f"added_{k:02d}.nii.gz")
    for (i, n), old in before.items():
        now = [c.path for c in Shard(i, n).select(expand_inputs([str(cohort)]))]
        assert [path for path in now if not path.name.startswith("added")] == old
    assert {shard_of("cohort/a.nii.gz", 5), shard_of("cohort/./a.nii.gz", 5), shard_of("cohort//a.nii.gz", 5)} \
        == {shard_of("cohort/a.nii.gz", 5)}  # the same input written differently is the same case



def test_order_split_is_balanced_and_independent_of_the_listing_order(root: Path) -> None:
    cases = expand_inputs([str(root / "cohort")])
    names = sorted(str(c.path) for c in cases)
    for n in (2, 3, 7):
        parts = [[str(c.path) for c in Shard(i, n, "order").select(cases)] for i in range(n)]
        assert sorted(name for part in parts for name in part) == names  # complete and disjoint
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # within one case of each other
        assert parts[0] == names[0::n]  # nnU-Net's -part_id/-num_parts: sorted, dealt out in turn
        shuffled = list(reversed(cases))  # listed in another order (another file system): the same split
        assert [[str(c.path) for c in Shard(i, n, "order").select(shuffled)] for i in range(n)] == [
            list(reversed(part)) for part in parts]  # each part keeps the order the inputs were given in


def test_bad_shard_by_is_a_usage_error(run_inprocess: Any, root: Path) -> None:
    with pytest.raises(UsageError, match="--shard-by must be hash or order"):
        Shard.parse("0/2", "random")
    for args in (["--shard-by", "order"], ["--shard", "0/2", "--shard-by", "sorted"], ["--shard-by", "sorted"]):
        code, _, stderr = run_inprocess(*SEGMENT[:3], str(root / "cohort"), *args, "-d", str(root / "never"))
        assert code == 2 and len(stderr.strip().splitlines()) == 1 and "--shard" in stderr, stderr
    assert not (root / "never").exists()


def test_order_shards_run_and_merge(root: Path, run_inprocess: Any, tmp_path: Path) -> None:
    cohort = str(root / "cohort")
    for i in (0, 1):
        code, stdout, stderr = run_inprocess(*SEGMENT[:3], cohort, "-d", tmp_path / "out", "--shard", f"{i}/2",
                                             "--shard-by", "order", "--manifest", tmp_path / f"{i}.jsonl",
                                             "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["summary"]["ok"] == 10 and json.loads(stdout)["shard_by"] == "order"
        header = read_lines(tmp_path / f"{i}.jsonl")[0]
        assert header["by"] == "order" and len(header["listing"]) == 64 and len(header["inputs"]) == 10
    assert len(list((tmp_path / "out").iterdir())) == 20
    code, report, stderr = merge(run_inprocess, tmp_path / "0.jsonl", tmp_path / "1.jsonl", "-o",
                                 tmp_path / "merged.jsonl")
    assert code == 0 and report["complete"] and report["summary"]["ok"] == 20, stderr
    assert read_lines(tmp_path / "merged.jsonl")[0]["by"] == "order"



def test_a_name_clash_across_shards_fails_the_input_a_local_run_fails(root: Path, run_inprocess: Any,
                                                                      tmp_path: Path) -> None:
    """Two inputs with one file name and one --output-dir: the batch's order decides which owns the name, so
    the second fails (and the first is written) whichever shard runs first, as in one unsharded run."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(root / "cohort" / "brain1_00.nii.gz", tmp_path / folder / "x.nii.gz")
    inputs = [str(tmp_path / "a"), str(tmp_path / "b")]

    def run(out: str, *shard: str) -> tuple[int, list[tuple[str, str]]]:
        code, stdout, _ = run_inprocess(*SEGMENT[:3], *inputs, "-d", tmp_path / out, *shard, "--json")
        return code, [(Path(c["input"]).parent.name, c["status"]) for c in json.loads(stdout)["cases"]]

    assert run("single") == (3, [("a", "ok"), ("b", "failed")])
    assert run("sharded", "--shard", "1/2", "--shard-by", "order") == (1, [("b", "failed")])  # first, still loses
    assert run("sharded", "--shard", "0/2", "--shard-by", "order") == (0, [("a", "ok")])
    single, sharded = (tmp_path / name / "x_seg.nii.gz" for name in ("single", "sharded"))
    assert sharded.read_bytes() == single.read_bytes()


# ---------------------------------------------------------------------------------------------------
# Real runs
# ---------------------------------------------------------------------------------------------------


def test_two_concurrent_shards_write_exactly_the_single_runs_files(root: Path, runs: Any) -> None:
    for name, (code, _, stderr) in runs.items():
        assert code == 0, f"{name}: {stderr}"
    single = sorted(path.name for path in (root / "single").iterdir())
    assert len(single) == 20
    assert sorted(path.name for path in (root / "sharded").iterdir()) == single
    for name in single:
        assert (root / "sharded" / name).read_bytes() == (root / "single" / name).read_bytes(), name
    done: list[str] = []
    for i in (0, 1):
        header, *records = read_lines(root / f"shard{i}.jsonl")
        expected = assigned(root, Shard(i, 2))
        assert header == {"mitk_manifest": 1, "task": "segment", "shard": i, "shards": 2, "by": "hash",
                          "total": 20, "inputs": expected}
        assert expected and [r["input"] for r in records] == expected
        assert all(r["shard"] == i and r["status"] == "ok" for r in records)
        assert json.loads(runs[f"shard{i}"][1])["summary"]["ok"] == len(expected)
        done += expected
    assert sorted(done) == sorted(r["input"] for r in read_lines(root / "single.jsonl"))  # disjoint, complete
    assert "mitk_manifest" not in read_lines(root / "single.jsonl")[0]  # unsharded manifests are unchanged
    assert "shard" not in read_lines(root / "single.jsonl")[0]


def test_merge_of_both_shards_is_complete(root: Path, runs: Any, run_inprocess: Any, tmp_path: Path) -> None:
    merged = tmp_path / "merged.jsonl"
    code, stdout, stderr = run_inprocess("manifest", "merge", root / "shard0.jsonl", root / "shard1.jsonl",
                                         "-o", merged, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["complete"] and report["shards_seen"] == [0, 1] and report["shards_missing"] == []
    assert report["summary"] == summary(cases=20, ok=20, skipped=0, failed=0, missing=0)
    header, *records = read_lines(merged)
    assert header["shards"] == 2 and header["merged"] == [0, 1] and len(header["inputs"]) == 20
    assert sorted(r["input"] for r in records) == header["inputs"]
    code, stdout, _ = run_inprocess("manifest", "merge", merged, "--json")  # a merge merges again
    assert code == 0 and json.loads(stdout)["summary"]["ok"] == 20


def test_killed_shard_resumes_without_redoing_finished_cases(root: Path, runs: Any, tmp_path: Path,
                                                             run_inprocess: Any) -> None:
    launcher, marker = tmp_path / "gated.py", tmp_path / "held"
    launcher.write_text(GATED)
    manifest = root / "killed.jsonl"
    args = [*SEGMENT, "-d", "killed", "--shard", "0/2", "--manifest", str(manifest)]
    process = start(root, *args, launcher=launcher, MITK_TEST_GATE_AT="2", MITK_TEST_MARKER=str(marker))
    for _ in range(2400):
        if marker.exists() or process.poll() is not None:
            break
        time.sleep(0.05)
    assert marker.exists(), process.communicate()[1]
    process.send_signal(signal.SIGKILL)  # held after writing case 2 to its temporary file
    process.wait(timeout=60)
    process.communicate()

    header, *records = read_lines(manifest)
    expected = assigned(root, Shard(0, 2))
    assert header["inputs"] == expected and len(expected) >= 3
    assert [(r["input"], r["status"]) for r in records] == [(expected[0], "ok")]  # its first record landed
    first = root / records[0]["output"]
    stamp = first.stat().st_mtime_ns
    assert [p for p in (root / "killed").iterdir() if ".partial" in p.name]  # what SIGKILL leaves behind

    code, _, stderr = finish(start(root, *args, "--skip-existing"))
    assert code == 0, stderr
    lines = read_lines(manifest)
    rerun = lines[lines.index(header, 1):]
    assert rerun[0] == header
    assert [(r["input"], r["status"]) for r in rerun[1:]] == [(expected[0], "skipped"),
                                                              *((name, "ok") for name in expected[1:])]
    assert first.stat().st_mtime_ns == stamp  # not redone
    names = sorted(path.name for path in (root / "killed").iterdir())
    assert not [name for name in names if ".partial" in name]
    assert names == sorted(Path(r["output"]).name for r in rerun[1:])
    for name in names:
        assert (root / "killed" / name).read_bytes() == (root / "single" / name).read_bytes()

    code, stdout, stderr = run_inprocess("manifest", "merge", manifest, root / "shard1.jsonl", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["summary"] == summary(cases=20, ok=20, skipped=0, failed=0, missing=0)


def test_a_shard_without_inputs_does_nothing_and_succeeds(root: Path) -> None:
    count = 97
    empty = next(i for i in range(count) if not assigned(root, Shard(i, count)))
    probe = ("import json, sys\nfrom mitk.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as done:"
             "\n    print(json.dumps({'code': done.code, 'torch': 'torch' in sys.modules}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *SEGMENT, "--shard", f"{empty}/{count}", "-d", "none",
                           "--manifest", "empty.jsonl", "--json"], cwd=root, env=environment(),
                          capture_output=True, text=True, timeout=120)
    *messages, result = done.stderr.strip().splitlines()
    assert json.loads(result) == {"code": 0, "torch": False}  # the model is not even loaded
    assert any("no inputs fall in this shard" in message for message in messages)
    assert json.loads(done.stdout)["summary"]["total"] == 0
    assert read_lines(root / "empty.jsonl") == [{"mitk_manifest": 1, "task": "segment", "shard": empty,
                                                 "shards": count, "by": "hash", "total": 20, "inputs": []}]
    assert not (root / "none").exists()


@pytest.mark.parametrize("shard", [None, "1/2"])
def test_a_manifest_starts_on_a_line_of_its_own_after_a_killed_write(tmp_path: Path, shard: str | None) -> None:
    """Every run, sharded or not, appends after a record cut short by SIGKILL on a new line: both the broken
    line and the new records stay readable apart."""
    from mitk.io.inputs import Case
    from mitk.runner.shards import ends_mid_line

    source = DATA / "brain1_image.nii.gz"
    inputs = [tmp_path / f"{name}.nii.gz" for name in ("a", "b")]
    for path in inputs:
        path.write_bytes(source.read_bytes())
    manifest = tmp_path / "runs.jsonl"
    manifest.write_text(json.dumps(record(str(inputs[0]))) + "\n" + '{"input": "b", "sta')  # cut by SIGKILL
    assert ends_mid_line(manifest)
    extra = ["--shard", shard] if shard else []
    code, _, err = invoke(["segment", *map(str, inputs), "-p", "threshold", "-d", str(tmp_path / "out"),
                           "--manifest", str(manifest), *extra])
    assert code == 0, err
    lines = manifest.read_text().splitlines()
    assert lines[1] == '{"input": "b", "sta'
    written = [json.loads(line) for line in lines[2:]]
    if shard:
        header, *written = written
        assert header["shard"] == 1 and header["inputs"] == [str(c.path) for c in Shard(1, 2).select(
            [Case(p) for p in inputs])]
        assert all(entry["shard"] == 1 for entry in written)
    else:
        assert len(written) == 2 and all("shard" not in entry for entry in written)
    assert all(entry["status"] == "ok" for entry in written)


# ---------------------------------------------------------------------------------------------------
# Merging, on manifests written by hand
# ---------------------------------------------------------------------------------------------------


def header(shard: int, shards: int, *inputs: str, total: int = 4) -> dict[str, Any]:
    return {"mitk_manifest": 1, "task": "segment", "shard": shard, "shards": shards, "total": total,
            "inputs": list(inputs)}


def record(name: str, status: str = "ok", shard: int = 0, **extra: Any) -> dict[str, Any]:
    error = f"{name}: not a NIfTI file" if status == "failed" else None
    return {"input": name, "output": f"out/{name}_seg.nii.gz", "status": status, "error": error, "seconds": 0.1,
            "shard": shard, **extra}


def manifest(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def merge(run_inprocess: Any, *args: Any) -> tuple[int, dict[str, Any], str]:
    code, stdout, stderr = run_inprocess("manifest", "merge", *args, "--json")
    return code, (json.loads(stdout) if stdout else {}), stderr


def test_merge_reports_a_shard_that_never_ran(tmp_path: Path, run_inprocess: Any) -> None:
    first = manifest(tmp_path / "0.jsonl", header(0, 3, "a", total=3), record("a"))
    second = manifest(tmp_path / "1.jsonl", header(1, 3, "b", total=3), record("b", shard=1))
    code, report, stderr = merge(run_inprocess, first, second)
    assert code == 3 and report["shards_missing"] == [2] and not report["complete"]
    assert report["summary"] == {"cases": 2, "ok": 2, "skipped": 0, "failed": 0, "missing": 0,
                                 "in_shards_not_run": 1}
    assert "1 more in shards that never ran" in stderr and "rerun shard(s) 2 of 3" in stderr
    code, stdout, _ = run_inprocess("manifest", "merge", first, second)  # the table for humans
    assert code == 3 and "2      NO   -" in stdout


def test_merge_reports_missing_and_failed_cases(tmp_path: Path, run_inprocess: Any) -> None:
    first = manifest(tmp_path / "0.jsonl", header(0, 2, "a", "b", "c"), record("a"), record("b", "failed"))
    second = manifest(tmp_path / "1.jsonl", header(1, 2, "d"), record("d", shard=1))
    code, report, stderr = merge(run_inprocess, first, second)
    assert code == 3, stderr
    assert report["summary"] == summary(cases=4, ok=2, skipped=0, failed=1, missing=1)
    assert report["failed"] == [{"input": "b", "shard": 0, "error": "b: not a NIfTI file"}]
    assert report["missing"] == [{"input": "c", "shard": 0, "error": None}]
    code, stdout, _ = run_inprocess("manifest", "merge", first, second)
    assert "failed (1):" in stdout and "b: not a NIfTI file" in stdout and "missing (1):" in stdout


def test_merge_takes_the_latest_record_and_skipped_after_ok_is_done(tmp_path: Path, run_inprocess: Any) -> None:
    """Shard 0 was killed after a; its rerun with --skip-existing skips a, redoes b that had failed, does c."""
    first = manifest(tmp_path / "0.jsonl", header(0, 2, "a", "b", "c"), record("a", voxels=7), record("b", "failed"),
                     '{"input": "c", "outp',  # cut short by SIGKILL
                     header(0, 2, "a", "b", "c"), record("a", "skipped"), record("b"), record("c"))
    second = manifest(tmp_path / "1.jsonl", header(1, 2, "d"), record("d", "skipped", shard=1))
    code, report, stderr = merge(run_inprocess, first, second, "-o", tmp_path / "merged.jsonl")
    assert code == 0, stderr
    assert report["summary"] == summary(cases=4, ok=3, skipped=1, failed=0, missing=0)
    assert report["damaged_lines"] == [f"{tmp_path / '0.jsonl'}:4"] and "damaged line" in stderr
    merged = read_lines(tmp_path / "merged.jsonl")
    assert [(r["input"], r["status"]) for r in merged[1:]] == [("a", "ok"), ("b", "ok"), ("c", "ok"),
                                                                ("d", "skipped")]
    assert merged[1]["voxels"] == 7  # the record of the run that did the work


def test_merge_exit_1_when_nothing_succeeded(tmp_path: Path, run_inprocess: Any) -> None:
    only = manifest(tmp_path / "0.jsonl", header(0, 1, "a", "b", total=2), record("a", "failed"), record("b", "failed"))
    assert merge(run_inprocess, only)[0] == 1
    report = merge_manifests([only])
    assert report.exit_code == 1 and report.shards_to_rerun() == [0]


def test_merge_refuses_bad_input_and_protects_files(tmp_path: Path, run_inprocess: Any) -> None:
    first = manifest(tmp_path / "0.jsonl", header(0, 2, "a", total=1), record("a"))
    other_split = manifest(tmp_path / "x.jsonl", header(1, 3, "b"), record("b", shard=1))
    code, _, stderr = run_inprocess("manifest", "merge", first, other_split)
    assert code == 2 and "different splits (2 and 3 shards)" in stderr
    image = DATA / "brain1_image.nii.gz"
    code, _, stderr = run_inprocess("manifest", "merge", first, image)
    assert code == 1 and stderr.strip() == f"mitk: error: {image}: not a mitk manifest (no JSON records)"
    code, _, stderr = run_inprocess("manifest", "merge", first, tmp_path / "nope.jsonl")
    assert code == 1 and "no such manifest" in stderr and "Traceback" not in stderr
    before = first.read_bytes()
    code, _, stderr = run_inprocess("manifest", "merge", first, "-o", first, "--overwrite")
    assert code == 2 and "refusing to write over the input" in stderr and first.read_bytes() == before
    target = tmp_path / "merged.jsonl"
    target.write_text("keep\n")
    code, _, stderr = run_inprocess("manifest", "merge", first, "-o", target)
    assert code == 1 and "--overwrite" in stderr and target.read_text() == "keep\n"
    code, _, _ = run_inprocess("manifest", "merge", manifest(tmp_path / "1.jsonl", header(1, 2, total=1)), first, "-o",
                               target, "--overwrite")
    assert code == 0 and read_lines(target)[1] == record("a")
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_merge_refuses_order_shards_that_listed_different_inputs(tmp_path: Path, run_inprocess: Any) -> None:
    """Sorted and dealt out, a listing that changed between shards can leave a case in no shard or in two."""
    order = {"by": "order", "listing": "1" * 64}
    first = manifest(tmp_path / "0.jsonl", {**header(0, 2, "a", "c"), **order}, record("a"), record("c"))
    grown = manifest(tmp_path / "1.jsonl", {**header(1, 2, "b", total=5), **order, "listing": "2" * 64},
                     record("b", shard=1))
    code, _, stderr = run_inprocess("manifest", "merge", first, grown)
    assert code == 2 and "listed different inputs" in stderr and len(stderr.strip().splitlines()) == 1
    rerun = manifest(tmp_path / "2.jsonl", {**header(1, 2, "b", "d"), **order}, record("b", shard=1),
                     record("d", shard=1))
    code, report, stderr = merge(run_inprocess, first, grown, rerun)  # shard 1 rerun on the same listing
    assert code == 0 and report["summary"]["ok"] == 4, stderr
    hashed = manifest(tmp_path / "3.jsonl", header(1, 2, "b"), record("b", shard=1))
    code, _, stderr = run_inprocess("manifest", "merge", first, hashed)
    assert code == 2 and "different splits (--shard-by hash and order)" in stderr


def test_a_merged_manifest_merges_again_with_its_split_and_listing(tmp_path: Path, run_inprocess: Any) -> None:
    """A merge's own header is read back (not a damaged line): the shards it saw, its split and, for an order
    split, its listing, so that the checks hold across merges."""
    order = {"by": "order", "listing": "1" * 64}
    first = manifest(tmp_path / "0.jsonl", {**header(0, 2, "a", "c"), **order}, record("a"), record("c"))
    second = manifest(tmp_path / "1.jsonl", {**header(1, 2, "b", "d"), **order}, record("b", shard=1),
                      record("d", shard=1))
    merged = tmp_path / "merged.jsonl"
    code, _, stderr = merge(run_inprocess, first, second, "-o", merged)
    assert code == 0, stderr
    assert read_lines(merged)[0]["by"] == "order" and read_lines(merged)[0]["listing"] == "1" * 64
    code, report, stderr = merge(run_inprocess, merged)
    assert code == 0 and report["complete"] and report["shards_seen"] == [0, 1], stderr
    assert report["damaged_lines"] == [] and "damaged" not in stderr
    assert report["summary"]["ok"] == 4
    grown = manifest(tmp_path / "g.jsonl", {**header(1, 2, "b", "d", "e", total=5), **order, "listing": "2" * 64},
                     record("e", shard=1))
    code, _, stderr = run_inprocess("manifest", "merge", merged, grown)
    assert code == 2 and "listed different inputs" in stderr
    hashed = manifest(tmp_path / "h.jsonl", header(1, 2, "b"), record("b", shard=1))
    code, _, stderr = run_inprocess("manifest", "merge", merged, hashed)
    assert code == 2 and "different splits (--shard-by hash and order)" in stderr
    unsharded = manifest(tmp_path / "u.jsonl", record("x"))
    code, _, stderr = merge(run_inprocess, unsharded, "-o", tmp_path / "u_merged.jsonl")
    assert code == 0, stderr
    code, report, stderr = merge(run_inprocess, tmp_path / "u_merged.jsonl")  # "by": null, no shards
    assert code == 0 and report["damaged_lines"] == [], stderr


def test_a_symlink_loop_among_the_inputs_fails_that_case_only(root: Path, run_inprocess: Any,
                                                              tmp_path: Path) -> None:
    """Output names are claimed for the whole batch before any case runs; an input in a looping folder fails
    its own case, as before, not the batch."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    good = tmp_path / "good.nii.gz"
    shutil.copy(root / "cohort" / "brain1_00.nii.gz", good)
    for out in ([], ["-d", str(tmp_path / "out")]):
        code, stdout, stderr = run_inprocess(*SEGMENT[:3], good, tmp_path / "loop" / "a.nii.gz", *out, "--json",
                                             "--overwrite")
        assert code == 3, stderr
        assert [c["status"] for c in json.loads(stdout)["cases"]] == ["ok", "failed"]


def test_merge_imports_neither_torch_nor_monai(tmp_path: Path) -> None:
    first = manifest(tmp_path / "0.jsonl", header(0, 1, "a"), record("a"))
    code = ("import sys\nfrom mitk.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))")
    done = subprocess.run([sys.executable, "-c", code, "manifest", "merge", str(first)], env=environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_classify_csv_cannot_be_split_over_shards(tmp_path: Path) -> None:
    """One --csv per batch: every shard would write (or replace) it with its own rows only."""
    code, _, err = invoke(["classify", str(DATA / "brain1_image.nii.gz"), "-p", "densenet121", "--shard", "0/2",
                           "--csv", str(tmp_path / "preds.csv")])
    assert code == 2 and "cannot be split over --shard" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "preds.csv").exists()


@pytest.mark.parametrize("damage", [{"inputs": 5}, {"task": ["x"]}, {"shard": "0"}])
def test_a_header_with_wrong_types_is_a_damaged_line_not_a_crash(tmp_path: Path, damage: dict[str, Any]) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({**header(0, 1, "a"), **damage}) + "\n" + json.dumps(record("a")) + "\n")
    report = merge_manifests([path])
    assert report.damaged_lines == [f"{path}:1"]
    assert [case.status for case in report.cases] == ["ok"]
