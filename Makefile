# Everything runs from a fresh clone: the first target that needs it creates .venv.
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: install test demo clean

install: .venv/.installed

# torch is pinned first and on its own: a looser spec can pull a multi-GB CUDA build.
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $@

# One worker per core (at most 4: each holds its own torch); each file runs whole on one worker,
# in its order, its module fixtures made once.
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n auto --maxprocesses=4 --dist loadfile tests

# The examples, one loop rewrite inspected, then LossBench --quick (under 3 minutes on 2 cores).
demo: install
	$(PY) examples/demo.py
	$(PY) -m rewrite inspect examples/per_sample_mse.py:naive --inputs examples/per_sample_mse.py:make_inputs
	$(PY) -m rewrite bench --quick --markdown bench_out/quick.md --json bench_out/quick.json

clean:
	rm -rf .venv build *.egg-info
