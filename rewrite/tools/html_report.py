"""``optimize-loss inspect --html``: the inspect data as one self-contained HTML page.

Sections: summary, side-by-side source diff, the classified graph as inline SVG (rendered by
graphviz ``dot``; without it the page says so and shows the DOT text), loop decisions, lint
findings, timings. No scripts, no external resources.
"""
from __future__ import annotations

import difflib
import shutil
import subprocess
from html import escape

from passes.errors import RewriteError

# Node class -> (fill colour, legend text): the graph picture and the page's legend.
CLASS_COLOURS = {
    "input": ("#e0e0e0", "input"),
    "grad": ("#ffcc80", "gradient path"),
    "hoisted": ("#90caf9", "target-only, hoisted"),
    "target": ("#bbdefb", "target-only, kept"),
    "nondiff": ("#ef9a9a", "non-differentiable"),
    "meta": ("#f5f5f5", "shape / Python value"),
    "output": ("#c5e1a5", "output"),
}

_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 2px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 3px 8px; border: 1px solid #ddd; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
.summary td:first-child { font-weight: bold; }
.ok { color: #2e7d32; } .bad { color: #c62828; } .note { color: #666; }
pre, table.diff { font-family: Menlo, Consolas, monospace; font-size: 12px; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
table.diff td { border: none; padding: 0 4px; white-space: pre; }
.diff_add { background: #c8f7c5; } .diff_chg { background: #fff3a8; } .diff_sub { background: #ffcdd2; }
.diff_header { color: #888; text-align: right; } .diff_next { display: none; }
.graph svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
.scroll { overflow-x: auto; }
"""


def render_svg(dot_text: str) -> str:
    """The SVG graphviz draws for ``dot_text``; raises ``RewriteError`` without ``dot``."""
    dot = shutil.which("dot")
    if dot is None:
        raise RewriteError("graphviz `dot` is not installed (apt-get install graphviz)")
    done = subprocess.run([dot, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RewriteError(f"dot failed: {' '.join(done.stderr.split())}")
    svg = done.stdout
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


def render_html(data: dict) -> str:
    """The page for the JSON object of ``rewrite.tools.inspection.collect``."""
    title = f"optimize_loss: {data['function']}"
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>",
             _summary(data), "<h2>Source: original vs rewritten</h2>", _diff(data),
             "<h2>Graph</h2>", _graph(data["graph"]), "<h2>Loop decisions</h2>", _loops(data),
             "<h2>Gradient-flow lint</h2>", _lint(data["lint"]), "<h2>Timings</h2>", _timings(data),
             "</body></html>"]
    return "\n".join(parts)


def _summary(data: dict) -> str:
    loops = data["loops"]
    vectorized = sum(l["vectorized"] for l in loops)
    t = data["timings_ms"]
    rows = [("function", f"{data['function']} ({data['file']}:{data['line']})"),
            ("inputs", data["inputs"]),
            ("passes", ", ".join(data["passes"]) or "none"),
            ("loops", f"{vectorized} of {len(loops)} vectorized"),
            ("fallbacks", "; ".join(f"{f['file']}:{f['line']}: {f['reason']}" for f in data["fallbacks"]) or "none"),
            ("lint findings", str(len(data["lint"]))),
            ("speed-up (fwd+bwd)", f"{t['original'] / t['optimized']:.2f}x eager")]
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    notes = "".join(f"<p class='note'>note: {escape(n)}</p>" for n in data["notes"])
    return f"<table class='summary'>{body}</table>{notes}"


def _diff(data: dict) -> str:
    source = data["source"]
    if not source["rewritten"]:
        return "<p class='note'>Not rewritten: the original function runs (see fallbacks).</p>"
    if source["rewritten"] == source["original"]:
        return "<p class='note'>Unchanged by the AST passes.</p>"
    table = difflib.HtmlDiff(wrapcolumn=70).make_table(
        source["original"].splitlines(), source["rewritten"].splitlines(), "original", "rewritten")
    return f"<div class='scroll'>{table}</div>"


def _graph(graph: dict) -> str:
    parts = [f"<p class='{'note' if graph['traced'] else 'bad'}'>{escape(graph['error'])}</p>"] if graph["error"] else []
    if graph["tracer"] == "make_fx":
        parts.append("<p class='note'>Shown: the aten-level graph traced by make_fx for these input shapes.</p>")
    if not graph["traced"]:
        return "".join(parts)
    try:
        parts.append(f"<div class='graph'>{render_svg(graph['dot'])}</div>")
    except RewriteError as exc:
        parts.append(f"<p class='bad'>No picture: {escape(str(exc))}. The graph in DOT:</p>"
                     f"<pre>{escape(graph['dot'])}</pre>")
    rows = "".join(f"<tr><td>{escape(n['class'])}</td><td>{escape(n['name'])}</td><td>{escape(n['op'])}</td>"
                   f"<td>{escape(n['target'])}</td><td>{escape(n['location'] or '')}</td>"
                   f"<td>{escape(n['not_hoisted_because'] or '')}</td></tr>" for n in graph["nodes"])
    parts.append("<details><summary>nodes</summary><table><tr><th>class</th><th>name</th><th>op</th>"
                 f"<th>target</th><th>location</th><th>not hoisted because</th></tr>{rows}</table></details>")
    return "".join(parts)


def _loops(data: dict) -> str:
    if not data["loops"]:
        return "<p class='note'>No loops.</p>"
    rows = "".join(f"<tr><td>{escape(l['file'])}:{l['line']}</td><td>"
                   f"{'vectorized (' + escape(l['strategy']) + ')' if l['vectorized'] else 'kept'}"
                   f"</td><td>{escape(l['reason'])}</td></tr>" for l in data["loops"])
    return f"<table><tr><th>where</th><th>decision</th><th>why</th></tr>{rows}</table>"


def _lint(findings: list[dict]) -> str:
    if not findings:
        return "<p class='ok'>No gradient-flow problems found.</p>"
    rows = "".join(f"<tr><td>{escape(f['file'])}:{f['line']}</td><td class='bad'>{escape(f['kind'])}</td>"
                   f"<td>{escape(f['message'])}</td><td>{escape(f['fix'])}</td></tr>" for f in findings)
    return f"<table><tr><th>where</th><th>kind</th><th>problem</th><th>suggested fix</th></tr>{rows}</table>"


def _timings(data: dict) -> str:
    t = data["timings_ms"]
    rows = [("original", t["original"]), ("optimized (eager)", t["optimized"])]
    if t["compiled"] is not None:
        rows.append(("optimized + torch.compile", t["compiled"]))
    body = "".join(f"<tr><td>{name}</td><td>{ms:.3f} ms</td><td>{t['original'] / ms:.2f}x</td></tr>"
                   for name, ms in rows)
    return (f"<p class='note'>forward + backward, median of {t['repeat']} runs</p>"
            f"<table><tr><th></th><th>time</th><th>speed-up</th></tr>{body}</table>")
