# bastion-audit: the two commands a newcomer needs (README), and a few more.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= /var/lib/bastion-audit
PYTEST_ARGS ?=
SCOPE_PID ?=

APT_RUN := strace openssh-client
APT_DEMO := openssh-server
APT_TEST := openssh-server sshpass sudo rsync rsyslog asciinema systemd \
	shellinabox chromium chromium-driver postgresql-15 postgresql-contrib \
	zsh fish tmux screen sqlite3 dash busybox bc lrzsz
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
# DESTDIR: a staging root for every path; SUDO_MODE=1: the sudo mode's rule and
# script; WEB=1: audit-web too (its account, unit, PAM service; WEB_USER,
# TERM_USER, WEB_STATE_DIR, PAMDIR, INTENTS_DIR move them).
DESTDIR ?=
SUDO_MODE ?=
WEB ?=
INSTALL_VARS = PREFIX='$(PREFIX)' BINDIR='$(BINDIR)' SYSCONFDIR='$(SYSCONFDIR)' \
	UNITDIR='$(UNITDIR)' SUDOERSDIR='$(SUDOERSDIR)' LIBEXECDIR='$(LIBEXECDIR)' \
	DATA_DIR='$(DATA_DIR)' INSTALL_PYTHON='$(INSTALL_PYTHON)' PURGE='$(PURGE)' \
	DESTDIR='$(DESTDIR)' SUDO_MODE='$(SUDO_MODE)' WEB='$(WEB)' \
	$(foreach v,WEB_USER TERM_USER WEB_STATE_DIR PAMDIR INTENTS_DIR,$(if $($(v)),$(v)='$($(v))'))

.PHONY: run test demo deps-run deps-test venv venv-test lint clean install uninstall \
	install-shell patched-ssh web venv-web venv-demo install-web player

## make run: install what is missing, then run the agent in the foreground, unless
## something already audits this machine (scripts/run.py says what and refuses).
## SCOPE_PID=PID: audit only the ssh clients under that process.
run: deps-run venv
	@$(BIN)/python -m scripts.run --data-dir '$(DATA_DIR)' \
		$(if $(SCOPE_PID),--scope-pid '$(SCOPE_PID)') $(if $(DRY_RUN),--dry-run)

## make test: install the test needs too, then run the whole suite.
test: deps-run deps-test venv-test player
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make demo: the agent, a throwaway sshd, a scripted tagged session, audit-tail;
## it installs only that (sshd's program, not its service; pexpect).
demo: deps-run venv-demo
	@scripts/ensure-packages.sh $(APT_DEMO)
	$(BIN)/python -m scripts.demo

## make install-shell: audit-shell as the ForceCommand of $(BASTION_USER) (sshd drop-in).
install-shell: deps-run venv
	scripts/install-shell.sh --user $(BASTION_USER) --audit-shell $(abspath $(BIN))/audit-shell

## make web: audit-web in the foreground with $(SHELL_CONFIG), first making what
## it needs and is missing (scripts/web_trial.py: an example config, the web
## terminal's account, its directories). A trial, as root: make install WEB=1
## runs it as its own account under systemd (README: audit-web).
web: deps-run venv-web player
	@$(foreach v,WEB_STATE_DIR TERM_USER INTENTS_DIR REDEEM_SOCKET,$(if $($(v)),$(v)='$($(v))')) \
		$(BIN)/python -m scripts.web_trial --config '$(SHELL_CONFIG)' $(if $(DRY_RUN),--dry-run)

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

## make install (root): the agent as a systemd service, its config and data dir;
## WEB=1 (or make install-web): audit-web too; SUDO_MODE=1: the zxy sudoers rule.
install: deps-run
	@scripts/ensure-packages.sh python3 python3-venv
	$(INSTALL_VARS) scripts/install.sh install

install-web:
	$(MAKE) install WEB=1

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
venv-demo: $(VENV)/.installed-demo

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,web]'
	touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[demo]'
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
