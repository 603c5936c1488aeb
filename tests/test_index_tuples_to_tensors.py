"""A loop over ``itertools`` index tuples of ranges (``permutations(range(n))``, the
permutation-invariant losses of speech separation) iterates the rows of their int64 tensor when
the body uses each tuple only as indices, here through a nested helper; the same values,
gradients and dtype as the loop. A tuple used otherwise keeps the loop as written."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import equivalent_report, load_module
from tests.test_int_index_lists import _lists
from tests.loop_helpers import build, strategies

PIT = """
from itertools import permutations, product
import itertools

def f(ests, refs):
    def score(perm):
        return sum([(ests[s] * refs[t]).sum(-1) for s, t in enumerate(perm)]) / len(perm)
    return -torch.stack([score(p) for p in permutations(range(len(refs)))]).max(0).values.sum()
"""

PAIRS = PIT.replace("permutations(range(len(refs)))", "product(range(2), range(len(refs)))")

# pairwise terms over combinations, items picked at int positions of the tuple
COMBINATIONS = """
import itertools

def f(x, n):
    total = 0
    for p in itertools.combinations(range(n), 2):
        total = total + (x[p[0]] - x[p[1]]).abs().pow(1.5).sum() / len(p)
    return total
"""


def _ns():
    import itertools
    return {"torch": torch, "itertools": itertools, "permutations": itertools.permutations,
            "product": itertools.product}


def test_golden_permutations_become_rows():
    _, _, code, report = build(PIT.split("import itertools\n")[1], _ns())
    assert strategies(report) == {3: "batched", 4: "vmap"}, (report, code)
    assert "_tuples = _index_rows(list(permutations(range(len(refs)))))" in code
    assert "_outs_1 = _map_in_chunks(_body_1, in_dims=(0,))(_tuples)" in code, code
    assert "score(p) for p in permutations(range(len(refs)))" in code.split("else:")[-1], code


@pytest.mark.parametrize("src", [
    PIT.replace("refs[t]", "refs[perm]"),                        # the tuple itself an index
    PIT.replace("/ len(perm)", "/ len(perm) if perm != (0, 1, 2) else 0"),   # compared
    PIT.replace("for s, t in enumerate(perm)", "for s, t in enumerate(perm[::-1])"),  # sliced
    PIT.replace("score(p) for", "score(p, p) for"),              # two parameters
    PIT.replace("range(len(refs))", "[0, 1, 2]"),                # not a range
    PIT + "\n    score = None\n",                                 # the helper rebound
])
def test_tuples_used_otherwise_are_unchanged(src):
    _, _, code, report = build(src.split("import itertools\n")[1], _ns())
    assert "_tuples" not in code, code


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("src", [PIT, PAIRS])
def test_equivalent(tmp_path, src, dtype, special):
    user = load_module(tmp_path, "import torch\n" + src)
    ests, refs = _lists(dtype, special)
    for n in (3, 2):  # product(range(2), ...) reads two estimates
        report = equivalent_report(user.f, ests[:n], refs[:n])
        outer = max(report.loops, key=lambda loop: loop.lineno)
        assert (outer.vectorized_runs, outer.original_runs) == (1, 0), report


def test_no_tuples_runs_as_written(tmp_path):
    """``permutations(range(0))`` makes one empty tuple, whose score divides by zero in both
    forms; ``product(range(2), range(0))`` makes none, and ``torch.stack`` of none raises."""
    user = load_module(tmp_path, "import torch\n" + PIT + PAIRS.replace("def f(", "def g("))
    from rewrite import optimize_loss
    with pytest.raises(ZeroDivisionError):
        optimize_loss(user.f, compile=False)([], [])
    with pytest.raises(RuntimeError, match="stack expects a non-empty TensorList"):
        optimize_loss(user.g, compile=False)([], [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent_items_at_int_positions(tmp_path, dtype):
    user = load_module(tmp_path, "import torch\n" + COMBINATIONS)
    x = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    x[1] = x[3]  # a tie: the derivative of |d|^1.5 at 0
    x[2, 0] = float("nan")
    for n in (5, 2):
        report = equivalent_report(user.f, x.requires_grad_(), n)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (1, 0), report


# pairs unpacked into names (a cosine embedding loss over combinations, as Finetune-miniLM
# writes one): positives pulled together, negatives pushed below a margin
UNPACKED = """
import itertools
from itertools import combinations

def f(emb, labels):
    losses = []
    for a, b in combinations(range(len(emb)), r=2):
        e1, e2 = emb[a], emb[b]
        sim = torch.nn.functional.cosine_similarity(e1, e2, dim=0)
        losses.append(1 - sim if labels[a] == labels[b] else (sim - 0.2).clamp(min=0))
    return torch.mean(torch.stack(losses))
