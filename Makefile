# eical: `make demo`, `make test`, `make bench`. Each target builds its own virtual environment first, so a fresh
# clone needs nothing but a Python >= 3.10 on PATH. The Lava lane needs Python 3.10 (lava-nc 0.10.0 pins it):
# found as `python3.10` on PATH, else among pyenv's versions; when there is none, the Lava tests are skipped and
# `make test` says so.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV310 := .venv310
PY := $(VENV)/bin/python
PY310 := $(VENV310)/bin/python
# A hard kill so a hung Lava runtime (orphaned workers holding stdout open) fails CI fast instead of stalling it.
KILL_AFTER ?= 1500
LAVA_KILL_AFTER ?= 300

# Find a working Python 3.10: `python3.10` on PATH when it runs, else pyenv's newest 3.10.x.
FIND_PY310 = $(shell (python3.10 -c 'import sys; assert sys.version_info[:2]==(3,10)' >/dev/null 2>&1 && command -v python3.10) || \
	(command -v pyenv >/dev/null 2>&1 && for d in $$(ls -d "$$(pyenv root)"/versions/3.10* 2>/dev/null | sort -V -r); do \
	  [ -x "$$d/bin/python3.10" ] && { echo "$$d/bin/python3.10"; break; }; done))

.PHONY: demo test test-main test-lava bench venv venv310 clean

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

$(VENV310)/.stamp: pyproject.toml
	@py310="$(FIND_PY310)"; \
	if [ -z "$$py310" ]; then echo "no Python 3.10 found (python3.10 on PATH or pyenv): cannot build the Lava lane"; exit 1; fi; \
	echo "Lava lane: $$py310"; \
	"$$py310" -m venv $(VENV310) && \
	$(PY310) -m pip install -q --upgrade pip && \
	$(PY310) -m pip install -q -e '.[dev,lava]'
	touch $@

venv310: $(VENV310)/.stamp

demo: venv
	$(VENV)/bin/eical calibrate --profile bss2 --seed 1 --out demo-out

test: test-main test-lava

test-main: venv
	timeout -s KILL $(KILL_AFTER) $(PY) -m pytest -q -m "not lava"

test-lava:
	@py310="$(FIND_PY310)"; \
	if [ -z "$$py310" ]; then \
	  echo "SKIPPED: Lava lane (no Python 3.10 found as python3.10 on PATH or in pyenv versions); Lava tests not run"; \
	else \
	  $(MAKE) --no-print-directory venv310 && \
	  echo "Python 3.10 lane: the Lava tests (hard kill after $(LAVA_KILL_AFTER) s), then the rest of the suite" && \
	  timeout -s KILL $(LAVA_KILL_AFTER) $(PY310) -m pytest -q -m "lava" -p no:cacheprovider && \
	  timeout -s KILL $(KILL_AFTER) $(PY310) -m pytest -q -m "not lava" -p no:cacheprovider; \
	fi

bench: venv
	$(PY) -m benchmarks emulator controllers diagnostics serial faults dynapsim
	@py310="$(FIND_PY310)"; \
	if [ -z "$$py310" ]; then echo "SKIPPED: Lava benchmark (no Python 3.10 found)"; \
	else $(MAKE) --no-print-directory venv310 && timeout -s KILL $(KILL_AFTER) $(PY310) -m benchmarks lava; fi

clean:
	rm -rf $(VENV) $(VENV310) demo-out .pytest_cache
