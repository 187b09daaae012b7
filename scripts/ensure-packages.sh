#!/bin/sh
# Install the Debian packages named as arguments that are not installed yet.
# `apt-get update` runs only when something is missing, at most once.
set -eu
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
echo "ensure-packages: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
