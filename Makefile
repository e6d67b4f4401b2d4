# Two entry points, both self-contained on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tflite_runtime 2.14 (what many boards run) needs numpy 1: the tests exercise it from this
# side environment when it can be made here, and skip with the reason when it cannot.
TFLITE_VENV := .venv-tflite-runtime
TFLITE_STAMP := $(TFLITE_VENV)/.installed

.PHONY: run test install bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/widthwise run

$(TFLITE_STAMP):
	-$(PYTHON) -m venv $(TFLITE_VENV) && $(TFLITE_VENV)/bin/python -m pip install --quiet "tflite-runtime==2.14.0" "numpy<2" && touch $(TFLITE_STAMP)

test: $(STAMP) $(TFLITE_STAMP)
	WIDTHWISE_TFLITE_PYTHON="$$(test -f $(TFLITE_STAMP) && echo $(CURDIR)/$(TFLITE_VENV)/bin/python)" $(BIN)/python -m pytest -q

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(TFLITE_VENV) build *.egg-info
