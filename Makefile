# Two commands matter: `make demo` and `make test`. Both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_DIRS := $(wildcard meshward tests bench examples fuzz)
FUZZ_SECONDS ?= 60
# The hot modules mypyc compiles (pyproject.toml [tool.meshward.mypyc]): editing one rebuilds.
COMPILED := $(shell $(PY) -c 'import tomllib; print(" ".join("meshward/" + m.split(".", 1)[1].replace(".", "/") + ".py" for m in tomllib.load(open("pyproject.toml", "rb"))["tool"]["meshward"]["mypyc"]["modules"]))')
# The unit tests of the compiled modules, run once more as pure Python (MESHWARD_PURE=1) by
# `make test` (under a minute): the fallback stays tested. Add the tests of a newly compiled module.
PURE_TESTS := tests/native tests/ai tests/authz tests/ratelimit tests/dlp tests/telemetry tests/authn tests/patterns \
  tests/proxy/test_parser.py tests/proxy/test_normalize.py tests/proxy/test_eager.py \
  tests/proxy/test_lean_start.py tests/security/test_dataplane_pure.py \
  tests/proxy/test_transcripts.py tests/proxy/test_denials.py tests/proxy/test_watch.py

.PHONY: demo test lint typecheck unit bench fuzz clean

# Two steps: the dependencies (and the build's: setuptools, mypy), then meshward itself, built
# without isolation so that mypyc type-checks with this venv's mypy and packages (setup.py).
$(STAMP): pyproject.toml setup.py $(COMPILED)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
	  x = p["project"]["optional-dependencies"]; \
	  print(*p["build-system"]["requires"], *p["project"]["dependencies"], *x["dev"], *x["examples"], sep="\n")' \
	  > $(VENV)/requirements.txt
	$(BIN)/pip install -q -r $(VENV)/requirements.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meshward demo

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider
	MESHWARD_PURE=1 $(BIN)/pytest -q -p no:cacheprovider -m "not e2e" $(PURE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

fuzz: $(STAMP)
	$(BIN)/python -m fuzz --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .meshward build meshward/_mypyc.json
	find meshward -name '*.so' -delete
