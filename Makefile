VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.langdml-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test bench lint docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh requirements/assets.txt
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m langdml data build emoji
	$(PY) -m langdml ablate configs/emoji_ablation.yaml --workers 1

test: $(STAMP)
	$(PY) -m pytest -q -ra

bench: $(STAMP)
	$(PY) scripts/benchmarks/bench_losses.py
	$(PY) scripts/benchmarks/bench_eval.py

lint: $(STAMP)
	$(PY) -m ruff check langdml tests scripts

# the documentation site (mkdocs.yml) into site/; `make test` builds it with --strict too
docs: $(STAMP)
	$(PY) -m mkdocs build --strict -d site

clean:
	rm -rf $(VENV) cache/datasets cache/features cache/text runs
