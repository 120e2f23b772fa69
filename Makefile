# Two commands do everything: `make run` (the tutorial, headless, with a report) and `make test`.
# Both install what is missing: Debian packages the lab needs, then .venv with the package.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# python3-venv: `python3 -m venv` needs it where python3 is Debian's own.
APT_PKGS := iproute2 iptables nftables openssh-server sudo curl python3-venv tcpdump
# Only the tests need a browser (the real-JupyterLab test drives Debian's Chromium) and debootstrap (the lab:rootfs host).
APT_TEST_PKGS := chromium chromium-driver debootstrap
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench system system-test apt venv lab-down clean

system:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_PKGS)"

system-test:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_PKGS) $(APT_TEST_PKGS)"

apt:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing missing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "make: creating $(VENV)"; python3 -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# The linter, the formatter's check and the type checker run first; any finding fails the build.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: system-test lint
	$(PY) -m pytest -p no:cacheprovider

run: system $(STAMP)
	$(VENV)/bin/tproxy-nb run

bench: system $(STAMP)
	$(PY) -m bench

lab-down:
	@if [ -x $(VENV)/bin/tproxy-nb ]; then $(VENV)/bin/tproxy-nb lab down; else echo "make: no $(VENV): nothing of the lab to take down"; fi

clean: lab-down
	rm -rf build $(VENV)
