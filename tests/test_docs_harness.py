"""The docs harness (tests/docs_pages.py) fails when a page's command is broken, gone or stale: checked on a tiny
page of classical commands (no torch) about a real MR crop."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from docs_pages import PageRun, check_page, page_commands, unrun_pages

DATA = Path(__file__).resolve().parent / "data"
PAGE = """# A page

Convert, then look:

```console
$ mitk convert scan.nii.gz scan.nrrd
$ mitk info scan.nrrd --json > info.json   # the header, as JSON
$ OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m mitk train segment \\
      --data sample/
```

<!-- docs-test: elsewhere -->
```console
$ mitk no-such-command
```
<!-- /docs-test -->
"""


def stage(folder: Path) -> None:
    shutil.copy(DATA / "brain1_image.nii.gz", folder / "scan.nii.gz")


RUN = PageRun(stage=stage, skip={"torchrun": "several processes"}, files=("scan.nrrd", "info.json"))


def write_page(tmp_path: Path, text: str) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    page = tmp_path / "docs" / "page.md"
    page.write_text(text, encoding="utf-8")
    (tmp_path / "run").mkdir(exist_ok=True)
    return page


def test_commands_are_read_in_order_with_continuations_comments_and_blocks(tmp_path: Path) -> None:
    commands = page_commands(write_page(tmp_path, PAGE))
    assert [c.text.split("#")[0].strip() for c in commands] == [
        "mitk convert scan.nii.gz scan.nrrd", "mitk info scan.nrrd --json > info.json",
        "OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m mitk train segment --data sample/",
        "mitk no-such-command"]
    assert [c.line for c in commands] == [6, 7, 8, 14]
    assert [c.block for c in commands] == [None, None, None, "elsewhere"]


def test_a_page_that_works_passes(tmp_path: Path) -> None:
    outcomes = check_page(write_page(tmp_path, PAGE), RUN, tmp_path / "run", covered_blocks={"elsewhere"})
    assert [o.text.split(" ")[1] for o in outcomes] == ["convert", "info"]  # torchrun skipped, block elsewhere
    assert '"format": "NRRD"' in (tmp_path / "run" / "info.json").read_text()


def test_a_broken_command_fails(tmp_path: Path) -> None:
    page = write_page(tmp_path, PAGE.replace("scan.nrrd --json", "scan.nrrd --no-such-flag"))
    with pytest.raises(AssertionError, match="exited 2"):
        check_page(page, RUN, tmp_path / "run", covered_blocks={"elsewhere"})


def test_a_block_nobody_reads_is_run_and_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no-such-command"):
        check_page(write_page(tmp_path, PAGE), RUN, tmp_path / "run")


def test_a_removed_command_fails_on_the_file_it_promised(tmp_path: Path) -> None:
    page = write_page(tmp_path, PAGE.replace("$ mitk info scan.nrrd --json > info.json   # the header, as JSON\n", ""))
    with pytest.raises(AssertionError, match=r"info\.json is written; it is not"):
        check_page(page, RUN, tmp_path / "run", covered_blocks={"elsewhere"})


def test_a_stale_skip_or_transcript_fails_before_anything_runs(tmp_path: Path) -> None:
    page = write_page(tmp_path, PAGE)
    stale = PageRun(stage=stage, skip={"mitk segment": "gone"})
    with pytest.raises(AssertionError, match="no command starts 'mitk segment'"):
        check_page(page, stale, tmp_path / "run")
    with pytest.raises(AssertionError, match="does not show"):
        check_page(page, PageRun(printed=("something the page never says",)), tmp_path / "run")
    assert not (tmp_path / "run" / "scan.nii.gz").exists()


def test_a_page_with_commands_and_no_entry_is_reported(tmp_path: Path) -> None:
    write_page(tmp_path, PAGE)
    (tmp_path / "docs" / "prose.md").write_text("# No commands\n\n```python\nprint(1)\n```\n")
    assert unrun_pages(tmp_path / "docs", [], []) == ["page.md"]
    assert unrun_pages(tmp_path / "docs", ["page.md"], []) == []
    assert unrun_pages(tmp_path / "docs", [], ["page.md"]) == []
