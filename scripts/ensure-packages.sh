#!/bin/sh
# Install the Debian packages named as arguments that are not installed yet.
# `apt-get update` runs only when something is missing, at most once.
#
# This is the one place that runs apt, and no service it installs starts:
# the project needs programs (sshd, rsyslogd, shellinaboxd) that its tests
# and its own setup start as they need, not the services Debian's packages
# start by default (shellinabox: a /bin/login web terminal on every
# interface, port 4200; openssh-server: sshd on port 22). Debian's maintainer
# scripts ask policy-rc.d (invoke-rc.d, deb-systemd-invoke) before they start
# anything, and 101 means "not allowed"; one that is already there (Docker
# images have one) is left as it is. Of the packages installed now, those in
# NO_BOOT are also kept from starting at boot; a service left enabled at boot
# is named on one line.
set -eu
POLICY_RC_D=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
LOCK=${ENSURE_PACKAGES_LOCK:-/run/lock/bastion-audit-ensure-packages.lock}
NO_BOOT="shellinabox"

missing=
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $pkg"
done
[ -n "$missing" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-packages: error: missing Debian packages:$missing (run as root to install them)" >&2
    exit 1
fi

# One install at a time: the policy file is ours only while we hold the lock.
exec 9>"$LOCK"
flock 9
if [ ! -e "$POLICY_RC_D" ]; then
    trap 'rm -f "$POLICY_RC_D"' EXIT
    trap 'exit 130' INT TERM
    printf '#!/bin/sh\n# bastion-audit: scripts/ensure-packages.sh is installing packages: no service starts.\nexit 101\n' >"$POLICY_RC_D"
    chmod 0755 "$POLICY_RC_D"
fi

echo "ensure-packages: installing$missing (their services are not started)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null

for pkg in $missing; do
    for unit in $(dpkg-query -L "$pkg" 2>/dev/null |
        sed -n 's#^/\(usr/\)\{0,1\}lib/systemd/system/\([^/@]*\)\.service$#\2#p; s#^/etc/init\.d/\([^/]*\)$#\1#p' |
        sort -u); do
        case " $NO_BOOT " in
            *" $pkg "*)
                if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
                    systemctl disable --now "$unit" >/dev/null 2>&1 || true
                elif [ -x "/etc/init.d/$unit" ] && command -v update-rc.d >/dev/null; then
                    update-rc.d "$unit" disable >/dev/null 2>&1 || true
                fi
                echo "ensure-packages: $unit (from $pkg) is not started, and not at boot either"
                ;;
            *)
                echo "ensure-packages: $unit (from $pkg) is not started; it may start at boot (systemctl disable $unit)"
                ;;
        esac
    done
done
