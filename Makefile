# Two commands for a new user: `make demo` and `make test`. Each does its own set-up, idempotently.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
APT_PACKAGES := pkg-config libturbojpeg0-dev libopencv-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean-venv

setup: $(STAMP)

# Re-run the install only when the package description changes.
$(STAMP): pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing system packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@[ -x $(PY) ] || python3.11 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	@# torch and torchvision from this machine's local wheels (a CPU-usable CUDA build); see README.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	@# ffcv's setup.py imports numpy, so build it against the venv rather than an isolated env.
	$(PIP) install -q numpy cython pkgconfig
	$(PIP) install -q --no-build-isolation ffcv==1.0.2
	$(PIP) install -q -e '.[test]'
	@touch $@
	@echo "setup: done ($(VENV))"

demo: setup
	$(PY) -m scm_ray.cli demo

test: setup
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
