#!/bin/sh
# Install bastion-audit as a systemd service, or remove it (make install,
# make uninstall). Every path can be moved, so that a test installs into a
# temporary root; the defaults are the real ones:
#
#   PREFIX=/opt/bastion-audit           the agent's own venv
#   BINDIR=/usr/local/bin               links to the audit-* commands
#   SYSCONFDIR=/etc/bastion-audit       agent.toml (an edited one is kept)
#   UNITDIR=/etc/systemd/system         bastion-audit.service
#   SUDOERSDIR=/etc/sudoers.d           zxy, with SUDO_MODE=1 only
#   LIBEXECDIR=/usr/local/lib/bastion-audit   session_tracker.sh (SUDO_MODE=1),
#                                       web-terminal (WEB=1)
#   DATA_DIR=/var/lib/bastion-audit     created root only (0700); kept by
#                                       uninstall unless PURGE=1
#   INSTALL_PYTHON=/usr/bin/python3     the Python of the venv
#   DESTDIR=                            a staging root every path goes under
#                                       (the files still name the paths above)
#   SUDO_MODE=1                         also the original design's sudo mode
#   WEB=1                               also audit-web (scripts/install-web.sh)
#
#   scripts/install.sh install | uninstall
set -eu
umask 022

PROG=install.sh
PREFIX=${PREFIX:-/opt/bastion-audit}
BINDIR=${BINDIR:-/usr/local/bin}
SYSCONFDIR=${SYSCONFDIR:-/etc/bastion-audit}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SUDOERSDIR=${SUDOERSDIR:-/etc/sudoers.d}
LIBEXECDIR=${LIBEXECDIR:-/usr/local/lib/bastion-audit}
DATA_DIR=${DATA_DIR:-/var/lib/bastion-audit}
INSTALL_PYTHON=${INSTALL_PYTHON:-/usr/bin/python3}
DESTDIR=${DESTDIR:-}
SUDO_MODE=${SUDO_MODE:-}
WEB=${WEB:-}
PURGE=${PURGE:-}
DEFAULT_DATA_DIR=/var/lib/bastion-audit
DEFAULT_LIBEXECDIR=/usr/local/lib/bastion-audit
UNIT=bastion-audit.service
SRC=$(cd "$(dirname "$0")/.." && pwd)
D=$DESTDIR
# What install wrote, to tell an edited configuration from ours at uninstall.
PRISTINE=$PREFIX/share/bastion-audit/installed

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

say() {
    echo "$PROG: $*"
}

# rm -rf only what is ours: an absolute path whose last part names us.
ours() {
    case $1 in
        /*/*bastion-audit*) case ${1##*/} in *bastion-audit*) return 0 ;; esac ;;
    esac
    return 1
}

# Create a directory with this mode, but leave an existing one as it is
# (install -d would change the mode of /usr/local/bin or /etc/sudoers.d).
new_dir() {
    [ -d "$2" ] || install -d -m "$1" "$2"
}

