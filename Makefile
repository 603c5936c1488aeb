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

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: install
	$(PY) examples/demo.py

clean:
	rm -rf .venv build *.egg-info
