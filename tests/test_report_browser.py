"""The report in a real browser: Debian's chromium, headless, driven by playwright (no browser download).

No console error, no request beyond the file itself (no network), every image decoded, and the summary table
sorts when a heading is clicked. Skipped, with the reason, where chromium or playwright is not installed
(``.ci/run`` installs chromium; playwright is in the ``test`` extra).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import invoke
from report_batch import Batch, shared_batch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install "
                                                                     "chromium)")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    return shared_batch(tmp_path_factory.getbasetemp())


def render(page_path: Path, screenshot: Path | None = None, click: str | None = None) -> dict:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                                                  "playwright; the test extra has it)")
    seen: dict = {"errors": [], "requests": []}
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda message: seen["errors"].append(message.text) if message.type == "error"
                    else None)
            page.on("pageerror", lambda error: seen["errors"].append(str(error)))
            page.on("request", lambda request: seen["requests"].append(request.url))
            page.goto(page_path.as_uri(), wait_until="load")
            seen["images"] = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            if click is not None:
                column = page.evaluate(f"Array.from(document.querySelectorAll('#cases th'))"
                                       f".findIndex(h => h.textContent.trim() === {click!r})")
                read = (f"Array.from(document.querySelectorAll('#cases tbody tr')).map(r => "
                        f"r.cells[{column}].getAttribute('data-sort') ?? r.cells[{column}].textContent.trim())")
                seen["before"] = page.evaluate(read)
                page.click(f"#cases th:nth-child({column + 1})")
                seen["ascending"] = page.evaluate(read)
                page.click(f"#cases th:nth-child({column + 1})")
                seen["descending"] = page.evaluate(read)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    return seen


def test_the_report_renders_in_headless_chromium(batch: Batch, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    code, _, stderr = invoke(["report", str(batch.out), "-o", str(target), "--evaluation", str(batch.evaluation)])
    assert code == 0, stderr
    seen = render(target, tmp_path / "shot.png", click="status")
    assert seen["errors"] == []
    assert all(url == target.as_uri() or url.startswith("data:") for url in seen["requests"]), seen["requests"]
    assert len(seen["images"]) >= 12 and all(done and width > 0 for done, width in seen["images"]), seen["images"]
    assert seen["ascending"] == sorted(seen["before"]) and seen["descending"] == sorted(seen["before"],
                                                                                        reverse=True)
    assert seen["ascending"] != seen["descending"]  # a failed case among the ok ones: the order really changed
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_numeric_columns_sort_by_value(batch: Batch, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    code, _, stderr = invoke(["report", str(batch.out), "-o", str(target), "--per-case"])
    assert code == 0, stderr
    seen = render(target, click="seconds")
    values = [float(v) for v in seen["ascending"] if v not in ("", None)]
    assert values == sorted(values) and len(values) >= 5
    assert seen["errors"] == [] and all(width > 0 for _, width in seen["images"])
    case = render(sorted((tmp_path / "report_cases").glob("case-*.html"))[0])
    assert case["errors"] == [] and case["images"] and all(width > 0 for _, width in case["images"])
