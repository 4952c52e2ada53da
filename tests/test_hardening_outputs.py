"""Hardening of the batch contract's outputs and messages, with ``mitk segment`` on real T1 volumes.

Side outputs never land on an input; a crash at any point resumes with ``--skip-existing``; temporary names stay
legal; a symlink loop is one failed case; an unwritable output folder is found before the model loads; file
names print as text (never markup, control characters escaped); OS conditions and library errors are one line;
library warnings are hidden unless ``--debug``.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, use_segmenter

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture
def folder(tmp_path: Path, anatomical_t1: Path) -> Path:
    """``in/`` with two real T1 volumes, ``a.nii`` and ``b.nii``."""
    directory = tmp_path / "in"
    directory.mkdir()
    for name in ("a.nii", "b.nii"):
        shutil.copy(anatomical_t1, directory / name)
    return directory


def segment(*args: Any) -> tuple[int, str, str]:
    return invoke(["segment", "--plugin", "threshold", *map(str, args)])


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())




# -------------------------------------------------------------------------------------------------
# 1. Side outputs never destroy inputs
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_manifest_over_an_input_is_refused_before_any_work(folder: Path, tmp_path: Path, kind: str) -> None:
    image = folder / "a.nii"
    before = image.read_bytes()
    manifest = {"same": image, "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[kind]
    if kind == "symlink":
        manifest.symlink_to(image)
    elif kind == "hardlink":
        os.link(image, manifest)
    for flags in ([], ["--overwrite"]):
        code, stdout, stderr = segment(image, "-d", tmp_path / "out", "--manifest", manifest, *flags)
        assert code == 2 and stdout == "", stderr
        assert "refusing to write over the input" in stderr and len(stderr.strip().splitlines()) == 1
    assert image.read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_an_output_never_lands_on_another_input_of_the_call(folder: Path) -> None:
    """``a``'s label map would be ``a_seg.nii``... which is also given as an input: refused even with --overwrite."""
    image, other = folder / "a.nii", folder / "a_seg.nii.gz"
    other.write_bytes(gzip.compress((folder / "b.nii").read_bytes()))
    before = other.read_bytes()
    code, stdout, stderr = segment(image, other, "--overwrite", "--json")
    assert code == 3, stderr
    first, second = json.loads(stdout)["cases"]
    assert first["status"] == "failed" and "refusing to write over the input" in first["error"]
    assert second["status"] == "ok"
    assert other.read_bytes() == before
    assert names(folder) == ["a.nii", "a_seg.nii.gz", "a_seg_seg.nii.gz", "b.nii"]


def test_refuse_inputs_compares_resolved_paths_and_inodes(tmp_path: Path) -> None:
    from mitk.errors import UsageError
    from mitk.io.atomic import InputFiles, atomic_path, refuse_inputs

    image = tmp_path / "image.nii"
    image.write_bytes(b"input")
    (tmp_path / "sub").mkdir()
    (tmp_path / "symlink.nii").symlink_to(image)
    os.link(image, tmp_path / "hardlink.nii")
    inputs = InputFiles.of([image])
    for target in (image, tmp_path / "sub" / ".." / "image.nii", tmp_path / "symlink.nii", tmp_path / "hardlink.nii"):
        with pytest.raises(UsageError, match="refusing to write over the input"):
            refuse_inputs(target, inputs)
        with pytest.raises(UsageError), atomic_path(target, overwrite=True, inputs=[image]) as temporary:
            temporary.write_bytes(b"output")
    refuse_inputs(tmp_path / "other.nii", [image])  # anything else is fine
    assert image.read_bytes() == b"input" and sorted(p.name for p in tmp_path.iterdir()) == [
        "hardlink.nii", "image.nii", "sub", "symlink.nii"]


# -------------------------------------------------------------------------------------------------
# 2. A crash between a case's files resumes with --skip-existing
# -------------------------------------------------------------------------------------------------


