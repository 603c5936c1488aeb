"""Hypothesis profiles. CI (``CI=true``, as ``.ci/run`` runs) uses "ci": derandomized, so a clean
clone's run is the same run every time and a red CI is a real failure, not a draw; no deadline and
no too-slow health check, since a loaded 2-core machine is slow at random. Locally the default
profile explores new examples on every run; ``HYPOTHESIS_PROFILE=ci`` reproduces CI's draws."""
import os
import random

import pytest
import torch

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The long differential-fuzzing run (`HYPOTHESIS_PROFILE=long pytest -m fuzz`): 2,500 programs per
# fuzz test, fresh draws every run.
settings.register_profile("long", max_examples=2500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The rewritten function always runs unless a test says ``keep_faster=True`` or asks for the
# user's default (``keep_faster_on``): equivalence tests check the rewritten function, not a timed
# choice between it and the original, and skip the timing calls (half of the suite's CPU time).
os.environ["OPTIMIZE_LOSS_KEEP_FASTER"] = "0"


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws the same random values whatever ran before it in its worker (xdist hands
    files to workers by timing, so the generators' state was a draw): a red CI is a real
    failure, not a draw."""
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture
def keep_faster_on(monkeypatch):
    """The user's default, ``keep_faster=True``, for ``optimize_loss`` calls made in the test."""
    monkeypatch.delenv("OPTIMIZE_LOSS_KEEP_FASTER")


# Under `make test` each pytest-xdist worker has a core: one torch thread each, not one per core
# per worker (oversubscribed, every matmul waits for the other worker's threads).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The full op sweep runs only when asked for by its marker (``pytest -m opsweep``): CI runs
    its deterministic sample instead."""
    if "opsweep" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="the full op sweep runs with `pytest -m opsweep`")
    for item in items:
        if "opsweep" in item.keywords:
            item.add_marker(skip)