systemd_running() {
    [ -z "$D" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

# install_config SOURCE TARGET MODE: TARGET from SOURCE unless an edited one
# is there (then SOURCE goes beside it as TARGET.new); SOURCE is kept as the
# pristine copy uninstall compares with.
install_config() {
    new_dir 0755 "$D$PRISTINE"
    install -m 0644 "$1" "$D$PRISTINE/${2##*/}"
    if [ -e "$D$2" ]; then
        if ! cmp -s "$1" "$D$2"; then
            install -m "$3" "$1" "$D$2.new"
            say "kept your $D$2; the new defaults are in $D$2.new"
        fi
    else
        install -m "$3" "$1" "$D$2"
        say "configuration $D$2"
    fi
}

# remove_config TARGET: remove it if it is what install wrote; an edited one
# is renamed TARGET.save, and said so.
remove_config() {
    [ -e "$D$1" ] || return 0
    if [ ! -e "$D$PRISTINE/${1##*/}" ]; then
        say "kept $D$1: this install did not write it"
        return 0
    fi
    if cmp -s "$D$1" "$D$PRISTINE/${1##*/}"; then
        rm -f "$D$1"
    else
        mv -f "$D$1" "$D$1.save"
        say "kept your edited $D$1 as $D$1.save"
    fi
    rm -f "$D$1.new"
}

for var in PREFIX BINDIR SYSCONFDIR UNITDIR SUDOERSDIR LIBEXECDIR DATA_DIR; do
    eval "value=\$$var"
    case $value in /*) ;; *) die "$var must be an absolute path, not '$value'" ;; esac
done
case $D in '' | /*) ;; *) die "DESTDIR must be an absolute path, not '$D'" ;; esac
for dir in "$PREFIX" "$SYSCONFDIR" "$LIBEXECDIR" "$DATA_DIR"; do
    ours "$dir" || die "$dir: its last part must name bastion-audit (it is removed whole)"
done
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs a root daemon)"
# audit-web's part (install_web, uninstall_web, web_agent_config): used with
# WEB=1, and by every uninstall, which takes out what WEB=1 put in.
. "$SRC/scripts/install-web.sh"

install_venv() {
    "$INSTALL_PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        "$SRC/scripts/ensure-packages.sh" python3-venv
    if [ -e "$D$PREFIX" ] && [ ! -f "$D$PREFIX/pyvenv.cfg" ]; then
        die "$D$PREFIX exists and is not a venv: not touching it"
    fi
    say "venv in $D$PREFIX"
    "$INSTALL_PYTHON" -m venv "$D$PREFIX"
    "$D$PREFIX/bin/python" -m pip uninstall -q -y bastion-audit >/dev/null 2>&1 || true
    "$D$PREFIX/bin/python" -m pip install -q --disable-pip-version-check \
        "$stage${WEB:+[web]}"
    if [ -n "$D" ]; then
        # A venv names its own path in its scripts' #! lines and activate:
        # the path it will have, not the staging one.
        grep -rlI -- "$D$PREFIX" "$D$PREFIX/bin" | while read -r file; do
            sed -i "s#$D$PREFIX#$PREFIX#g" "$file"
        done
    fi
    install -d -m 0755 "$D$PREFIX/share/doc/bastion-audit"
    install -m 0644 "$SRC/README.md" "$D$PREFIX/share/doc/bastion-audit/README.md"
}

install_sudo_mode() {
    # The sudo mode's script: root's, not writable by anyone else, and told
    # where the data directory is.
    new_dir 0755 "$D$LIBEXECDIR"
    sed "s#^readonly DEFAULT_DATA_DIR=.*#readonly DEFAULT_DATA_DIR=$DATA_DIR#" \
        "$SRC/scripts/session_tracker.sh" >"$stage/session_tracker.sh"
    install -m 0755 "$stage/session_tracker.sh" "$D$LIBEXECDIR/session_tracker.sh"
    command -v visudo >/dev/null || die "SUDO_MODE=1 needs sudo (visudo checks the rule)"
    sed "s#$DEFAULT_LIBEXECDIR#$LIBEXECDIR#g" "$SRC/sudoers.d/zxy" >"$stage/zxy"
    visudo -cqf "$stage/zxy" || die "sudoers.d/zxy does not pass visudo -c: not installed"
    new_dir 0750 "$D$SUDOERSDIR"
    install -m 0440 "$stage/zxy" "$D$SUDOERSDIR/zxy"
    say "sudoers rule $D$SUDOERSDIR/zxy (checked with visudo)"
}

install_all() {
    # Build from a copy, so that concurrent installs never share a build dir.
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    (cd "$SRC" && cp -r setup.cfg pyproject.toml README.md agent tracer parsers web \
        scripts etc schema "$stage/")
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    install_venv

    say "commands in $D$BINDIR"
    new_dir 0755 "$D$BINDIR"
    for cmd in "$D$PREFIX"/bin/audit-*; do
        link=$D$BINDIR/${cmd##*/}
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            die "$link exists and is not a link: not replacing it"
        fi
        ln -sfn "$PREFIX/bin/${cmd##*/}" "$link"
    done

    if [ -n "$SUDO_MODE" ]; then
        install_sudo_mode
    else
        say "no sudoers rule: the agent needs none (SUDO_MODE=1 adds the sudo mode's)"
    fi

    new_dir 0755 "$D$SYSCONFDIR"
    config=$SYSCONFDIR/agent.toml
    sed -e "s|^#data_dir = \"$DEFAULT_DATA_DIR\"\$|data_dir = \"$DATA_DIR\"|" \
        "$SRC/etc/agent.toml" >"$stage/agent.toml"
    [ "$DATA_DIR" = "$DEFAULT_DATA_DIR" ] && cp "$SRC/etc/agent.toml" "$stage/agent.toml"
    [ -z "$WEB" ] || web_agent_config "$stage/agent.toml"
    install_config "$stage/agent.toml" "$config" 0644
    "$D$PREFIX/bin/python" -c 'import sys; from pathlib import Path
from agent.config import load_config
load_config(Path(sys.argv[1]))' "$D$config" || die "$D$config does not load"

    new_dir 0755 "$D$UNITDIR"
    sed -e "s#@PREFIX@#$PREFIX#g" -e "s#@SYSCONFDIR@#$SYSCONFDIR#g" \
        -e "s#@DATA_DIR@#$DATA_DIR#g" "$SRC/systemd/$UNIT.in" >"$stage/$UNIT"
    install -m 0644 "$stage/$UNIT" "$D$UNITDIR/$UNIT"
    say "unit $D$UNITDIR/$UNIT"

    install -d -m 0700 -o root -g root "$D$DATA_DIR"
    chmod 0700 "$D$DATA_DIR"
    say "data directory $D$DATA_DIR (root only)"

    [ -z "$WEB" ] || install_web

    if [ -n "$D" ]; then
        say "staged under $D; the files name the paths without it"
    elif systemd_running; then
        systemctl daemon-reload
        say "start it with: systemctl enable --now bastion-audit${WEB:+ audit-web}"
    else
        say "systemd is not running here; run it with: $PREFIX/bin/audit-agent run --config $config"
    fi
}

