"""The report in a real headless Chromium: no console error, every image decoded; and the screenshot it makes.

Skipped where no Chromium-family browser is installed (failed on CI, which installs one).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from ludl.report import write_report
from ludl.report.pdf import find_browser
from tests.report import synthetic

# Test-only probe appended to a copy of the page (the report itself holds no script): after load it writes how many
# images the page has and how many the browser could not decode into the DOM that --dump-dom prints.
_PROBE = (
    "<script>window.addEventListener('load',()=>{const i=Array.from(document.images);"
    "document.body.dataset.images=i.length;"
    "document.body.dataset.broken=i.filter(x=>!(x.complete&&x.naturalWidth>0)).length;});</script>"
)


def _browser() -> str:
    browser = find_browser()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium on the CI runner: install it (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed")
    return browser


def _open(page: Path, browser: str) -> tuple[int, int, list[str]]:
    """(images, broken images, console/network error lines) of the page loaded in headless Chromium."""
    probed = page.with_name(page.stem + "_probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={page.parent / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
           probed.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', done.stdout)
    assert body is not None, done.stdout[:500]
    errors = [
        line for line in done.stderr.splitlines() if "CONSOLE" in line or "net::ERR" in line or "Failed to load" in line
    ]
    return int(body[1]), int(body[2]), errors


def test_chromium_shows_every_image_without_console_errors(tmp_path: Path) -> None:
    browser = _browser()
    page = write_report(synthetic.content(), tmp_path, pdf=False)["report_html"]
    n_images, broken, errors = _open(page, browser)
    assert (n_images, broken) == (4, 0)
    assert not errors, errors
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000", page.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 100_000


def test_the_checks_see_a_broken_image_and_a_console_error(tmp_path: Path) -> None:
    browser = _browser()
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('boom')</script>"
        '<img src="data:image/png;base64,iVBORw0KGgoAAAA" alt="x"><img src="missing.png" alt="y"></body></html>'
    )
    n_images, broken, errors = _open(page, browser)
    assert (n_images, broken) == (2, 2)
    assert any("boom" in line for line in errors)