def test_label_map_is_committed_last_and_skip_existing_resumes_after_a_crash(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    renamed: list[str] = []
    real_replace = os.replace

    def crash_before_label_map(source: Any, target: Any) -> None:
        renamed.append(Path(target).name)
        if str(target).endswith("_seg.nii.gz"):
            raise OSError(errno.EIO, "Input/output error")  # the machine goes down between two renames
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_before_label_map)
    code, _, _ = segment(folder / "a.nii", "-d", out, "--stats")
    assert code == 1
    assert renamed == ["a_seg_stats.csv", "a_seg.nii.gz"]  # companions first, the label map last
    assert names(out) == ["a_seg_stats.csv"]

    monkeypatch.setattr(os, "replace", real_replace)
    code, _, stderr = segment(folder / "a.nii", "-d", out, "--stats", "--skip-existing")
    assert code == 0, stderr
    assert names(out) == ["a_seg.nii.gz", "a_seg_stats.csv"]
    assert "label" in (out / "a_seg_stats.csv").read_text()


# -------------------------------------------------------------------------------------------------
# 3. Legal names stay legal
# -------------------------------------------------------------------------------------------------


def test_long_output_names_are_written_and_overlong_ones_refused_in_one_line(folder: Path, tmp_path: Path) -> None:
    long_input = folder / ("L" * 240 + ".nii")  # output name: 251 bytes, legal
    overlong_input = folder / ("X" * 247 + ".nii")  # output name: 258 bytes, no file system takes it
    shutil.copy(folder / "a.nii", long_input)
    shutil.copy(folder / "a.nii", overlong_input)
    out = tmp_path / "out"
    code, stdout, stderr = segment(long_input, overlong_input, "-d", out, "--stats", "--json")
    assert code == 3, stderr
    ok, refused = json.loads(stdout)["cases"]
    assert ok["status"] == "ok", ok["error"]
    assert refused["status"] == "failed" and "file name too long" in refused["error"]
    assert "internal error" not in refused["error"] and "X" * 247 + "_seg.nii.gz" in refused["error"]
    assert names(out) == ["L" * 240 + "_seg.nii.gz", "L" * 240 + "_seg_stats.csv"]


# -------------------------------------------------------------------------------------------------
# 5. Symlink loops and unwritable output folders
# -------------------------------------------------------------------------------------------------