uninstall_all() {
    if systemd_running && [ -e "$UNITDIR/$UNIT" ]; then
        systemctl disable --now "$UNIT" || true
    fi
    rm -f "$D$UNITDIR/$UNIT"
    for link in "$D$BINDIR"/audit-*; do
        [ -L "$link" ] || continue
        case $(readlink "$link") in "$PREFIX"/bin/* | "$D$PREFIX"/bin/*) rm -f "$link" ;; esac
    done
    if [ -f "$D$SUDOERSDIR/zxy" ] && grep -q '^# bastion-audit' "$D$SUDOERSDIR/zxy"; then
        rm -f "$D$SUDOERSDIR/zxy"
    fi
    rm -f "$D$LIBEXECDIR/session_tracker.sh"
    uninstall_web
    systemd_running && systemctl daemon-reload || true
    [ ! -d "$D$LIBEXECDIR" ] || rmdir "$D$LIBEXECDIR" || true
    remove_config "$SYSCONFDIR/agent.toml"
    [ ! -d "$D$SYSCONFDIR" ] || rmdir "$D$SYSCONFDIR" 2>/dev/null ||
        say "kept $D$SYSCONFDIR: it holds other files"
    if [ -f "$D$PREFIX/pyvenv.cfg" ]; then
        rm -rf "$D$PREFIX"
    fi
    if [ -n "$PURGE" ]; then
        rm -rf "$D$DATA_DIR"
        say "removed everything, the data in $D$DATA_DIR too"
    else
        say "removed everything but the data in $D$DATA_DIR (PURGE=1 removes it too)"
    fi
}

case ${1:-} in
    install) install_all ;;
    uninstall) uninstall_all ;;
    *) die "usage: $PROG install | uninstall" ;;
esac
