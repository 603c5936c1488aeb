"""``optimize-loss inspect | verify | lint``: input SPECs, FILE.py:FUNC loading, exit codes, the
JSON keys, and one-line errors. CLI tests run ``rewrite.tools.cli.main`` in-process, one runs
``python -m rewrite`` for real."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import passes.pipeline
from rewrite.tools import inspection
from rewrite.tools.cli import main
from rewrite.decorator import optimize_loss
from rewrite.tools.inputs import InputError, parse_spec

LOSSES = textwrap.dedent('''\
    import torch
    from rewrite import optimize_loss


    def masked(pred, target, reduction="mean"):
        mask = target > 0
        diff = torch.where(mask, pred - target, 0.0)
        if reduction == "mean":
            return diff.pow(2).sum() / mask.sum()
        return diff.pow(2).sum()


    def masked_wrong(pred, target, reduction="mean"):
        return masked(pred, target, reduction) * 1.01


    def thresholded(pred, target):
        hard = (pred > 0).float()
        return ((hard - target) ** 2).mean()


    def looped(pred, target):
        total = 0
        for i in range(pred.shape[0]):
            total = total + ((pred[i] - target[i]) ** 2).sum()
        return total


    def raises(pred, target):
        return pred @ target


    def data_dependent(pred, target):
        if (target > 0).sum().item() == 0:
            return pred.sum() * 0
        return ((pred - target) ** 2).mean()


    @optimize_loss(compile=False, example_inputs=lambda: (torch.randn(4, 3, requires_grad=True),
                                                          torch.rand(4, 3)))
    def with_examples(pred, target):
        return ((pred - target) ** 2).mean()


    def make_inputs():
        return torch.randn(4, 3, requires_grad=True), torch.rand(4, 3)
''')
INPUTS = ["--input", "pred=float32[4,3]:grad", "--input", "target=float32[4,3]:0..1"]

TOP_KEYS = {"version", "function", "file", "line", "inputs", "passes", "loops", "fallbacks", "notes",
            "forms", "target_only", "source", "graph", "lint", "timings_ms"}
NODE_KEYS = {"name", "op", "target", "args", "inputs", "class", "location", "not_hoisted_because",
             "dtype", "shape"}
FINDING_KEYS = {"kind", "message", "file", "line", "fix", "inputs"}


@pytest.fixture
def losses(tmp_path):
    path = tmp_path / "losses.py"
    path.write_text(LOSSES)
    return str(path)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(LOSSES.splitlines(), 1) if needle in line)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _fake_vectorize(tree: ast.Module, ctx) -> ast.Module:
    """Stands in for the loop passes: reports the loop, makes a visible harmless change."""
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    ctx.report.add_loop(loop.lineno, True, "reduction", "independent iterations summed")
    tree.body[0].body.insert(0, ast.parse("_unused = 0").body[0])
    return tree


@pytest.fixture
def fake_loop_pass(monkeypatch):
    fake = types.SimpleNamespace(__name__="fake_vectorize", transform=_fake_vectorize)
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [fake])


# -- SPEC grammar -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec, dtype, shape, grad", [
    ("float32[64,10]", torch.float32, (64, 10), False),
    ("float32[64, 10]:grad", torch.float32, (64, 10), True),
    ("float64[]", torch.float64, (), False),
    ("bool[64]", torch.bool, (64,), False),
    ("int64[64]:0..10", torch.int64, (64,), False),
    ("float16[3]:grad:-1..1", torch.float16, (3,), True),
])
def test_tensor_specs(spec, dtype, shape, grad):
    value = parse_spec(spec)
    assert (value.dtype, tuple(value.shape), value.requires_grad) == (dtype, shape, grad)


def test_spec_ranges():
    ints = parse_spec("int64[1000]:0..10")
    assert ints.min() >= 0 and ints.max() <= 9 and len(ints.unique()) == 10
    floats = parse_spec("float32[1000]:2..3")
    assert floats.min() >= 2 and floats.max() < 3


@pytest.mark.parametrize("spec, value", [("0.5", 0.5), ("3", 3), ("-2", -2), ("True", True),
                                         ("None", None), ("mean", "mean"), ("'sum'", "sum")])
def test_plain_specs(spec, value):
    assert parse_spec(spec) == value


@pytest.mark.parametrize("spec, problem", [
    ("float32[64,", "expected DTYPE[DIMS]"),
    ("flaot32[3]", "unknown dtype 'flaot32'"),
    ("float32", "needs dimensions"),
    ("float32[a]", "dimensions must be integers"),
    ("float32[-1]", "negative dimension"),
    ("int64[3]:grad", "only floating dtypes"),
    ("float32[3]:fast", "unknown suffix ':fast'"),
    ("int64[3]:5..1", "empty range"),
    ("int64[3]:0.5..2", "needs int bounds"),
    ("bool[3]:0..1", "bool takes no range"),
])
def test_bad_specs_name_the_problem(spec, problem):
    with pytest.raises(InputError, match="bad input spec") as info:
        parse_spec(spec)
    assert problem in str(info.value) and repr(spec) in str(info.value)


# -- inspect ----------------------------------------------------------------------------------
def test_inspect_json_has_the_documented_keys(losses, capsys):
    code, out, _ = run_cli(capsys, "inspect", f"{losses}:masked", *INPUTS, "--json", "--repeat", "2")
    data = json.loads(out)
    assert code == 0 and set(data) == TOP_KEYS and data["version"] == 1
    assert (data["function"], data["file"], data["line"]) == ("masked", losses, line_of(LOSSES, "def masked("))
    assert data["inputs"] == "(pred=float32[4, 3]:grad, target=float32[4, 3])"
    assert set(data["source"]) == {"original", "rewritten", "diff"}
    assert set(data["timings_ms"]) == {"repeat", "original", "optimized", "compiled"}
    assert data["timings_ms"]["original"] > 0 and data["timings_ms"]["compiled"] is None
    graph = data["graph"]
    assert set(graph) == {"traced", "tracer", "error", "fx_passes", "dot", "nodes"}
    assert graph["traced"] and graph["tracer"] == "symbolic_trace" and graph["error"] is None
    assert graph["dot"].startswith("digraph")
    assert all(set(node) == NODE_KEYS for node in graph["nodes"])
    classes = {node["name"]: node["class"] for node in graph["nodes"]}
    assert classes["pred"] == "input" and classes["output"] == "output"
    assert classes["gt"] == "hoisted" and classes["sub"] == "grad"  # target > 0; pred - target
    gt = next(node for node in graph["nodes"] if node["name"] == "gt")
    assert gt["location"] == f"{losses}:{line_of(LOSSES, 'mask = target > 0')}"
    assert (gt["dtype"], gt["shape"]) == ("bool", [4, 3])
    assert data["lint"] == []


def test_inspect_classifies_non_differentiable_nodes_and_reports_lint(losses, capsys):
    code, out, _ = run_cli(capsys, "inspect", f"{losses}:thresholded", *INPUTS, "--json", "--repeat", "1")
    data = json.loads(out)
    classes = {node["name"]: node["class"] for node in data["graph"]["nodes"]}
    assert classes["gt"] == "nondiff" and classes["float_1"] == "nondiff"
    [finding] = data["lint"]
    assert set(finding) == FINDING_KEYS and finding["kind"] == "comparison"
    assert (finding["file"], finding["line"]) == (losses, line_of(LOSSES, "hard = (pred > 0)"))


def test_inspect_text_shows_loops_diff_graph_lint_and_timings(losses, capsys, fake_loop_pass):
    code, out, _ = run_cli(capsys, "inspect", f"{losses}:looped", *INPUTS, "--repeat", "1")
    loop_line = line_of(LOSSES, "for i in range(pred.shape[0])")
    assert code == 0
    assert f"{losses}:{loop_line}: vectorized (reduction): independent iterations summed" in out
    assert "--- original" in out and "+    _unused = 0" in out
    assert f"symbolic tracing failed at {losses}:{loop_line}: TypeError" in out  # the loop is still there
    assert "traced by make_fx" in out and "aten.sub.Tensor" in out
    assert "no gradient-flow problems found" in out
    assert "timings (fwd+bwd, median of 1, 1 thread): original" in out


def test_untraceable_graph_says_why_at_the_users_line(losses, capsys):
    code, out, _ = run_cli(capsys, "inspect", f"{losses}:data_dependent", *INPUTS, "--json", "--repeat", "1")
    graph = json.loads(out)["graph"]
    assert code == 0 and not graph["traced"] and graph["tracer"] is None and graph["nodes"] == []
    where = f"{losses}:{line_of(LOSSES, '(target > 0).sum().item() == 0')}"
    assert graph["error"].startswith(f"symbolic tracing failed at {where}: ")
    assert "make_fx failed too" in graph["error"]


def test_inspect_writes_dot_and_html(losses, capsys, tmp_path):
    dot, page = tmp_path / "g.dot", tmp_path / "r.html"
    code, _, _ = run_cli(capsys, "inspect", f"{losses}:masked", *INPUTS, "--repeat", "1",
                         "--dot", str(dot), "--html", str(page))
    assert code == 0 and dot.read_text().startswith("digraph")
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_inspect_as_a_subprocess(losses):
    done = subprocess.run([sys.executable, "-m", "rewrite", "inspect", f"{losses}:masked", *INPUTS,
                           "--json", "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == TOP_KEYS


def test_help_documents_the_spec_grammar(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert all(s in out for s in ("int64[64]:0..10", ":grad", "float64[]", "MODULE:FACTORY", "example_inputs"))


# -- inputs from elsewhere --------------------------------------------------------------------
def test_inputs_from_a_factory_file_and_module(losses, capsys, monkeypatch, tmp_path):
    assert run_cli(capsys, "lint", f"{losses}:masked", "--inputs", f"{losses}:make_inputs")[0] == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_cli(capsys, "lint", f"{losses}:masked", "--inputs", "losses:make_inputs")[0] == 0


def test_example_inputs_of_the_decorator_are_used(losses, capsys):
    code, out, _ = run_cli(capsys, "verify", f"{losses}:with_examples")
    assert code == 0 and "on (float32[4, 3]:grad, float32[4, 3])" in out


def test_command_line_inputs_override_a_factory(losses, capsys):
    code, out, _ = run_cli(capsys, "verify", f"{losses}:masked", "--inputs", f"{losses}:make_inputs",
                           "--input", "reduction=sum")
    assert code == 0 and "reduction='sum'" in out


# -- verify and lint exit codes ---------------------------------------------------------------
def test_verify_equivalent_rewrite_exits_0(losses, capsys, fake_loop_pass):
    code, out, _ = run_cli(capsys, "verify", f"{losses}:looped", *INPUTS)
    assert code == 0, out
    assert "output 0" in out and "gradient of argument 'pred'" in out and "max rel diff" in out
    assert out.rstrip().endswith("equivalent (value and every gradient within tolerance)")


def test_verify_mismatch_exits_1(losses, capsys, monkeypatch):
    loaded = {}

    def wrong(fn, **options):  # the "optimized" function computes something else
        loaded.setdefault("module", sys.modules[fn.__module__])
        return optimize_loss(loaded["module"].masked_wrong, **options)

    monkeypatch.setattr(inspection, "optimize_loss", wrong)
    code, out, _ = run_cli(capsys, "verify", f"{losses}:masked", *INPUTS)
    assert code == 1 and "NOT equivalent" in out and "gradient of argument 'pred'" in out


def test_lint_exit_codes(losses, capsys):
    code, out, _ = run_cli(capsys, "lint", f"{losses}:thresholded", *INPUTS)
    assert code == 1 and f"{losses}:{line_of(LOSSES, 'hard = (pred > 0)')}: [comparison]" in out
    code, out, _ = run_cli(capsys, "lint", f"{losses}:masked", *INPUTS)
    assert code == 0 and "no gradient-flow problems" in out
    code, out, _ = run_cli(capsys, "lint", f"{losses}:thresholded", *INPUTS, "--json")
    assert code == 1 and set(json.loads(out)[0]) == FINDING_KEYS


# -- one-line errors --------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["inspect", "{f}:masked", "--input", "pred=float32[4,"], "bad input spec 'float32[4,'"),
    (["lint", "{f}:masked", "--input", "pred=float32[4,3]:grad"], "missing input for parameter 'target' of masked"),
    (["lint", "{f}:masked", "--input", "weight=1", "--input", "pred=float32[4]"], "masked has no parameter 'weight'"),
    (["lint", "{f}:masked", "--input", "pred"], "bad --input 'pred': expected NAME=SPEC"),
    (["verify", "{f}:masked"], "no inputs for masked: give --input NAME=SPEC for each of pred, target"),
    (["lint", "{f}:masked", "--inputs", "{f}:nope"], "has no 'nope'"),
    (["lint", "nowhere.py:loss"], "no such file nowhere.py"),
    (["lint", "{f}"], "expected FILE.py:FUNC"),
    (["lint", "{f}:missing"], "has no 'missing'"),
    (["lint", "{f}:masked", "--input", "pred=float32[4,3]", "--input", "target=float32[4,3]"],
     "nothing to lint: no input of masked requires grad"),
    (["verify", "{f}:raises", "--input", "pred=float32[4,3]:grad", "--input", "target=float32[4,3]"],
     "{f}:{raises_line}: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
])
def test_errors_are_one_line_exit_2(losses, capsys, argv, message):
    fill = dict(f=losses, raises_line=line_of(LOSSES, "return pred @ target"))
    code, out, err = run_cli(capsys, *[a.format(**fill) for a in argv])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message.format(**fill) in err
