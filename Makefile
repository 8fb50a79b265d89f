# Every user command. The first use creates .venv and installs requirements.txt into it.
# With a Python and torch already there (a GPU cluster's module, a container): `make <target>
# VENV=` uses $(PYTHON) as it is, `make <target> PY=/path/to/python` that one; neither creates
# or installs anything, and each target first checks that the interpreter has torch >= TORCH_MIN
# and the other requirements (one line saying what is missing). Tested with torch 2.13.0, the
# version requirements.txt pins.
PYTHON ?= python3
VENV   := .venv
TORCH_MIN := 2.4
ifeq ($(origin PY),command line)
VENV   :=
endif
ifneq ($(VENV),)
PY     := $(VENV)/bin/python
READY  := $(VENV)/.installed
PAPER_READY := $(VENV)/.paper-installed
else
PY     := $(PYTHON)
READY  := check-python
PAPER_READY := check-python-paper
endif
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
JOBS   ?=
comma  := ,
empty  :=
space  := $(empty) $(empty)

.PHONY: test faults pretrain probe analyze paper curve recipe-search bench gpu-check smoke clean-venv \
        check-python check-python-paper

ifneq ($(VENV),)
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@
endif

# A preinstalled interpreter (VENV= or PY=): torch >= TORCH_MIN and the modules the targets import.
CHECK_PY = $(PY) -c "import importlib.util as u, re, sys; \
  need, mods = sys.argv[1], sys.argv[2:]; \
  torch = u.find_spec('torch') and __import__('torch').__version__; \
  m = re.match(r'(\d+)\.(\d+)', torch or ''); \
  old = not m or tuple(map(int, m.groups())) < tuple(map(int, need.split('.'))); \
  lack = [x for x in mods if u.find_spec(x) is None]; \
  why = ['torch ' + (torch or 'missing') + ' (needs >= ' + need + ', tested with 2.13.0)'] * old + ['no ' + ', '.join(lack)] * bool(lack); \
  sys.exit('error: ' + sys.executable + ': ' + '; '.join(why) + ': install them there, or leave VENV and PY unset to use .venv (requirements.txt)' if why else 0)" $(TORCH_MIN)

check-python:
	@$(CHECK_PY) tokenizers numpy scipy requests pytest

check-python-paper:
	@$(CHECK_PY) tokenizers numpy scipy requests pytest matplotlib

# The tests run with the paper extras (matplotlib), so the figure code runs in CI too; two pytest
# processes at once, each test file in one (tools/run_tests.py; ARGS go to both).
test: $(PAPER_READY)
	$(PY) -m tools.run_tests $(ARGS)

faults: $(READY)
	$(PY) -m tools.run_tests -m faults $(ARGS)

pretrain: $(READY)
	$(PY) train.py --mode=$(MODE) $(if $(PRESET),--preset=$(PRESET)) $(if $(CORPUS),--corpus=$(CORPUS)) $(ARGS)

probe: $(READY)
	$(PY) probe.py --task=$(TASK) --ckpt=$(CKPT) --pool=$(POOL) --encoder=$(ENCODER) $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

analyze: $(READY)
	$(PY) analyze.py --runs=$(subst $(space),$(comma),$(strip $(RUNS))) $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

ifneq ($(VENV),)
$(VENV)/.paper-installed: $(VENV)/.installed requirements-paper.txt
	$(VENV)/bin/pip install --quiet -r requirements-paper.txt
	touch $@
endif

paper: $(PAPER_READY)
	$(PY) -m study.study --preset=$(or $(PRESET),tiny) --arms=$(subst $(space),$(comma),$(strip $(ARMS))) $(if $(BUDGET),--budget=$(BUDGET)) $(if $(CORPUS),--corpus=$(CORPUS)) $(if $(SEEDS),--seeds=$(SEEDS)) $(ARGS)

# The compute curve (study/jobs.py): every job (3 seeds of hybrid and MLM at 2e14 FLOPs, 3 random
# inits), or the ones named (JOBS="hybrid:1 mlm:1"; JOBS=none: none), then the merge of every
# complete job folder into out/curve/report.md. Each job is also a plain command of its own.
curve: $(PAPER_READY)
	$(PY) -m study.jobs $(if $(JOBS),--jobs=$(subst $(space),$(comma),$(strip $(JOBS)))) $(if $(PRESET),--preset=$(PRESET)) $(if $(BUDGET),--budget=$(BUDGET)) $(if $(CORPUS),--corpus=$(CORPUS)) $(ARGS)

# The tiny preset's recipe search (~10 min per candidate here): each run's train-side selection
# signals (study/recipe_search.py) -> results/recipe-search/<run>.json and the table in its README.md.
recipe-search: $(READY)
	PY=$(PY) bash study/recipe_search.sh

bench: $(READY)
	$(PY) -m tools.bench $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

# The GPU path in one command (~5 min on one H100): PASS/FAIL table + out/gpu-check.json; every
# check is SKIP on a machine without CUDA.
gpu-check: $(READY)
	$(PY) -m tools.gpu_check $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

# The whole pipeline (pre-train both arms, probe, analyse, report; then 2 seeds per arm and the
# learning curve) on a generated corpus and fixture tasks: tests/test_paper.py's smoke tests.
smoke: $(READY)
	$(PY) -m pytest -q tests/test_paper.py -k "end_to_end or seeds" $(ARGS)

clean-venv:
	$(if $(VENV),rm -rf $(VENV))