"""


def test_golden_unpacked_pairs_are_columns():
    _, _, code, report = build(UNPACKED.split("from itertools import combinations\n")[1],
                               {**_ns(), "combinations": __import__("itertools").combinations})
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "_tuples = _index_rows(list(combinations(range(len(emb)), r=2))).reshape(-1, 2)" \
        in code, code


@pytest.mark.parametrize("change", [
    ("r=2", "r=3"),                               # three ints per tuple for two names
    ("combinations(range(len(emb)), r=2)", "itertools.permutations(range(len(emb)))"),  # n ints
    ("e1, e2 = emb[a], emb[b]", "e1, e2 = emb[a] * a, emb[b]"),  # an index read as a number
    ("e1, e2 = emb[a], emb[b]", "e1, e2 = emb[a], emb[b]\n        print(a)"),  # printed
    ("for a, b in", "for a, a2 in"),              # a name never read
])
def test_other_unpacked_tuples_are_unchanged(change):
    src = UNPACKED.split("from itertools import combinations\n")[1].replace(*change)
    _, _, code, _ = build(src, {**_ns(), "combinations": __import__("itertools").combinations})
    assert "_tuples" not in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spelling", ["combinations(range(len(emb)), r=2)",
                                      "combinations(range(len(emb)), 2)",
                                      "itertools.permutations(range(len(emb)), 2)",
                                      "itertools.product(range(len(emb)), range(3))"])
def test_unpacked_equivalent_without_warnings(tmp_path, spelling, dtype):
    import warnings
    from rewrite import assert_equivalent, optimize_loss
    user = load_module(tmp_path, "import torch\n" + UNPACKED.replace(
        "combinations(range(len(emb)), r=2)", spelling))
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(6, 4, generator=g, dtype=dtype)
    emb[1] = emb[0]  # a tie: cosine 1
    labels = torch.tensor([0, 0, 1, 2, 1, 0])
    fn = optimize_loss(user.f, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        assert_equivalent(user.f, fn, emb.requires_grad_(), labels)
    assert (fn.report.loops[0].vectorized_runs, fn.report.loops[0].original_runs) == (1, 0)


@pytest.mark.parametrize("src", [
    UNPACKED.replace("return torch.mean(torch.stack(losses))",
                     "return torch.mean(torch.stack(losses)), a"),
    PIT.replace("return -torch.stack([score(p) for p in permutations(range(len(refs)))])"
                ".max(0).values.sum()",
                "best = []\n    for p in permutations(range(len(refs))):\n"
                "        best.append(score(p))\n    return torch.stack(best).max(), p"),
    """
def f(x, obj):
    total = 0
    for c in obj.idc:
        total = total + x[:, c].sum()
    return total, c
""",
])
def test_an_element_read_after_the_loop_keeps_its_python_value(tmp_path, src):
    """After the loop the original's element is a Python tuple or int; rows of the tuples'
    tensor would leave a tensor there."""
    import types
    import warnings
    from rewrite import optimize_loss
    user = load_module(tmp_path, "import torch\n" + src)
    g = torch.Generator().manual_seed(3)
    if "emb" in src:
        args = (torch.randn(5, 4, generator=g), torch.tensor([0, 1, 0, 1, 1]))
    elif "refs" in src:
        args = ([torch.randn(4, generator=g) for _ in range(3)],
                [torch.randn(4, generator=g) for _ in range(3)])
    else:
        args = (torch.randn(3, 4, generator=g), types.SimpleNamespace(idc=[0, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, got = user.f(*args), optimize_loss(user.f, compile=False)(*args)
    assert type(got[1]) is type(want[1]) and got[1] == want[1], (got, want)


# A loop over the Python ints of a 1-D integer tensor (`torch.unique(labels).tolist()`), each
# compared with a tensor and used as a whole index: it iterates the tensor's 0-d items.
LISTED = """
def f(logits, labels, classes):
    loss = 0
    for c in torch.unique(classes).tolist():
        loss = loss + F.binary_cross_entropy_with_logits(
            logits[:, c], (labels == c).to(logits.dtype)) * (c != labels).sum()
    return loss
"""


def test_golden_listed_ints_iterate_their_tensor():
    _, _, code, report = build(LISTED)
    assert report.loops[0].vectorized, report
    lines = [line.strip() for line in code.splitlines()]
    assert "_listed = torch.unique(classes)" in lines, code
    assert "_items = _listed if isinstance(_listed, torch.Tensor) and _listed.dim() == 1 and " \
        "(_listed.dtype in (torch.int64, torch.int32)) else None" in lines, code
    assert "isinstance(labels, torch.Tensor)" in code  # the name each int is compared with
    assert "for c in torch.unique(classes).tolist():" in lines  # the loop as written


@pytest.mark.parametrize("body", [
    "loss = loss + logits[:, c].sum() * c",           # arithmetic: a Python int there
    "loss = loss + logits[:, c + 1].sum()",           # an index computed from it
    "loss = loss + logits[:, c].sum() * (c == 2)",    # compared with a number
    "loss = loss + str(c).count('1')",                # anything else
])
def test_listed_ints_read_otherwise_keep_the_list(body):
    _, _, code, _ = build(LISTED.replace(
        "loss = loss + F.binary_cross_entropy_with_logits(\n"
        "            logits[:, c], (labels == c).to(logits.dtype)) * (c != labels).sum()", body))
    assert "_listed" not in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_listed_ints_equivalent(tmp_path, dtype):
    module = load_module(tmp_path, "import torch\nimport torch.nn.functional as F\n" + LISTED)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 6, generator=g, dtype=dtype)
    logits[0, 5] = float("inf")  # in a column no class reads
    labels = torch.tensor([0, 2, 2, 5, 0, 1, 1, 2, 0, 0, 2, 3])
    for classes in (labels, torch.tensor([4, -1, 4], dtype=torch.int32), torch.tensor([[1, 2]])):
        report = equivalent_report(module.f, logits.requires_grad_(), labels, classes)
        assert [(l.vectorized_runs, l.original_runs) for l in report.loops] == [(1, 0)], report
    # uint8 items would index as masks: the loop as written, over the Python ints
    report = equivalent_report(module.f, logits.requires_grad_(), labels,
                               torch.tensor([1, 2], dtype=torch.uint8))
    assert [(l.vectorized_runs, l.original_runs) for l in report.loops] == [(0, 1)], report
