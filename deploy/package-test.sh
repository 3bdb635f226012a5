# shellcheck shell=bash
# Shared by deploy/test-package (the agent's package) and
# deploy/test-package-hq (the HQ service's package); sourced, not run.
#
# Sets SRC (the source tree), WORK (target/package-test, or
# SARGS_PACKAGE_TEST_DIR) and CHROOT ($WORK/root); the caller sets UNIT, the
# unit file's name, before using unit_value or check_trace. Everything
# mounted (MOUNTS) or started (PIDS, and MAIN_PID first) is undone on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=$PWD
WORK=${SARGS_PACKAGE_TEST_DIR:-$SRC/target/package-test}
CHROOT=$WORK/root
# shellcheck source=cross/lib.sh
. cross/lib.sh

step() { echo "== $*" >&2; }
fail() {
  echo "FAILED: $*" >&2
  exit 1
}
check() { # check COMMAND... (DESC=... names it)
  if "$@"; then echo "ok: ${DESC:-$*}" >&2; else fail "${DESC:-$*}"; fi
}
in_root() { chroot "$CHROOT" "$@"; }
free_port() {
  local p
  while :; do
    p=$((30000 + RANDOM % 20000))
    ss -Htln "sport = :$p" | grep -q . || {
      echo "$p"
      return
    }
  done
}
wait_port() { # wait_port PORT: until something listens on 127.0.0.1:PORT
  local i
  for i in $(seq 100); do
    ss -Htln "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  fail "nothing listens on 127.0.0.1:$1"
}

MOUNTS=()
PIDS=()
MAIN_PID=""
cleanup() {
  local p i
  # The service first: killing strace alone would leave it running, detached.
  if [ -n "$MAIN_PID" ]; then kill -KILL "$MAIN_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_root() {
  mount -t proc proc "$CHROOT/proc" && MOUNTS+=("$CHROOT/proc")
  mount --bind /dev "$CHROOT/dev" && MOUNTS+=("$CHROOT/dev")
  mount -t tmpfs -o mode=1777 tmpfs "$CHROOT/tmp" && MOUNTS+=("$CHROOT/tmp")
  mount -t tmpfs -o mode=755 tmpfs "$CHROOT/run" && MOUNTS+=("$CHROOT/run")
}
unmount_root() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[$i]}"; done
  MOUNTS=()
}

# make_root: a fresh Debian root in $CHROOT (mmdebstrap, minbase), its log in
# $WORK/mmdebstrap.log. init-system-helpers: what enables a unit
# (deb-systemd-helper), present wherever systemd is. The package lists are
# kept for the installs that follow.
make_root() {
  step "fresh Debian $CROSS_SUITE root (mmdebstrap, minbase)"
  rm -rf "$CHROOT"
  mkdir -p "$WORK"
  mmdebstrap --quiet --mode=root --variant=minbase --include=init-system-helpers \
    --skip=cleanup/apt/lists "$CROSS_SUITE" "$CHROOT" "$(apt_sources)" >"$WORK/mmdebstrap.log" 2>&1 ||
    {
      tail -30 "$WORK/mmdebstrap.log" >&2
      fail "making a fresh root (see $WORK/mmdebstrap.log)"
    }
}

# start_mosquitto DIR: a Mosquitto on 127.0.0.1 (a free port, MQTT_PORT),
# its configuration and log in DIR.
start_mosquitto() {
  MQTT_PORT=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n' "$MQTT_PORT" >"$1/mosquitto.conf"
  /usr/sbin/mosquitto -c "$1/mosquitto.conf" >"$1/mosquitto.log" 2>&1 &
  PIDS+=($!)
  wait_port "$MQTT_PORT"
}

# A listing of every file under DIR: path, mode, owner, size, SHA-256.
tree_digest() {
  (cd "$1" && find . -type f -printf '%p %m %u:%g %s ' -exec sha256sum {} \; | awk '{print $1, $2, $3, $4, $5}' | sort)
}
# Owner, group (by the root's own user database) and mode of a path in the root.
stat_of() { in_root stat -c '%U:%G %a' "${1#"$CHROOT"}"; }
# unit_value KEY: the last KEY= of the installed unit $UNIT.
unit_value() { sed -n "s/^$1=//p" "$CHROOT/usr/lib/systemd/system/$UNIT" | tail -1; }

# check_trace TRACE_PREFIX WHO: the system calls, socket families and memory
# mappings in the strace -ff files TRACE_PREFIX.* against the installed unit
# $UNIT's SystemCallFilter=, RestrictAddressFamilies= and
# MemoryDenyWriteExecute=.
check_trace() {
  local prefix=$1 who=$2 line deny item names n f used families allowed_families wx
  local -a bad
  local -A allowed=()
  # The allow list as systemd builds it from the unit's SystemCallFilter=
  # lines, in order: a plain line adds, a ~ line removes.
  while IFS= read -r line; do
    deny=0
    [ "${line:0:1}" = "~" ] && deny=1 && line=${line:1}
    for item in $line; do
      if [ "${item:0:1}" = @ ]; then names=$(expand_syscall_group "$item"); else names=$item; fi
      for n in $names; do
        if [ "$deny" = 1 ]; then unset "allowed[$n]"; else allowed[$n]=1; fi
      done
    done
  done < <(sed -n 's/^SystemCallFilter=//p' "$CHROOT/usr/lib/systemd/system/$UNIT")
  # The traced processes: chroot, setpriv, env and sh become the service by
  # exec; count only what runs after the last execve of each file.
  used=$(for f in "$prefix".*; do
    awk '/^execve\(/ { n = 0; delete s } { if (match($0, /^[a-z0-9_]+\(/)) s[substr($0, 1, RLENGTH - 1)] = 1 }
         END { for (k in s) print k }' "$f"
  done | sort -u)
  bad=()
  for n in $used; do [ -n "${allowed[$n]:-}" ] || bad+=("$n"); done
  DESC="all $(echo "$used" | wc -w) system calls $who made are allowed by SystemCallFilter= (not allowed: ${bad[*]:-none})" \
    check test ${#bad[@]} -eq 0
  families=$(cat "$prefix".* | sed -n 's/^socket(\(AF_[A-Z0-9]*\).*/\1/p' | sort -u | xargs)
  allowed_families=" $(unit_value RestrictAddressFamilies) "
  bad=()
  for f in $families; do [[ "$allowed_families" == *" $f "* ]] || bad+=("$f"); done
  DESC="socket families used ($families) are allowed by RestrictAddressFamilies=" check test ${#bad[@]} -eq 0
  wx=$(cat "$prefix".* | grep -E '^(mmap|mprotect|pkey_mprotect)\(.*PROT_(WRITE\|PROT_EXEC|EXEC\|PROT_WRITE)|^(mprotect|pkey_mprotect)\(.*PROT_EXEC' | head -3 || true)
  if [ "$(unit_value MemoryDenyWriteExecute)" = yes ]; then
    DESC="no writable and executable memory (MemoryDenyWriteExecute=): ${wx:-none}" check test -z "$wx"
  fi
}
# expand_syscall_group @GROUP: its system calls, nested groups expanded too.
expand_syscall_group() {
  local item
  for item in $(systemd-analyze syscall-filter "$1" | awk '/^ +[a-z0-9_@]/ {print $1}'); do
    if [ "${item:0:1}" = @ ]; then expand_syscall_group "$item"; else echo "$item"; fi
  done
}
