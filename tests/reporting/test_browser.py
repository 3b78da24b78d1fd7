"""The report in a real browser: Debian's headless Chromium opens it from file:// with nothing else.

Skipped only when /usr/bin/chromium is absent (`make test` installs it).
"""

from __future__ import annotations

import base64

import pytest

from graddoctor.reporting import write_report
from graddoctor.reporting.html import CSP
from browser import Browser, pixel_std
from reportdata import EVIL, EVIL_SCRIPT


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def reports(store, run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    return {
        "single": write_report(store, folder / "single.html", names=[run.name]),
        "comparison": write_report(store, folder / "comparison.html", names=[run.name, "relu"]),
    }


@pytest.mark.parametrize("kind", ["single", "comparison"])
def test_report_loads_offline_with_no_error_and_draws_every_figure(browser, reports, kind):
    visit = browser.visit(reports[kind])
    assert visit.console == [] and visit.page_errors == []
    others = [u for u in visit.requests if u != visit.url and not u.startswith("data:")]
    assert others == [], "the report made requests beyond its own file and data: URIs"
    assert pixel_std(visit.screenshot) > 0.05, "the screenshot is blank"
    expected = 7 if kind == "single" else 3 + 2 * 3
    assert len(visit.figure_sizes) == expected
    for tag, width, height, decoded in visit.figure_sizes:
        assert width > 100 and height > 50, f"a figure ({tag}) has no size: {width} x {height}"
        assert decoded > 0, f"a figure ({tag}) did not decode: the browser shows its alt text"


def test_names_with_markup_show_as_text_and_run_no_script(browser, reports):
    visit = browser.visit(reports["single"])
    assert visit.dialogs == [] and visit.page_errors == []
    assert visit.stray_images == 0                  # the layer name did not become an <img>
    assert EVIL in visit.text                       # ... it shows as text: layer name
    assert f"graddoctor report: {EVIL_SCRIPT}run" in visit.text  # run name; config value and logged key below
    assert visit.text.count(EVIL_SCRIPT) >= 3


def test_the_harness_would_see_an_injected_script(browser, tmp_path):
    """Control: the same payload pasted raw into a page without our policy fires and is caught."""
    page = tmp_path / "raw.html"
    page.write_text(f"<!DOCTYPE html><html><body><p>layer</p>{EVIL}</body></html>")
    visit = browser.visit(page)
    assert visit.dialogs == ["1"] and visit.stray_images == 1


def test_the_harness_would_see_a_request_a_console_error_and_a_broken_figure(browser, tmp_path):
    """Control: what the first test asserts absent is recorded when present, with and without our policy."""
    broken = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'><text><img></text></svg>").decode()
    body = (f"<p>x</p><img src='http://127.0.0.1:9/x.png'><figure><img alt='{'a caption ' * 40}' "
            f"src='data:image/svg+xml;base64,{broken}'></figure>")
    for head in ("", f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'):
        page = tmp_path / "control.html"
        page.write_text(f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>")
        visit = browser.visit(page)
        assert "http://127.0.0.1:9/x.png" in visit.requests  # the attempt is seen, even when the policy blocks it
        assert any(m.startswith("error:") for m in visit.console)
        assert [decoded for tag, w, h, decoded in visit.figure_sizes if h > 50] == [0]  # the broken one, alt text shown
