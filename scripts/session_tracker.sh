#!/bin/bash
# Attach strace to one tagged ssh client and write its session log.
#
#   session_tracker.sh [--data-dir DIR] --pid PID TAG   root, by hand
#   session_tracker.sh [--data-dir DIR] --pid PID FACTS [--record-only] TAG
#                                   the agent (FACTS below); --record-only:
#                                   only the log's start line
#   sudo session_tracker.sh TAG                         a user, for their own ssh
#
# This is the one place that holds the strace command line and the lifecycle
# lines of a log (DATA_DIR/logs/TAG.strace, root only). Under sudo it waits up
# to WAIT_S for a tagged ssh owned by the invoking user (SUDO_UID), attaches
# only to that, and always writes under the default data directory.
#
# FACTS, what the agent has read from /proc already (none allowed under sudo):
#   --start-ticks T --started-at EPOCH --uid N --user NAME --tty PATH
#   --size ROWSxCOLS --ssh-version V --argv-b64 B64
# With them the script forks nothing before it execs strace (a burst of new
# sessions costs a bash start each); it only checks that PID is still the
# process started at T. An ssh that something ptraces already makes strace
# fail (exit 1): the agent looks at who holds it.
#
# Exit codes: 0 the session ended (or the agent already audits it), 1 strace
# could not attach, 2 usage, 3 no such tagged ssh or no terminal, 4 already
# traced, 5 cannot write the log, 6 strace is not installed. From 3 on, the
# log and its start line exist whenever the ssh itself does.
set -euo pipefail
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 077

readonly PROG=session_tracker.sh
readonly TAG_RE='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
readonly TTY_RE='^/dev/(pts/[0-9]+|tty[A-Za-z0-9]+)$'
readonly DEFAULT_DATA_DIR=/var/lib/bastion-audit
readonly WAIT_S=10
readonly ARGV_MAX_BYTES=32768      # as tracer/procfs.py reads argv
readonly VERSION_READ_MAX_BYTES=8388608  # as tracer/discovery.py reads the binary

die() {
    echo "$PROG: error: $2" >&2
    exit "$1"
}

usage() {
    echo "usage: $PROG [--data-dir DIR] --pid PID [--record-only] TAG | sudo $PROG TAG" >&2
    exit 2
}

data_dir=
pid=
record_only=
facts=
start_ticks= started_at= uid= user= tty= size= ssh_version= argv_b64=
while [ $# -gt 0 ]; do
    case $1 in
        --data-dir) [ $# -ge 2 ] || usage; data_dir=$2; shift 2 ;;
        --pid) [ $# -ge 2 ] || usage; pid=$2; shift 2 ;;
        --record-only) record_only=1; shift ;;
        --start-ticks) [ $# -ge 2 ] || usage; start_ticks=$2; facts=1; shift 2 ;;
        --started-at) [ $# -ge 2 ] || usage; started_at=$2; facts=1; shift 2 ;;
        --uid) [ $# -ge 2 ] || usage; uid=$2; facts=1; shift 2 ;;
        --user) [ $# -ge 2 ] || usage; user=$2; facts=1; shift 2 ;;
        --tty) [ $# -ge 2 ] || usage; tty=$2; facts=1; shift 2 ;;
        --size) [ $# -ge 2 ] || usage; size=$2; facts=1; shift 2 ;;
        --ssh-version) [ $# -ge 2 ] || usage; ssh_version=$2; facts=1; shift 2 ;;
        --argv-b64) [ $# -ge 2 ] || usage; argv_b64=$2; facts=1; shift 2 ;;
        -h | --help) usage ;;
        --) shift; break ;;
        -*) die 2 "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || usage
tag=$1
[[ $tag =~ $TAG_RE ]] || die 2 "invalid tag (it must match $TAG_RE)"
[[ -z $pid || $pid =~ ^[1-9][0-9]{0,9}$ ]] || die 2 "invalid pid"

owner=
tracer=agent
if [ -n "${SUDO_UID:-}" ]; then
    # A user may only have their own ssh traced, into the real audit log.
    [ -z "$data_dir" ] || die 2 "--data-dir is not allowed under sudo"
    [ -z "$record_only" ] || die 2 "--record-only is not allowed under sudo"
    [ -z "$facts" ] || die 2 "facts are not allowed under sudo"
    [[ $SUDO_UID =~ ^[0-9]+$ ]] || die 2 "invalid SUDO_UID"
    owner=$SUDO_UID
    tracer=sudo
