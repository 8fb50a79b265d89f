# Every user command. The first use creates .venv and installs requirements.txt into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MODE   ?= hybrid
PRESET ?=
TASK   ?= sst2
POOL   ?= mean
# The preset when none is given is config.py's rule, the one train.py follows (small with CUDA,
# tiny without), so `make probe` finds what `make pretrain` wrote. Asked only when needed.
PRESET_USED = $(or $(PRESET),$(shell $(PY) config.py default-preset))
CKPT   ?= out/$(MODE)-$(PRESET_USED)/ckpt.pt
ENCODER ?= online
RUNS   ?= out/hybrid-$(PRESET_USED) out/mlm-$(PRESET_USED)
CORPUS ?=
BUDGET ?=
ARMS   ?= hybrid mlm
SEEDS  ?=
ARGS   ?=
comma  := ,
empty  :=
space  := $(empty) $(empty)

.PHONY: test faults pretrain probe analyze paper recipe-search bench gpu-check smoke clean-venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# The tests run with the paper extras (matplotlib), so the figure code runs in CI too.
test: $(VENV)/.paper-installed
	$(PY) -m pytest -q tests $(ARGS)

faults: $(VENV)/.installed
	$(PY) -m pytest -q tests -m faults $(ARGS)

pretrain: $(VENV)/.installed
	$(PY) train.py --mode=$(MODE) $(if $(PRESET),--preset=$(PRESET)) $(if $(CORPUS),--corpus=$(CORPUS)) $(ARGS)

probe: $(VENV)/.installed
	$(PY) probe.py --task=$(TASK) --ckpt=$(CKPT) --pool=$(POOL) --encoder=$(ENCODER) $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

analyze: $(VENV)/.installed
	$(PY) analyze.py --runs=$(subst $(space),$(comma),$(strip $(RUNS))) $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

$(VENV)/.paper-installed: $(VENV)/.installed requirements-paper.txt
	$(VENV)/bin/pip install --quiet -r requirements-paper.txt
	touch $@

paper: $(VENV)/.paper-installed
	$(PY) -m study.study --preset=$(or $(PRESET),tiny) --arms=$(subst $(space),$(comma),$(strip $(ARMS))) $(if $(BUDGET),--budget=$(BUDGET)) $(if $(CORPUS),--corpus=$(CORPUS)) $(if $(SEEDS),--seeds=$(SEEDS)) $(ARGS)

# The tiny preset's recipe search (~10 min per candidate here): each run's train-side selection
# signals (study/recipe_search.py) -> results/recipe-search/<run>.json and the table in its README.md.
recipe-search: $(VENV)/.installed
	bash study/recipe_search.sh

bench: $(VENV)/.installed
	$(PY) -m tools.bench $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

# The GPU path in one command (~5 min on one H100): PASS/FAIL table + out/gpu-check.json; every
# check is SKIP on a machine without CUDA.
gpu-check: $(VENV)/.installed
	$(PY) -m tools.gpu_check $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

# The whole pipeline (pre-train both arms, probe, analyse, report; then 2 seeds per arm and the
# learning curve) on a generated corpus and fixture tasks: tests/test_paper.py's smoke tests.
smoke: $(VENV)/.installed
	$(PY) -m pytest -q tests/test_paper.py -k "end_to_end or seeds" $(ARGS)

clean-venv:
	rm -rf $(VENV)
