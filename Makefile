# Every user command. The first use creates .venv and installs requirements.txt into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MODE   ?= hybrid
PRESET ?=
TASK   ?= sst2
POOL   ?= mean
CKPT   ?= out/$(MODE)-$(or $(PRESET),tiny)/ckpt.pt
ENCODER ?= online
RUNS   ?= out/hybrid-$(or $(PRESET),tiny) out/mlm-$(or $(PRESET),tiny)
ARGS   ?=

.PHONY: test faults pretrain probe analyze paper bench smoke clean-venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests $(ARGS)

pretrain: $(VENV)/.installed
	$(PY) train.py --mode=$(MODE) $(if $(PRESET),--preset=$(PRESET)) $(ARGS)

probe: $(VENV)/.installed
	$(PY) probe.py --task=$(TASK) --ckpt=$(CKPT) --pool=$(POOL) --encoder=$(ENCODER) $(ARGS)

clean-venv:
	rm -rf $(VENV)