fi
data_dir=${data_dir:-$DEFAULT_DATA_DIR}
[ "$EUID" -eq 0 ] || die 2 "must run as root: strace attaches to other users' processes"
if [ -n "$facts" ]; then
    [ -n "$pid" ] || die 2 "facts need --pid"
    [[ $start_ticks =~ ^[0-9]+$ && $started_at =~ ^[0-9]+\.[0-9]+$ ]] || die 2 "invalid start time"
    [[ $uid =~ ^[0-9]+$ ]] || die 2 "invalid uid"
    [[ -z $user || $user =~ ^[A-Za-z0-9._][A-Za-z0-9._-]*$ ]] || die 2 "invalid user"
    [[ -z $tty || $tty =~ $TTY_RE ]] || die 2 "invalid tty"
    [[ $size =~ ^([0-9]{1,5})x([0-9]{1,5})$ ]] || die 2 "invalid size"
    rows=${BASH_REMATCH[1]} cols=${BASH_REMATCH[2]}
    [[ -z $ssh_version || $ssh_version =~ ^OpenSSH_[0-9.p]+$ ]] || die 2 "invalid ssh version"
    [[ $argv_b64 =~ ^[A-Za-z0-9+/]*={0,2}$ ]] && ((${#argv_b64} <= ARGV_MAX_BYTES * 4 / 3 + 4)) ||
        die 2 "invalid argv"
fi

# True when argv (NUL-separated in /proc) carries our tag in one of ssh's
# spellings. The agent parses argv fully; this only has to keep a user to
# their own tagged ssh.
carries_tag() {
    local -a argv
    local i arg next
    mapfile -d '' argv <"/proc/$1/cmdline" 2>/dev/null || return 1
    for ((i = 1; i < ${#argv[@]}; i++)); do
        arg=${argv[i]}
        next=${argv[i + 1]:-}
        case $arg in
            -Z | -P) [ "$next" = "$tag" ] && return 0 ;;
            "-Z$tag" | "-P$tag") return 0 ;;
        esac
        case " $arg " in
            *[=\ \"]AUDIT_SESSION="$tag"[\ \"]* | *[Tt]ag[=\ ]"$tag"\ *) return 0 ;;
        esac
    done
    return 1
}

is_ssh() {
    local exe
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    [ "${exe##*/}" = ssh ]
}

owned() {
    [ -z "$owner" ] || [ "$(stat -c %u "/proc/$1" 2>/dev/null)" = "$owner" ]
}

if [ -n "$facts" ]; then
    # The agent read the rest; PID must still be the process it read.
    read -r stat_line <"/proc/$pid/stat" || die 3 "process $pid is gone"
    read -ra stat_fields <<<"${stat_line##*) }"
    [ "${stat_fields[19]:-}" = "$start_ticks" ] || die 3 "process $pid is gone"
else
    if [ -z "$pid" ]; then
        [ -n "$owner" ] || die 2 "--pid is required outside sudo"
        deadline=$((SECONDS + WAIT_S))
        while [ -z "$pid" ] && ((SECONDS < deadline)); do
            # Only the caller's processes: one find, then a look at each.
            while read -r dir; do
                p=${dir#/proc/}
                if is_ssh "$p" && carries_tag "$p"; then
                    pid=$p
                    break
                fi
            done < <(find /proc -mindepth 1 -maxdepth 1 -regex '/proc/[0-9]+' -uid "$owner" 2>/dev/null)
            [ -n "$pid" ] || sleep 0.1
        done
        [ -n "$pid" ] || die 3 "no ssh tagged $tag of uid $owner appeared within ${WAIT_S}s"
    fi
    owned "$pid" || die 3 "process $pid is not yours"
    is_ssh "$pid" || die 3 "process $pid is not an ssh client"
    if [ -n "$owner" ]; then
        carries_tag "$pid" || die 3 "ssh $pid does not carry the tag $tag"
    fi

    # From /proc/PID/status: the owner, and whether something ptraces it already.
    # One read of the whole file: the kernel rebuilds it on every read(), and a
    # traced process flips its State line between reads, so reading it line by
    # line can shift the lines under us.
    status=$(<"/proc/$pid/status") || die 3 "process $pid is gone"
    uid=
    tracer_pid=0
    while read -r key value _; do
        case $key in
            Uid:) uid=$value ;;
            TracerPid:) tracer_pid=$value ;;
        esac
    done <<<"$status"
    [[ $uid =~ ^[0-9]+$ ]] || die 3 "cannot read the owner of process $pid"

    # The terminal is what ssh's stdin or stdout point to; strace -P keeps only
    # the syscalls on it, which leaves out the encrypted socket (as large as the
    # session's output) and /dev/tty, where ssh reads a password.
    tty=
    for fd in 0 1; do
        t=$(readlink "/proc/$pid/fd/$fd" 2>/dev/null || true)
        if [[ $t =~ $TTY_RE ]]; then tty=$t; break; fi
    done

    # Start time in clock ticks after boot: with the pid, it names this process
    # for good, so a re-attach can find the log of the same ssh.
    stat_line=$(<"/proc/$pid/stat")
    read -ra stat_fields <<<"${stat_line##*) }"
    start_ticks=${stat_fields[19]}
    btime=
    while read -r key value; do
        [ "$key" = btime ] && { btime=$value; break; }
    done </proc/stat
    started_at=$(awk -v b="$btime" -v t="$start_ticks" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", b + t / hz }')
    user=$(id -nu "$uid" 2>/dev/null || true)
    [[ $user =~ ^[A-Za-z0-9._][A-Za-z0-9._-]*$ ]] || user=
    argv_b64=$(head -c "$ARGV_MAX_BYTES" "/proc/$pid/cmdline" | base64 -w0)
    # Read from the binary, never run: argv means what this ssh version says.
    # Bounded: the "binary" is the user's to make (a sparse 2 GiB file would be
    # one huge line for grep).
    ssh_version=$(head -c "$VERSION_READ_MAX_BYTES" "/proc/$pid/exe" 2>/dev/null |
        grep -aom1 'OpenSSH_[0-9][0-9.]*p[0-9]*' | head -n 1 || true)
    [[ $ssh_version =~ ^OpenSSH_[0-9.p]+$ ]] || ssh_version=
fi

logs=$data_dir/logs
if [ -z "$facts" ] || [ ! -d "$logs" ]; then
    mkdir -p -m 0700 "$data_dir" "$logs" || die 5 "cannot create $logs"
    chmod 0700 "$logs"
fi
# -O: owned by root (our effective uid); a builtin, like every test below.
[ ! -L "$logs" ] && [ -O "$logs" ] || die 5 "$logs is not a root-owned directory"

# The log exists before anything can still go wrong, so that a session that
# cannot be traced is on record all the same (the agent appends its end).
identity="\"ssh_pid\":$pid,\"start_ticks\":$start_ticks,"
log=
set -C # a new log is made, never an existing one truncated
for name in "$tag" "$tag~$pid-$start_ticks"; do
    candidate=$logs/$name.strace
    if { : >"$candidate"; } 2>/dev/null; then
        log=$candidate
        printf '#bastion-audit {"event":"start","v":1,"time":%s,"tag":"%s",%s"started_at":%s,"uid":%s,"user":"%s","tty":"%s","ssh_version":"%s","argv_b64":"%s"}\n' \
            "$EPOCHREALTIME" "$tag" "$identity" "$started_at" "$uid" "$user" "$tty" "$ssh_version" "$argv_b64" >>"$log"
        break
    fi
    # The log of this very ssh (the agent restarted): keep appending to it.
    first=
    if [ -f "$candidate" ] && [ ! -L "$candidate" ] && [ -O "$candidate" ] &&
        read -r -n 65536 first <"$candidate" && [[ $first == *"$identity"* ]]; then
        log=$candidate
        break
    fi
done
set +C
[ -n "$log" ] || die 5 "cannot create a log for tag $tag in $logs"

if [ -z "$facts" ]; then
    # The terminal's size now: ssh asked for it (TIOCGWINSZ) when it started,
    # maybe before strace was there to see the answer.
    rows=0
    cols=0
    if [ -n "$tty" ] && size=$(stty -F "$tty" size 2>/dev/null); then
        read -r rows cols <<<"$size"
        [[ $rows =~ ^[0-9]+$ && $cols =~ ^[0-9]+$ ]] || { rows=0; cols=0; }
    fi
fi

# The agent refused this ssh before tracing it (a limit): it only wants the
# session on record; its verdict goes in as the log's end line.
[ -z "$record_only" ] || exit 0
[ -n "$tty" ] || die 3 "ssh $pid has no terminal on stdin or stdout"
hash strace 2>/dev/null || die 6 "strace is not installed"
strace_bin=${BASH_CMDS[strace]}
[ -f "$strace_bin" ] && [ -x "$strace_bin" ] || die 6 "strace is not installed"
if [ -z "$facts" ] && [ "$tracer_pid" != 0 ]; then
    [ "$tracer" = sudo ] && { echo "$PROG: ssh $pid is already audited" >&2; exit 0; }
    die 4 "ssh $pid is already traced by process $tracer_pid"
fi

printf '#bastion-audit {"event":"attach","time":%s,"tracer":"%s","tracer_pid":%s,"rows":%s,"cols":%s}\n' \
    "$EPOCHREALTIME" "$tracer" "$$" "$rows" "$cols" >>"$log"

# -ttt: epoch timestamps; -y: fd paths; -s 1 MiB: ssh writes up to 256 KiB to
# the terminal in one call (fully escaped, four characters a byte); -A: append
# after our lifecycle lines. An attached strace cannot use --seccomp-bpf, so
# every syscall of ssh stops; tracing only these three keeps the log small.
exec "$strace_bin" -q -ttt -y -s 1048576 -e trace=read,write,ioctl -P "$tty" -p "$pid" -A -o "$log"
