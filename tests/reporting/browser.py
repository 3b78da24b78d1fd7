"""Open an HTML file in Debian's headless Chromium (no Playwright browser download) and record what it did."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]


@dataclasses.dataclass
class Visit:
    url: str
    requests: list[str]
    console: list[str]          # console messages of type error or warning
    page_errors: list[str]      # uncaught exceptions
    dialogs: list[str]          # alert()/confirm(): a script ran
    screenshot: bytes
    figure_sizes: list[tuple[str, float, float, float]]   # (tag, width, height, decoded width) of every img/svg
    text: str                   # document.body.innerText
    stray_images: int           # <img> elements outside <figure>: markup injected from a name


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs Debian's chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


class Browser:
    """One headless Chromium with a fresh profile; `visit(path)` opens a page in it and records what happened."""

    def __enter__(self) -> "Browser":
        require_chromium()
        from playwright.sync_api import sync_playwright

        self._profile = tempfile.mkdtemp(prefix="graddoctor-chromium-")
        self._playwright = sync_playwright().start()
        self._ctx = self._playwright.chromium.launch_persistent_context(
            self._profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1200, "height": 900})
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._ctx.close()
            self._playwright.stop()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def visit(self, path: Path) -> Visit:
        url = path.resolve().as_uri()
        requests: list[str] = []
        console: list[str] = []
        errors: list[str] = []
        dialogs: list[str] = []
        page = self._ctx.new_page()
        try:
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="load")
            page.wait_for_timeout(200)
            sizes = page.evaluate(
                "() => Array.from(document.querySelectorAll('img, svg')).map(e => {"
                " const r = e.getBoundingClientRect();"  # a broken image still has a box (its alt text's)
                " return [e.tagName.toLowerCase(), r.width, r.height, e.naturalWidth ?? r.width]; })")
            text = page.evaluate("() => document.body.innerText")
            stray = page.evaluate("() => document.querySelectorAll('img:not(figure img)').length")
            shot = page.screenshot(full_page=False)
        finally:
            page.close()
        return Visit(url, requests, console, errors, dialogs, shot, [tuple(s) for s in sizes], text, stray)


def pixel_std(png: bytes) -> float:
    """Standard deviation of the screenshot's grey levels (0 for a blank page)."""
    import io

    import numpy as np
    from matplotlib.image import imread

    img = imread(io.BytesIO(png), format="png")
    return float(np.asarray(img)[..., :3].mean(axis=-1).std())
