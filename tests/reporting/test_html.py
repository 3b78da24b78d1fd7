"""HtmlPage: escaping in every entry point, structure, figures inlined as data: URIs, one file written."""

from __future__ import annotations

import base64
import re

import pytest

from graddoctor.reporting.html import CSP, HtmlPage, choose_format
from reportdata import EVIL, EVIL_SCRIPT


def new_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([1, 2, 3], label=EVIL)
    return fig


def test_every_text_entry_point_is_escaped():
    page = HtmlPage(title=EVIL, subtitle=EVIL_SCRIPT)
    with page.section(EVIL, anchor=EVIL):
        page.heading(EVIL)
        page.paragraph(EVIL)
        page.note(EVIL_SCRIPT)
        page.bullets([EVIL])
        page.preformatted(EVIL_SCRIPT)
        page.table([EVIL], [[EVIL_SCRIPT]])
        page.figure(new_figure(), caption=EVIL)
    html = page.render()
    assert "<img src=x" not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "onerror=alert(1)&gt;" in html  # the text is shown, not dropped
    assert re.search(r'id="[A-Za-z0-9_-]+"', html)  # the anchor is reduced to safe characters


def test_sections_nest_and_anchors_are_unique_and_listed():
    page = HtmlPage("t")
    with page.section("C1: depth", anchor="c1"):
        with page.section("inner"):
            page.paragraph("x")
    with page.section("C1: depth", anchor="c1"):
        pass
    html = page.render()
    assert '<section id="c1"><h2>C1: depth</h2><section id="inner"><h3>inner</h3>' in html
    assert '<section id="c1-2">' in html
    assert '<nav><a href="#c1">C1: depth</a><a href="#c1-2">C1: depth</a></nav>' in html


def test_table_formats_numbers_like_the_terminal_and_checks_row_length():
    page = HtmlPage("t")
    page.table(["a", "b", "c", "d"], [[1.23456e-7, float("nan"), None, 3]])
    assert "<td>1.23e-07</td><td>nan</td><td>-</td><td>3</td>" in page.render()
    with pytest.raises(ValueError, match="row 0 has 1 cells, but there are 2 headers"):
        page.table(["a", "b"], [["only"]])


def test_figure_is_inlined_as_a_data_uri_and_closed():
    import matplotlib.pyplot as plt

    page = HtmlPage("t")
    fig = plt.figure()
    fig.add_subplot().plot([1, 2])
    page.figure(fig, caption="cap")
    assert not plt.fignum_exists(fig.number)  # a pyplot figure is closed after embedding
    page.figure(new_figure().axes[0], fmt="png")  # an Axes is accepted too
    images = re.findall(r'src="data:image/(svg\+xml|png);base64,([^"]+)"', page.render())
    assert [kind for kind, _ in images] == ["svg+xml", "png"]
    assert base64.b64decode(images[0][1]).lstrip().startswith(b"<?xml")
    assert base64.b64decode(images[1][1]).startswith(b"\x89PNG")
    assert page.n_figures == 2
    with pytest.raises(TypeError, match="matplotlib Figure"):
        page.figure("not a figure")
    with pytest.raises(ValueError, match="'svg' or 'png'"):
        page.figure(new_figure(), fmt="jpg")


def test_format_is_png_for_rasters_and_many_points():
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot(np.arange(100))
    assert choose_format(fig) == "svg"
    fig.axes[0].plot(np.arange(30_000))
    assert choose_format(fig) == "png"
    fig = Figure()
    fig.add_subplot().imshow(np.ones((3, 3)))
    assert choose_format(fig) == "png"


def test_write_creates_one_file_with_no_script_and_a_strict_policy(tmp_path):
    page = HtmlPage("t")
    with page.section("s"):
        page.figure(new_figure())
    out = page.write(tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html" and out.exists()
    html = out.read_text()
    assert CSP in html and "script-src" not in CSP and "default-src 'none'" in CSP
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