def test_a_symlink_loop_is_one_failed_case(folder: Path, tmp_path: Path) -> None:
    (folder / "loop1.nii").symlink_to(folder / "loop2.nii")
    (folder / "loop2.nii").symlink_to(folder / "loop1.nii")
    (folder / "cycle").symlink_to(folder)  # a folder loop inside a folder input
    code, stdout, stderr = segment(folder / "loop1.nii", folder, "-d", tmp_path / "out", "--json")
    assert code == 3, stderr
    records = json.loads(stdout)["cases"]
    assert [(Path(r["input"]).name, r["status"]) for r in records] == [
        ("loop1.nii", "failed"), ("a.nii", "ok"), ("b.nii", "ok")]
    assert records[0]["error"] == f"{folder / 'loop1.nii'}: broken symlink or symlink loop"


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder on which creating files fails with EROFS, as on a read-only mount; and a model that must not load."""
    import mitk.runner.model

    folder = tmp_path / "readonly"
    folder.mkdir()
    real_open = os.open

    def open_read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and Path(path).parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded although the output folder cannot be written to")

    monkeypatch.setattr(os, "open", open_read_only)
    monkeypatch.setattr(mitk.runner.model, "load_model", no_model)
    return folder


@pytest.mark.parametrize("where", ["-d", "-o", "-d below"])
def test_an_unwritable_output_folder_is_found_before_the_model_loads(folder: Path, read_only: Path,
                                                                     where: str) -> None:
    target = {"-d": ["-d", read_only], "-o": ["-o", read_only / "a_seg.nii.gz"],
              "-d below": ["-d", read_only / "new" / "folder"]}[where]
    code, stdout, stderr = segment(folder / "a.nii", *target)
    assert code == 2 and stdout == "", stderr
    assert "Read-only file system" in stderr and len(stderr.strip().splitlines()) == 1
    assert names(read_only) == []


def test_a_folder_without_write_permission_is_found_before_any_work(folder: Path, tmp_path: Path) -> None:
    """Without write permission (for root, which ignores mode bits: the immutable attribute)."""
    import subprocess

    locked = tmp_path / "locked"
    locked.mkdir()
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    lock, unlock = (["chattr", "+i", str(locked)], ["chattr", "-i", str(locked)]) if as_root else (None, None)
    if lock:
        subprocess.run(lock, check=True)
    else:
        locked.chmod(0o555)
    try:
        code, _, stderr = segment(folder / "a.nii", "-d", locked)
    finally:
        if unlock:
            subprocess.run(unlock, check=True)
        else:
            locked.chmod(0o755)
    assert code == 2 and ("Permission denied" in stderr or "Operation not permitted" in stderr), stderr
    assert len(stderr.strip().splitlines()) == 1


# -------------------------------------------------------------------------------------------------
# 8. Messages
# -------------------------------------------------------------------------------------------------


def test_brackets_in_file_names_print_as_text(folder: Path, tmp_path: Path) -> None:
    (folder / "x[").mkdir()
    bracketed = [folder / "sub01_[flair].nii", folder / "x[" / "].nii", folder / "[red]alert.nii"]
    for path in bracketed:
        shutil.copy(folder / "a.nii", path)
    code, _, stderr = segment(*bracketed, "-d", tmp_path / "out")
    assert code == 0, stderr
    for path in bracketed:
        assert str(path) in stderr
    assert "segment: 3 ok, 0 skipped, 0 failed of 3" in stderr


def test_control_characters_in_names_are_escaped(folder: Path, tmp_path: Path) -> None:
    strange = folder / "evil\x1b[2Jname\nsecond line.nii"
    shutil.copy(folder / "a.nii", strange)
    (folder / "a.nii").unlink()
    broken = folder / "broken\rname.nii"
    broken.write_bytes(b"not an image")
    code, stdout, stderr = segment(strange, broken, "-d", tmp_path / "out", "--json")
    assert code == 3, stderr
    assert "\x1b" not in stderr and "\r" not in stderr
    assert "evil\\x1b[2Jname\\nsecond line.nii" in stderr and "broken\\rname.nii" in stderr
    assert len(stderr.strip().splitlines()) == 3  # two records and the summary, one line each
    assert json.loads(stdout)["cases"][0]["input"] == str(strange)  # JSON keeps the real name


@pytest.mark.parametrize(("number", "reason"), [(errno.ENOSPC, "No space left on device"),
                                                (errno.EROFS, "Read-only file system"),
                                                (errno.EACCES, "Permission denied")])
def test_os_conditions_are_one_line_naming_the_output(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      number: int, reason: str) -> None:
    import mitk.io.nifti

    def fails(*args: Any, **kwargs: Any) -> None:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(mitk.io.nifti, "write_nifti", fails)
    out = tmp_path / "out"
    code, stdout, stderr = segment(folder / "a.nii", "-d", out, "--json")
    assert code == 1
    [record] = json.loads(stdout)["cases"]
    assert record["error"] == f"{out / 'a_seg.nii.gz'}: {reason}"
    assert "internal error" not in stderr and names(out) == []

    code, stdout, stderr = invoke(["convert", str(folder / "b.nii"), str(tmp_path / "b.nii.gz")])
    assert code == 1 and stderr == f"mitk: error: {tmp_path / 'b.nii.gz'}: {reason}\n"


def test_memory_errors_fail_the_case_not_the_batch(folder: Path, tmp_path: Path,
                                                   mitk_plugins: Callable[..., Any]) -> None:
    from mitk_builtin._threshold import ThresholdSegmenter

    class Hungry(ThresholdSegmenter):
        needs_torch = True  # its network is what the test holds, breaks or counts

        def network(self, config: dict[str, Any]) -> Any:
            network = super().network(config)
            forward, calls = network.forward, []

            def first_call_runs_out(image: Any) -> Any:
                calls.append(1)
                if len(calls) == 1:
                    raise MemoryError()
                return forward(image)

            network.forward = first_call_runs_out
            return network

    use_segmenter(mitk_plugins, "hungry", Hungry)
    code, stdout, stderr = invoke(["segment", "--plugin", "hungry", str(folder), "-d", str(tmp_path / "out"), "--json"])
    assert code == 3, stderr
    first, second = json.loads(stdout)["cases"]
    assert first["error"] == f"{folder / 'a.nii'}: not enough memory for this case" and second["status"] == "ok"


def test_monai_wrapped_errors_are_reduced_to_the_cause(folder: Path, tmp_path: Path,
                                                       mitk_plugins: Callable[..., Any]) -> None:
    from mitk_builtin._threshold import ThresholdSegmenter
    from monai.transforms import Compose, Lambdad

    def refuse(image: Any) -> Any:
        raise ValueError("pixdim must be positive\nmore detail on a second line")

    class Fussy(ThresholdSegmenter):
        needs_torch = True  # its network is what the test holds, breaks or counts

        def inference_transforms(self, config: dict[str, Any]) -> Any:
            return Compose([Lambdad("image", refuse)])

    use_segmenter(mitk_plugins, "fussy", Fussy)
    code, stdout, stderr = invoke(["segment", "--plugin", "fussy", str(folder / "a.nii"), "-d", str(tmp_path / "o"),
                                   "--json"])
    assert code == 1
    [record] = json.loads(stdout)["cases"]
    assert record["error"] == f"{folder / 'a.nii'}: internal error: ValueError: pixdim must be positive"
    assert "applying transform" not in stderr


def print_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """What Python does with a warning outside pytest: print it on stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_library_warnings_are_hidden_unless_debug(folder: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  mitk_plugins: Callable[..., Any]) -> None:
    from mitk_builtin._threshold import ThresholdSegmenter

    class Noisy(ThresholdSegmenter):
        needs_torch = True  # its network is what the test holds, breaks or counts

        def inference_transforms(self, config: dict[str, Any]) -> Any:
            def warn(data: Any) -> Any:
                warnings.warn("a noisy library speaks\nat length", UserWarning, stacklevel=1)
                return data

            return warn

    use_segmenter(mitk_plugins, "noisy", Noisy)
    args = ["segment", "--plugin", "noisy", str(folder / "a.nii"), "-d", str(tmp_path / "out"), "--overwrite"]
    with warnings.catch_warnings():  # outside pytest's recorder: warnings print as they would for a user
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", print_warning)
        code, _, stderr = invoke(args)
        assert code == 0, stderr
        assert "noisy library" not in stderr
        assert "mitk: 1 warning(s) from libraries hidden (UserWarning); --debug shows them" in stderr
        code, _, stderr = invoke(["--debug", *args])
        assert code == 0 and "a noisy library speaks" in stderr


def test_info_prints_bracketed_file_names_as_text(tmp_path: Path, anatomical_t1: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from helpers import invoke

    target = tmp_path / "sub01_[" / "]_[flair].nii"  # the path holds "[/]", rich's closing tag
    target.parent.mkdir()
    shutil.copy(anatomical_t1, target)
    monkeypatch.chdir(tmp_path)  # a short relative path: the table is not cut to the terminal's width
    code, out, err = invoke(["info", "sub01_[/]_[flair].nii"])
    assert code == 0, err
    assert "sub01_[/]_[flair].nii" in out.replace("\n", "")
