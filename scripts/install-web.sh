# audit-web's part of scripts/install.sh (make install WEB=1, make install-web):
# sourced by it, with its variables and helpers. The README's setup, done:
#
#   WEB_USER=bastion-web        audit-web's own account (group shadow, for PAM)
#   TERM_USER=bastion-term      the web terminal's account (shellinaboxd runs
#                               audit-shell --token-login as it)
#   WEB_STATE_DIR=/var/lib/bastion-audit-web   tokens, sessions, secret key
#   PAMDIR=/etc/pam.d           audit-web's PAM service, if there is none
#   INTENTS_DIR=/var/spool/bastion-audit/intents   where it writes for the agent
#
# Also: Django, pamela and waitress in the venv ([web]), an example shell.toml
# (if there is none), web_intents_user in agent.toml, the web terminal's
# one-word wrapper for shellinabox, and audit-web.service (as WEB_USER, never
# root). Under DESTDIR the accounts are not created: the lines
# that would create them are printed.

WEB_USER=${WEB_USER:-bastion-web}
TERM_USER=${TERM_USER:-bastion-term}
WEB_STATE_DIR=${WEB_STATE_DIR:-/var/lib/bastion-audit-web}
PAMDIR=${PAMDIR:-/etc/pam.d}
INTENTS_DIR=${INTENTS_DIR:-/var/spool/bastion-audit/intents}
WEB_UNIT=audit-web.service
case $WEB_STATE_DIR in /*) ;; *) die "WEB_STATE_DIR must be an absolute path" ;; esac
ours "$WEB_STATE_DIR" || die "$WEB_STATE_DIR: its last part must name bastion-audit"
PAM_TEXT='@include common-auth
@include common-account'

# agent.toml: the agent trusts audit-web's connection records and serves its
# control socket (web_intents_user), and shares the store with its group for
# the console (read_group).
web_agent_config() {
    sed -i -e "s|^#web_intents_user = \"\"\$|web_intents_user = \"$WEB_USER\"|" \
        -e "s|^#read_group = \"\"\$|read_group = \"$WEB_USER\"|" "$1"
}

web_accounts() {
    web_useradd="useradd --system --no-create-home --home-dir $WEB_STATE_DIR --shell /usr/sbin/nologin --groups shadow $WEB_USER"
    term_useradd="useradd --system --create-home --home-dir /var/lib/$TERM_USER --shell /usr/sbin/nologin $TERM_USER"
    if [ -n "$D" ]; then
        say "DESTDIR: no accounts made here; on the target: $web_useradd; $term_useradd"
        return
    fi
    if ! id -u "$WEB_USER" >/dev/null 2>&1; then
        $web_useradd
        say "account $WEB_USER (audit-web; group shadow, for PAM)"
    fi
    if ! id -u "$TERM_USER" >/dev/null 2>&1; then
        $term_useradd
        say "account $TERM_USER (the web terminal's)"
    fi
}

web_shell_config() {
    shell_config=$SYSCONFDIR/shell.toml
    if [ -e "$D$shell_config" ]; then
        # install-shell.sh makes it 0640 root:<the bastion account's group>:
        # the web's two accounts read it as members of that group.
        group=$(stat -c %G "$D$shell_config")
        if [ -z "$D" ] && [ "$(stat -c %a "$D$shell_config" | cut -c3)" = 0 ] &&
            [ "$group" != root ]; then
            usermod -a -G "$group" "$WEB_USER"
            usermod -a -G "$group" "$TERM_USER"
            say "kept $shell_config; $WEB_USER and $TERM_USER read it as members of $group"
        fi
        return
    fi
    sed -e "s#@INTENTS_DIR@#$INTENTS_DIR#g" -e "s#@WEB_STATE_DIR@#$WEB_STATE_DIR#g" \
        -e "s#@TERM_USER@#$TERM_USER#g" \
        -e "s#@REDEEM_SOCKET@#/run/bastion-audit-web/redeem.sock#g" \
        -e "s#@AGENT_CONFIG@#$SYSCONFDIR/agent.toml#g" \
        "$SRC/etc/shell.toml" >"$stage/shell.toml"
    install_config "$stage/shell.toml" "$shell_config" 0644
}

install_web() {
    web_accounts
    install -d -m 0700 "$D$WEB_STATE_DIR"
    [ -n "$D" ] || chown "$WEB_USER:" "$D$WEB_STATE_DIR"
    say "state directory $D$WEB_STATE_DIR ($WEB_USER only)"
    web_shell_config
    if [ ! -e "$D$PAMDIR/audit-web" ]; then
        new_dir 0755 "$D$PAMDIR"
        printf '%s\n' "$PAM_TEXT" >"$D$PAMDIR/audit-web"
        chmod 0644 "$D$PAMDIR/audit-web"
        say "PAM service $D$PAMDIR/audit-web (common-auth, common-account)"
    fi
    # shellinabox's init script splits its arguments on spaces: one word.
    new_dir 0755 "$D$LIBEXECDIR"
    printf '#!/bin/sh\nexec %s/bin/audit-shell --token-login --config %s\n' \
        "$PREFIX" "$SYSCONFDIR/shell.toml" >"$stage/web-terminal"
    install -m 0755 "$stage/web-terminal" "$D$LIBEXECDIR/web-terminal"
    sed -e "s#@PREFIX@#$PREFIX#g" -e "s#@SYSCONFDIR@#$SYSCONFDIR#g" \
        -e "s#@WEB_USER@#$WEB_USER#g" -e "s#@WEB_STATE_DIR@#$WEB_STATE_DIR#g" \
        -e "s#@INTENTS_DIR@#$INTENTS_DIR#g" \
        "$SRC/systemd/$WEB_UNIT.in" >"$stage/$WEB_UNIT"
    new_dir 0755 "$D$UNITDIR"
    install -m 0644 "$stage/$WEB_UNIT" "$D$UNITDIR/$WEB_UNIT"
    say "unit $D$UNITDIR/$WEB_UNIT (as $WEB_USER); the web terminal: shellinaboxd" \
        "--localhost-only --service=/:$TERM_USER:$TERM_USER:HOME:$LIBEXECDIR/web-terminal"
}

uninstall_web() {
    if systemd_running && [ -e "$UNITDIR/$WEB_UNIT" ]; then
        systemctl disable --now "$WEB_UNIT" || true
    fi
    [ -e "$D$UNITDIR/$WEB_UNIT" ] || [ -e "$D$LIBEXECDIR/web-terminal" ] || return 0
    rm -f "$D$UNITDIR/$WEB_UNIT" "$D$LIBEXECDIR/web-terminal"
    if [ "$(cat "$D$PAMDIR/audit-web" 2>/dev/null)" = "$PAM_TEXT" ]; then
        rm -f "$D$PAMDIR/audit-web"
    fi
    remove_config "$SYSCONFDIR/shell.toml"
    if [ -n "$PURGE" ]; then
        rm -rf "$D$WEB_STATE_DIR"
    else
        say "kept audit-web's state in $D$WEB_STATE_DIR (PURGE=1 removes it too)"
    fi
    say "kept the accounts $WEB_USER and $TERM_USER (userdel removes them)"
}
