#!/bin/bash
# Build the ssh client of Debian's openssh source with
# patches/openssh-session-tag.patch (-Z TAG) and install it as
# /usr/local/lib/bastion-audit/ssh. The system's /usr/bin/ssh is never touched.
#
#   scripts/build-patched-ssh.sh        as root; `make patched-ssh` runs it
#
# What it changes on the machine, each only when missing:
#   - /etc/apt/sources.list.d/bastion-audit-deb-src.sources (or .list): deb-src
#     entries copied from the Debian deb entries, then `apt-get update`;
#     delete the file to undo;
#   - the build packages below, through scripts/ensure-packages.sh;
#   - CACHE_DIR (sources, logs, builds) and DEST.
# A build is cached under a key made of the patch, the source version and the
# build recipe, so running again with the same three only reports the
# installed binary, from any checkout. The source version is the installed
# openssh-client's when apt has its source, else the newest apt has
# (OPENSSH_SOURCE_VERSION overrides).
#
# Environment: BASTION_SSH_PATCH, BASTION_SSH_CACHE, BASTION_SSH_DEST,
# OPENSSH_SOURCE_VERSION. Exit status 0, or 1 with one line
# `build-patched-ssh: error: ...` naming the step and its log.
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

PROG=build-patched-ssh
REPO=$(cd "$(dirname "$0")/.." && pwd)
PATCH_FILE=${BASTION_SSH_PATCH:-$REPO/patches/openssh-session-tag.patch}
CACHE_DIR=${BASTION_SSH_CACHE:-/var/cache/bastion-audit/openssh-build}
DEST=${BASTION_SSH_DEST:-/usr/local/lib/bastion-audit/ssh}
SRC_LIST=/etc/apt/sources.list.d/bastion-audit-deb-src
LOCK_WAIT_S=1800

# What the ssh client needs: libkrb5-dev because Debian's /etc/ssh/ssh_config
# sets GSSAPIAuthentication (a client without GSSAPI warns on every run),
# libfido2-dev for the built-in security key provider Debian's ssh has,
# autoconf because Debian's patches change configure.ac (see below).
# `apt-get build-dep openssh` would install about 107 packages and upgrade 38
# (gtk for ssh-askpass, PAM, systemd, audit, ...), all for sshd and friends.
BUILD_PACKAGES=(build-essential dpkg-dev pkgconf autoconf libssl-dev zlib1g-dev
    libkrb5-dev libfido2-dev)

# Debian's debian/rules flags that matter to the client; the sshd-only ones
# (PAM, SELinux, audit, systemd, tcp-wrappers, libedit, privsep) are left out.
# libexecdir finds the system's ssh-sk-helper and ssh-keysign; sysconfdir
# reads the system's ssh_config; the default PATH is what KnownHostsCommand
# runs with (misc.c subprocess()).
CONFIGURE_FLAGS=(--prefix=/usr --sysconfdir=/etc/ssh
    --libexecdir=/usr/lib/openssh --disable-strip --with-4in6
    --with-kerberos5=/usr --with-ssl-engine --with-security-key-builtin
    --with-xauth=/usr/bin/xauth
    --with-default-path=/usr/local/bin:/usr/bin:/bin:/usr/games
    --with-superuser-path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    ac_cv_func_mkdtemp=no)
ASKPASS_PROGRAM=/usr/bin/ssh-askpass
# Part of the cache key: raise the leading number when the build changes in a
# way these flags do not show.
RECIPE="1 ${CONFIGURE_FLAGS[*]} $ASKPASS_PROGRAM $(dpkg --print-architecture)"

say() { echo "$PROG: $*" >&2; }
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

trap 'echo "$PROG: error: line $LINENO: a command failed (status $?)" >&2' ERR
[ "$(id -u)" -eq 0 ] || die "must run as root: it installs packages and $DEST"
[ -r "$PATCH_FILE" ] || die "no patch at $PATCH_FILE"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
if ! flock -n 9; then
    say "waiting for another build (lock $CACHE_DIR/.lock)"
    flock -w "$LOCK_WAIT_S" 9 || die "another build held $CACHE_DIR/.lock for ${LOCK_WAIT_S}s"
fi

# Writes to stdout the deb-src twins of the Debian deb entries, or nothing.
deb_src_entries() {
    local deb822=/etc/apt/sources.list.d/debian.sources
    if [ -r "$deb822" ]; then
        awk 'BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; body = ""
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^#/) continue
                if ($i ~ /^Types:/) { types = $i; continue }
                body = body $i "\n"
            }
            if (types ~ /[: \t]deb([ \t]|$)/ && types !~ /deb-src/)
                printf "%sTypes: deb-src\n%s", (n++ ? "\n" : ""), body
        }' "$deb822"
    elif [ -r /etc/apt/sources.list ]; then
        sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list
    fi
}

# Debian 12 ships with binary package entries only: add their source twins,
# unless some deb-src entries exist already (then their lists may be stale).
ensure_deb_src() {
    [ -z "$(source_versions)" ] || return 0
    if [ -z "$(apt-get indextargets 'Created-By: Sources')" ]; then
        local file entries
        if [ -r /etc/apt/sources.list.d/debian.sources ]; then
            file=$SRC_LIST.sources
        else
            file=$SRC_LIST.list
        fi
        entries=$(deb_src_entries)
        [ -n "$entries" ] || die "no Debian deb entries in /etc/apt to copy as deb-src"
        printf '%s\n%s\n\n%s\n' \
            "# Added by bastion-audit scripts/build-patched-ssh.sh: Debian source" \
            "# packages, to build the patched ssh. Delete this file to undo." \
            "$entries" >"$file"
        say "enabled Debian source packages: wrote $file"
    fi
    apt_update
}

