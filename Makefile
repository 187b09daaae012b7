# bastion-audit: the two commands a newcomer needs (README), and a few more.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= /var/lib/bastion-audit
PYTEST_ARGS ?=

APT_RUN := strace openssh-client
APT_TEST := openssh-server sshpass sudo rsync rsyslog asciinema systemd \
	shellinabox chromium chromium-driver postgresql-15 postgresql-contrib
BASTION_USER ?= zxy
SHELL_CONFIG ?= /etc/bastion-audit/shell.toml

# make install: where things go (each can be moved, e.g. into a test root).
PREFIX ?= /opt/bastion-audit
BINDIR ?= /usr/local/bin
SYSCONFDIR ?= /etc/bastion-audit
UNITDIR ?= /etc/systemd/system
SUDOERSDIR ?= /etc/sudoers.d
LIBEXECDIR ?= /usr/local/lib/bastion-audit
INSTALL_PYTHON ?= /usr/bin/python3
INSTALL_VARS = PREFIX='$(PREFIX)' BINDIR='$(BINDIR)' SYSCONFDIR='$(SYSCONFDIR)' \
	UNITDIR='$(UNITDIR)' SUDOERSDIR='$(SUDOERSDIR)' LIBEXECDIR='$(LIBEXECDIR)' \
	DATA_DIR='$(DATA_DIR)' INSTALL_PYTHON='$(INSTALL_PYTHON)' PURGE='$(PURGE)'

.PHONY: run test demo deps-run deps-test venv venv-test lint clean install uninstall \
	install-shell patched-ssh web venv-web player

## make run: install what is missing, then run the agent in the foreground.
run: deps-run venv
	$(BIN)/audit-agent run --data-dir $(DATA_DIR)

## make test: install the test needs too, then run the whole suite.
test: deps-run deps-test venv-test player
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make demo: the agent, a throwaway sshd, a scripted tagged session, audit-tail.
demo: deps-run deps-test venv-test
	$(BIN)/python -m scripts.demo

## make install-shell: audit-shell as the ForceCommand of $(BASTION_USER) (sshd drop-in).
install-shell: deps-run venv
	scripts/install-shell.sh --user $(BASTION_USER) --audit-shell $(abspath $(BIN))/audit-shell

## make web: audit-web in the foreground with $(SHELL_CONFIG) (README: audit-web;
## in production it runs as its own account, not root).
web: deps-run venv-web player
	$(BIN)/audit-web --config $(SHELL_CONFIG)

## make player: the console's asciinema-player, from the npm registry, exactly as
## web/player/package-lock.json says (npm ci); node_modules is never committed.
PLAYER := web/player/node_modules/asciinema-player/dist/bundle/asciinema-player.min.js
player: $(PLAYER)

$(PLAYER): web/player/package.json web/player/package-lock.json
	@command -v npm >/dev/null || scripts/ensure-packages.sh nodejs npm
	cd web/player && npm ci --no-audit --no-fund
	touch $@

## make patched-ssh: build ssh with -Z TAG from Debian's openssh source, install
## it as /usr/local/lib/bastion-audit/ssh (cached; /usr/bin/ssh is left alone).
patched-ssh:
	scripts/build-patched-ssh.sh

## make install (root): the agent as a systemd service, its config, sudoers, data dir.
install: deps-run
	@scripts/ensure-packages.sh python3 python3-venv
	$(INSTALL_VARS) scripts/install.sh install

## make uninstall: all of it but the data (make uninstall PURGE=1: the data too).
uninstall:
	$(INSTALL_VARS) scripts/install.sh uninstall

deps-run:
	@scripts/ensure-packages.sh $(APT_RUN)
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || scripts/ensure-packages.sh python3-venv

deps-test:
	@scripts/ensure-packages.sh $(APT_TEST)

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test
venv-web: $(VENV)/.installed-web

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,web]'
	touch $@

$(VENV)/.installed-web: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[web]'
	touch $@

lint: venv-test
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/ruff check agent tracer parsers web tests bench scripts
	$(BIN)/ruff format --check agent tracer parsers web tests bench scripts
	$(BIN)/mypy agent tracer parsers web

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
