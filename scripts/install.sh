#!/bin/sh
# Install bastion-audit as a systemd service, or remove it (make install,
# make uninstall). Every path can be moved, so that a test installs into a
# temporary root; the defaults are the real ones:
#
#   PREFIX=/opt/bastion-audit           the agent's own venv
#   BINDIR=/usr/local/bin               links to the audit-* commands
#   SYSCONFDIR=/etc/bastion-audit       agent.toml (kept if it exists)
#   UNITDIR=/etc/systemd/system         bastion-audit.service
#   SUDOERSDIR=/etc/sudoers.d           zxy (checked with visudo first)
#   LIBEXECDIR=/usr/local/lib/bastion-audit   session_tracker.sh for sudo mode
#   DATA_DIR=/var/lib/bastion-audit     created root only (0700); kept by
#                                       uninstall unless PURGE=1
#   INSTALL_PYTHON=/usr/bin/python3     the Python of the venv
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
PURGE=${PURGE:-}
DEFAULT_DATA_DIR=/var/lib/bastion-audit
DEFAULT_LIBEXECDIR=/usr/local/lib/bastion-audit
UNIT=bastion-audit.service
SRC=$(cd "$(dirname "$0")/.." && pwd)

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
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

for var in PREFIX BINDIR SYSCONFDIR UNITDIR SUDOERSDIR LIBEXECDIR DATA_DIR; do
    eval "value=\$$var"
    case $value in /*) ;; *) die "$var must be an absolute path, not '$value'" ;; esac
done
for dir in "$PREFIX" "$SYSCONFDIR" "$LIBEXECDIR" "$DATA_DIR"; do
    ours "$dir" || die "$dir: its last part must name bastion-audit (it is removed whole)"
done
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs a root daemon and a sudoers rule)"

install_all() {
    "$INSTALL_PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        "$SRC/scripts/ensure-packages.sh" python3-venv
    if [ -e "$PREFIX" ] && [ ! -f "$PREFIX/pyvenv.cfg" ]; then
        die "$PREFIX exists and is not a venv: not touching it"
    fi

    # Build from a copy, so that concurrent installs never share a build dir.
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    (cd "$SRC" && cp -r setup.cfg pyproject.toml README.md agent tracer parsers web \
        scripts etc schema "$stage/")
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +

    say "venv in $PREFIX"
    "$INSTALL_PYTHON" -m venv "$PREFIX"
    "$PREFIX/bin/python" -m pip uninstall -q -y bastion-audit >/dev/null 2>&1 || true
    "$PREFIX/bin/python" -m pip install -q --disable-pip-version-check "$stage"
    install -d -m 0755 "$PREFIX/share/doc/bastion-audit"
    install -m 0644 "$SRC/README.md" "$PREFIX/share/doc/bastion-audit/README.md"

    say "commands in $BINDIR"
    new_dir 0755 "$BINDIR"
    for cmd in "$PREFIX"/bin/audit-*; do
        link=$BINDIR/${cmd##*/}
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            die "$link exists and is not a link: not replacing it"
        fi
        ln -sfn "$cmd" "$link"
    done

    # The sudo mode's script: root's, not writable by anyone else, and told
    # where the data directory is.
    new_dir 0755 "$LIBEXECDIR"
    sed "s#^readonly DEFAULT_DATA_DIR=.*#readonly DEFAULT_DATA_DIR=$DATA_DIR#" \
        "$SRC/scripts/session_tracker.sh" >"$stage/session_tracker.sh"
    install -m 0755 "$stage/session_tracker.sh" "$LIBEXECDIR/session_tracker.sh"

    if command -v visudo >/dev/null; then
        sed "s#$DEFAULT_LIBEXECDIR#$LIBEXECDIR#g" "$SRC/sudoers.d/zxy" >"$stage/zxy"
        visudo -cqf "$stage/zxy" || die "sudoers.d/zxy does not pass visudo -c: not installed"
        new_dir 0750 "$SUDOERSDIR"
        install -m 0440 "$stage/zxy" "$SUDOERSDIR/zxy"
        say "sudoers rule $SUDOERSDIR/zxy (checked with visudo)"
    else
        say "sudo is not installed: no sudoers rule for the sudo mode"
    fi

    new_dir 0755 "$SYSCONFDIR"
    config=$SYSCONFDIR/agent.toml
    sed "s|^#data_dir = \"$DEFAULT_DATA_DIR\"\$|data_dir = \"$DATA_DIR\"|" \
        "$SRC/etc/agent.toml" >"$stage/agent.toml"
    [ "$DATA_DIR" = "$DEFAULT_DATA_DIR" ] && cp "$SRC/etc/agent.toml" "$stage/agent.toml"
    if [ -e "$config" ]; then
        if ! cmp -s "$stage/agent.toml" "$config"; then
            install -m 0644 "$stage/agent.toml" "$config.new"
            say "kept your $config; the new defaults are in $config.new"
        fi
    else
        install -m 0644 "$stage/agent.toml" "$config"
        say "configuration $config"
    fi
    "$PREFIX/bin/python" -c 'import sys; from pathlib import Path
from agent.config import load_config
load_config(Path(sys.argv[1]))' "$config" || die "$config does not load"

    new_dir 0755 "$UNITDIR"
    sed -e "s#@PREFIX@#$PREFIX#g" -e "s#@SYSCONFDIR@#$SYSCONFDIR#g" \
        -e "s#@DATA_DIR@#$DATA_DIR#g" "$SRC/systemd/$UNIT.in" >"$stage/$UNIT"
    install -m 0644 "$stage/$UNIT" "$UNITDIR/$UNIT"
    say "unit $UNITDIR/$UNIT"

    install -d -m 0700 -o root -g root "$DATA_DIR"
    chmod 0700 "$DATA_DIR"
    say "data directory $DATA_DIR (root only)"

    if systemd_running; then
        systemctl daemon-reload
        say "start it with: systemctl enable --now bastion-audit"
    else
        say "systemd is not running here; run it with: $PREFIX/bin/audit-agent run --config $config"
    fi
}

uninstall_all() {
    if systemd_running && [ -e "$UNITDIR/$UNIT" ]; then
        systemctl disable --now "$UNIT" || true
    fi
    rm -f "$UNITDIR/$UNIT"
    systemd_running && systemctl daemon-reload || true
    for link in "$BINDIR"/audit-*; do
        [ -L "$link" ] || continue
        case $(readlink "$link") in "$PREFIX"/bin/*) rm -f "$link" ;; esac
    done
    if [ -f "$SUDOERSDIR/zxy" ] && grep -q '^# bastion-audit' "$SUDOERSDIR/zxy"; then
        rm -f "$SUDOERSDIR/zxy"
    fi
    rm -f "$LIBEXECDIR/session_tracker.sh"
    [ ! -d "$LIBEXECDIR" ] || rmdir "$LIBEXECDIR" || true
    rm -f "$SYSCONFDIR/agent.toml" "$SYSCONFDIR/agent.toml.new"
    [ ! -d "$SYSCONFDIR" ] || rmdir "$SYSCONFDIR" || say "kept $SYSCONFDIR: it holds other files"
    if [ -f "$PREFIX/pyvenv.cfg" ]; then
        rm -rf "$PREFIX"
    fi
    if [ -n "$PURGE" ]; then
        rm -rf "$DATA_DIR"
        say "removed everything, the data in $DATA_DIR too"
    else
        say "removed everything but the data in $DATA_DIR (PURGE=1 removes it too)"
    fi
}

case ${1:-} in
    install) install_all ;;
    uninstall) uninstall_all ;;
    *) die "usage: $PROG install | uninstall" ;;
esac