apt_update() {
    apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null ||
        die "apt-get update failed"
}

source_versions() {
    apt-cache showsrc --only-source openssh 2>/dev/null | sed -n 's/^Version: //p'
}

# The installed client's version if apt has its source, else the newest.
pick_version() {
    local installed versions v best=
    installed=$(dpkg-query -W -f='${Version}' openssh-client 2>/dev/null || true)
    versions=$(source_versions)
    [ -n "$versions" ] || die "apt knows no source package openssh (deb-src entries?)"
    for v in $versions; do
        [ "$v" = "$installed" ] && { echo "$v"; return; }
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
    done
    echo "$best"
}

# Installs the cached binary as DEST unless DEST already is that binary.
install_binary() {
    local built=$1 note=$2 verb="up to date"
    if ! cmp -s "$built" "$DEST"; then
        mkdir -p "$(dirname "$DEST")"
        # A new inode: an ssh running from DEST keeps its old file.
        install -m 0755 "$built" "$DEST.new.$$"
        mv -f "$DEST.new.$$" "$DEST"
        verb=installed
    fi
    say "$verb: $DEST: $("$DEST" -V 2>&1) ($note)"
}

ensure_deb_src
version=${OPENSSH_SOURCE_VERSION:-}
[ -n "$version" ] || version=$(pick_version)
key=$({ sha256sum <"$PATCH_FILE"; echo "$version"; echo "$RECIPE"; } | sha256sum | cut -c1-16)
build_dir=$CACHE_DIR/build-$key
if [ -x "$build_dir/ssh" ]; then
    install_binary "$build_dir/ssh" "cached build $key of openssh $version"
    exit 0
fi

started=$SECONDS
"$REPO/scripts/ensure-packages.sh" "${BUILD_PACKAGES[@]}" ||
    die "could not install the build packages: ${BUILD_PACKAGES[*]}"

# The source, once per version. apt drops root for downloads, to user _apt.
upstream=${version#*:}
download=$CACHE_DIR/source/$upstream
dsc=$download/openssh_$upstream.dsc
if [ ! -r "$dsc" ]; then
    rm -rf "$download.partial"
    mkdir -p "$download.partial"
    chown _apt "$download.partial" 2>/dev/null || true
    (cd "$download.partial" &&
        apt-get source -qq --download-only "openssh=$version" >/dev/null) ||
        die "could not download the source of openssh $version"
    chown -R root: "$download.partial"
    rm -rf "$download"
    mv "$download.partial" "$download"
fi

# Failed builds keep their unpacked tree for a look; the next build clears
# them. Finished ones are small (binary, log, BUILD-INFO) and stay.
for old in "$CACHE_DIR"/build-*; do
    [ -e "$old/ssh" ] || rm -rf "$old"
done
mkdir -p "$build_dir"
log=$build_dir/build.log
src=$build_dir/src
say "building openssh $version with $(basename "$PATCH_FILE") (log: $log)"
dpkg-source --no-copy -x "$dsc" "$src" >>"$log" 2>&1 ||
    die "dpkg-source could not unpack $dsc (log: $log)"
cd "$src"
# --fuzz=0: a hunk whose context moved must fail here, not land elsewhere.
if ! patch -p1 --forward --batch --fuzz=0 --dry-run <"$PATCH_FILE" >>"$log" 2>&1; then
    die "$PATCH_FILE does not apply to openssh $version; rebase it (log: $log)"
fi
patch -p1 --forward --batch --fuzz=0 <"$PATCH_FILE" >>"$log" 2>&1
# Debian's patches change configure.ac, and configure refuses to run when
# configure.ac is newer ("run autoreconf"). debian/rules runs dh_autoreconf;
# autoconf and autoheader are the part of it OpenSSH needs (no automake, and
# aclocal.m4 only includes m4/openssh.m4, which no Debian patch touches).
{ autoconf -f && autoheader -f; } >>"$log" 2>&1 ||
    die "autoconf failed (log: $log)"

# Debian's compiler flags and version string (debian/rules: hardening=+all,
# -DSSH_EXTRAVERSION="Debian-<revision>"), in the environment as well, as
# dh_auto_configure puts them.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
eval "$(dpkg-buildflags --export=sh)"
with_cflags="$CPPFLAGS $CFLAGS"
with_cflags+=" -DSSH_EXTRAVERSION=\\\"$(dpkg-vendor --query Vendor)-${version##*-}\\\""
with_ldflags="-Wl,--as-needed $LDFLAGS"
./configure "${CONFIGURE_FLAGS[@]}" --with-cflags="$with_cflags" \
    --with-ldflags="$with_ldflags" >>"$log" 2>&1 ||
    die "configure failed (log: $log, $src/config.log)"
make -j"$(nproc)" ssh ASKPASS_PROGRAM="$ASKPASS_PROGRAM" >>"$log" 2>&1 ||
    die "make ssh failed (log: $log)"
"$src/ssh" -V 2>&1 | grep -q '(bastion-audit -Z)' ||
    die "the built ssh does not report the patched build (log: $log)"

strip -o "$build_dir/ssh.tmp" "$src/ssh"
cat >"$build_dir/BUILD-INFO" <<EOF
openssh source: $version
patch: $PATCH_FILE ($(sha256sum <"$PATCH_FILE" | cut -d' ' -f1))
recipe: $RECIPE
built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - started)) s
EOF
cd /
rm -rf "$src" # about 40 MB once built; the binary, log and BUILD-INFO stay
mv "$build_dir/ssh.tmp" "$build_dir/ssh"
install_binary "$build_dir/ssh" "built openssh $version in $((SECONDS - started)) s"
