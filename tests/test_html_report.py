"""``inspect --html``: one self-contained page; with graphviz the graph is an inline SVG, without
it the page says so and shows the DOT text. One test renders the page in headless Chromium."""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib

import pytest
import torch

from rewrite.tools import html_report
from rewrite.tools.html_report import CLASS_COLOURS, render_html
from rewrite.tools.inspection import collect


def masked(pred, target):
    mask = target > 0
    return torch.where(mask, pred - target, 0.0).pow(2).sum() / mask.sum()


def thresholded(pred, target):
    return (((pred > 0).float() - target) ** 2).mean()


def looped(pred, target):
    total = 0
    for i in range(pred.shape[0]):
        total = total + ((pred[i] - target[i]) ** 2).sum()
    return total


def inputs():
    return torch.randn(4, 3, requires_grad=True), torch.rand(4, 3)


def page_of(fn) -> str:
    return render_html(collect(fn, inputs(), {}, repeat=1))


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")


@needs_dot
def test_page_has_every_section_and_an_inline_svg():
    page = page_of(thresholded)
    for heading in ("Source: original vs rewritten", "Graph", "Loop decisions", "Gradient-flow lint", "Timings"):
        assert f"<h2>{heading}</h2>" in page
    assert "<svg" in page and "<?xml" not in page
    assert "comparison" in page and "torch.sigmoid" in page  # the finding and its suggested fix
    assert CLASS_COLOURS["nondiff"][0] in page


def test_page_is_self_contained():
    page = page_of(masked)
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page and " src=" not in page


def test_side_by_side_diff_is_highlighted():
    data = collect(masked, inputs(), {}, repeat=1)
    data["source"]["rewritten"] = data["source"]["original"].replace("mask.sum()", "mask.count_nonzero()")
    page = render_html(data)
    assert "class=\"diff\"" in page and "diff_chg" in page


def test_symbolic_tracing_failure_is_said_and_make_fx_graph_shown():
    page = page_of(looped)
    assert "symbolic tracing failed at" in page and f"{__file__}:" in page
    assert "traced by make_fx" in page and "aten.mse_loss.default" in page


def test_without_graphviz_the_page_embeds_the_dot_text(monkeypatch):
    monkeypatch.setattr(html_report.shutil, "which", lambda name: None)
    page = page_of(masked)
    assert "graphviz `dot` is not installed" in page
    assert "<pre>digraph" in page and "<svg" not in page


def test_text_is_escaped():
    data = collect(masked, inputs(), {}, repeat=1)
    data["notes"].append("<script>alert(1)</script>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in render_html(data)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_page_renders_in_headless_chromium(tmp_path):
    assert shutil.which("dot"), "the screenshot test needs graphviz (.ci/run installs it)"
    page = tmp_path / "report.html"
    page.write_text(page_of(masked))
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1200,900", page.as_uri()],
                       capture_output=True, timeout=120, check=True, cwd=tmp_path)
    colours = png_colours(shot.read_bytes())
    assert len(colours) > 100, "blank screenshot"
    # The graph's node fills are on screen: the SVG was drawn, not just present in the file.
    for cls in ("grad", "hoisted", "input"):
        assert bytes.fromhex(CLASS_COLOURS[cls][0][1:]) in colours, f"no {cls} node in the picture"


def png_colours(data: bytes) -> set[bytes]:
    """The distinct RGB colours of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):  # undo the PNG row filter (none, sub, up, average, paeth)
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                row[i] = (row[i] + a) & 255
            elif kind == 2:
                row[i] = (row[i] + b) & 255
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(row[i:i + 3]) for i in range(0, stride, bpp))
        prev = row
    return colours
