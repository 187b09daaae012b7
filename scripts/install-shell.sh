#!/bin/bash
# Make audit-shell the bastion account's only way in.
#
#   install-shell.sh [--user NAME] [--audit-shell PATH] [--config FILE]
#                    [--intents-dir DIR] [--recordings-dir DIR]
#                    [--dropin FILE] [--sshd-config FILE]
#   install-shell.sh --print-block [--user NAME] [--audit-shell PATH] [--config FILE]
#   install-shell.sh --uninstall [--dropin FILE] [--sshd-config FILE]
#
# Creates the account if it is missing (login shell /bin/sh, password locked:
# add its keys or set a password yourself), the intents spool and the paramiko
# recordings spool (root's, mode 1733; by default side by side), an example
# audit-shell config if there is none, and an sshd_config.d drop-in with the
# `Match User` block of sshd-audit-shell.conf.in. The drop-in is checked with
# `sshd -t` and `sshd -T` (the account really gets the ForceCommand); if either
# fails it is taken back out. sshd is not reloaded: run `systemctl reload ssh`
# when you are ready.
set -euo pipefail
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin

readonly PROG=install-shell.sh
here=$(cd "$(dirname "$0")" && pwd)
readonly TEMPLATE=$here/sshd-audit-shell.conf.in
readonly SAFE_RE='^/[A-Za-z0-9/._+-]+$'
readonly USER_RE='^[a-z_][a-z0-9_-]{0,31}$'

die() {
    echo "$PROG: error: $*" >&2
    exit 2
}

user=zxy
audit_shell=$(cd "$here/.." && pwd)/.venv/bin/audit-shell
config=/etc/bastion-audit/shell.toml
intents_dir=/var/spool/bastion-audit/intents
recordings_dir=
dropin=/etc/ssh/sshd_config.d/bastion-audit-shell.conf
sshd_config=/etc/ssh/sshd_config
action=install
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || case $1 in --print-block | --uninstall | -h | --help) ;; *) die "$1 needs a value" ;; esac
    case $1 in
        --user) user=$2; shift 2 ;;
        --audit-shell) audit_shell=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --intents-dir) intents_dir=$2; shift 2 ;;
        --recordings-dir) recordings_dir=$2; shift 2 ;;
        --dropin) dropin=$2; shift 2 ;;
        --sshd-config) sshd_config=$2; shift 2 ;;
        --print-block) action=print; shift ;;
        --uninstall) action=uninstall; shift ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[[ $user =~ $USER_RE ]] || die "invalid user name $user"
[ -n "$recordings_dir" ] || recordings_dir=$(dirname "$intents_dir")/recordings
# These go into sshd_config, where a space or a quote would change the meaning.
for path in "$audit_shell" "$config" "$intents_dir" "$recordings_dir" "$dropin"; do
    [[ $path =~ $SAFE_RE ]] || die "unsafe path $path (letters, digits and /._+- only)"
done

block() {
    sed -e "s|@USER@|$user|g" -e "s|@COMMAND@|$audit_shell --config $config|g" "$TEMPLATE"
}

if [ "$action" = print ]; then
    block
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root"

check_sshd() {
    sshd -t -f "$sshd_config" || return 1
    local forced
    forced=$(sshd -T -f "$sshd_config" -C "user=$user,host=localhost,addr=127.0.0.1" |
        sed -n 's/^forcecommand //p')
    [ "$forced" = "$audit_shell --config $config" ] || {
        echo "$PROG: sshd would not give $user the ForceCommand (is $(dirname "$dropin") included by $sshd_config?)" >&2
        return 1
    }
}

if [ "$action" = uninstall ]; then
    rm -f "$dropin"
    sshd -t -f "$sshd_config" || die "sshd -t fails without $dropin: look at $sshd_config"
    echo "$PROG: removed $dropin; reload sshd (systemctl reload ssh). The account, its config and the spool are kept."
    exit 0
fi

[ -x "$audit_shell" ] || die "$audit_shell is not an executable (make venv first?)"

if id -u "$user" >/dev/null 2>&1; then
    echo "$PROG: account $user exists; kept as it is"
else
    useradd --create-home --shell /bin/sh --comment "bastion-audit shell" "$user"
    echo "$PROG: created account $user (password locked: add ~$user/.ssh/authorized_keys or set a password)"
fi
group=$(id -gn "$user")
# The account runs audit-shell with its own rights: its interpreter and
# packages must be reachable (a venv made from a python under /root is not).
runuser -u "$user" -- "$audit_shell" --help >/dev/null 2>&1 ||
    die "$user cannot run $audit_shell (can $user reach its python and packages?)"

for spool in "$intents_dir" "$recordings_dir"; do
    install -d -m 0755 -o root -g root "$(dirname "$spool")"
    install -d -m 1733 -o root -g root "$spool"
    chown root:root "$spool"
    chmod 1733 "$spool"
done

if [ ! -e "$config" ]; then
    install -d -m 0755 "$(dirname "$config")"
    umask 027
    cat >"$config" <<TOML
# audit-shell: settings and inventory (see README, "The bastion login shell").
# Readable by the bastion account's group only: it may hold passwords.
[shell]
intents_dir = "$intents_dir"
recordings_dir = "$recordings_dir"
# backend = "paramiko"     # record with audit-shell's own client, no strace
# recording_mode = "strict"
# idle_timeout_s = 900
# max_session_s = 28800
# warn_before_s = 60
# tag_style = "patched"   # with ssh = "/usr/local/lib/bastion-audit/ssh"

# [[host]]
# name = "db1"
# address = "10.0.0.5"
# port = 22
# group = "databases"
#   [[host.account]]
#   name = "postgres"
#   key_file = "/etc/bastion-audit/keys/db1-postgres"
#
# [[grant]]
# users = ["$user"]
# hosts = ["@databases"]
# accounts = ["*"]
TOML
    chown "root:$group" "$config"
    chmod 0640 "$config"
    echo "$PROG: wrote an example $config (no hosts yet)"
fi

backup=
if [ -e "$dropin" ]; then
    backup=$(mktemp "$dropin.old.XXXXXX")
    cp -p "$dropin" "$backup"
fi
tmp=$(mktemp "$dropin.new.XXXXXX")
block >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$dropin"
if ! check_sshd; then
    if [ -n "$backup" ]; then mv -f "$backup" "$dropin"; else rm -f "$dropin"; fi
    die "sshd rejects the new $dropin; put the old state back"
fi
[ -z "$backup" ] || rm -f "$backup"
echo "$PROG: wrote $dropin (checked with sshd -t); reload sshd to apply: systemctl reload ssh"
