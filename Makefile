# Two commands for a new user: `make demo` and `make test`. Each does its own set-up, idempotently.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# One set-up step: one console line; what it prints goes to $(SETUP_LOG), shown only if it fails.
SETUP_LOG := $(CURDIR)/setup.log
step = echo "setup: $(1)"; ( $(2) ) >>$(SETUP_LOG) 2>&1 || { echo "setup: $(1) failed; the end of $(SETUP_LOG):"; tail -n 40 $(SETUP_LOG); exit 1; }
APT_PACKAGES := pkg-config libturbojpeg0-dev libopencv-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean-venv

setup: $(STAMP)

# Re-run the install only when the package description changes.
$(STAMP): pyproject.toml
	@: > $(SETUP_LOG)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(call step,system packages for FFCV via apt ($$missing),$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing); \
	fi
	@[ -x $(PY) ] || { $(call step,virtual environment $(VENV),python3.11 -m venv $(VENV)); }
	@$(call step,pip tooling,$(PIP) install -q --upgrade setuptools wheel)
	@# torch and torchvision from this machine's local wheels (a CPU-usable CUDA build); see README.
	@$(call step,torch 2.14.1 and torchvision 0.29.1,$(PIP) install -q torch==2.14.1 torchvision==0.29.1)
	@# ffcv's setup.py imports numpy, so build it against the venv rather than an isolated env.
	@$(call step,FFCV build requirements,$(PIP) install -q numpy cython pkgconfig)
	@$(call step,ffcv 1.0.2,$(PIP) install -q --no-build-isolation ffcv==1.0.2)
	@$(call step,scm-ray (editable) with its test extras,$(PIP) install -q -e '.[test]')
	@touch $@
	@echo "setup: done ($(VENV))"

demo: setup
	$(PY) -m scm_ray.cli demo

test: setup
	$(PY) -m pytest -q --durations=25

# What to run while developing: every test that needs no Ray cluster and no FFCV loader warm-up.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not ray"

clean-venv:
	rm -rf $(VENV)
