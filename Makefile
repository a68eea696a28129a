# Two commands for a new user: `make demo` and `make test`. Each does its own set-up, idempotently.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# pip warns once per package about this machine's empty local index folders; hide only that.
QUIET := 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
APT_PACKAGES := pkg-config libturbojpeg0-dev libopencv-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean-venv

setup: $(STAMP)

# Re-run the install only when the package description changes.
$(STAMP): pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing system packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@[ -x $(PY) ] || python3.11 -m venv $(VENV)
	$(PIP) install -q --upgrade setuptools wheel $(QUIET)
	@# torch and torchvision from this machine's local wheels (a CPU-usable CUDA build); see README.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 $(QUIET)
	@# ffcv's setup.py imports numpy, so build it against the venv rather than an isolated env.
	$(PIP) install -q numpy cython pkgconfig $(QUIET)
	$(PIP) install -q --no-build-isolation ffcv==1.0.2 $(QUIET)
	$(PIP) install -q -e '.[test]' $(QUIET)
	@touch $@
	@echo "setup: done ($(VENV))"

demo: setup
	$(PY) -m scm_ray.cli demo

test: setup
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
