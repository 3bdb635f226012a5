# Shared by cross/build, cross/test and cross/run (sourced, not run).
#
# Cross-building sargs on a Debian 12 x86_64 host without Docker:
#   - Debian's gcc cross compiler links, and compiles the C of ring and SQLite;
#   - the target's libraries (glibc, GStreamer and its plugins) come from a
#     sysroot: Debian bookworm's own packages for that architecture, unpacked
#     by mmdebstrap into a folder (no Multi-Arch on the host, so the host's
#     GStreamer -dev packages stay untouched);
#   - pkg-config finds the target's .pc files through per-target variables,
#     so build scripts of host crates are not affected;
#   - target programs run under qemu-user with that sysroot as their root for
#     libraries (cross/run).
# docs/cross.md describes the route and what was learnt on the way.

set -euo pipefail

CROSS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$CROSS_DIR/.." && pwd)
# shellcheck source=cross/packages.sh
. "$CROSS_DIR/packages.sh"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# cross_target NAME — sets TRIPLE, DEB_ARCH, MULTIARCH, GCC_PREFIX, QEMU for
# NAME (aarch64 | armv7), or fails naming the choices.
cross_target() {
  CROSS_NAME=${1:-}
  case "$CROSS_NAME" in
  aarch64)
    TRIPLE=aarch64-unknown-linux-gnu
    DEB_ARCH=arm64
    MULTIARCH=aarch64-linux-gnu
    GCC_PREFIX=aarch64-linux-gnu
    QEMU=qemu-aarch64
    ;;
  armv7)
    TRIPLE=armv7-unknown-linux-gnueabihf
    DEB_ARCH=armhf
    MULTIARCH=arm-linux-gnueabihf
    GCC_PREFIX=arm-linux-gnueabihf
    QEMU=qemu-arm
    ;;
  *)
    die "target must be aarch64 or armv7 (got '${1:-}')"
    ;;
  esac
  TRIPLE_ENV=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')
  TRIPLE_LOWER=${TRIPLE//-/_}
  # Resolved to its real path: the sysroot's and the linker wrapper's paths
  # go into the environment cargo fingerprints (CFLAGS_*, PKG_CONFIG_*_*,
  # the target's linker), so with a `target` link to a shared cache a new
  # checkout elsewhere reuses every compiled dependency instead of
  # rebuilding them all because its own path differs.
  CROSS_CACHE=$(realpath -m "${SARGS_CROSS_CACHE:-${CARGO_TARGET_DIR:-$ROOT/target}/cross}")
  SYSROOT=$CROSS_CACHE/sysroot-$DEB_ARCH
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the host's missing Debian packages among "$@" (apt-get update
# first), through scripts/apt-install: one apt at a time, since CI runs
# stages beside each other.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing Debian packages: ${missing[*]}" >&2
  as_root "$ROOT/scripts/apt-install" "${missing[@]}"
}

# What the host needs to build for the target and to run its programs.
host_deps() {
  local pkgs=(gcc-"$GCC_PREFIX" mmdebstrap pkg-config qemu-user)
  apt_install "${pkgs[@]}"
  if ! rustup target list --installed | grep -qx "$TRIPLE"; then
    echo "== rustup target add $TRIPLE" >&2
    rustup target add "$TRIPLE" >&2
  fi
}

# The apt sources the sysroot is made from: the host's own Debian sources, so
# the sysroot's packages are the same release (and mirror) as the host's.
apt_sources() {
  if [ -n "${SARGS_CROSS_SOURCES:-}" ]; then
    echo "$SARGS_CROSS_SOURCES"
  elif [ -s /etc/apt/sources.list.d/debian.sources ]; then
    echo /etc/apt/sources.list.d/debian.sources
  elif [ -s /etc/apt/sources.list ]; then
    echo /etc/apt/sources.list
  else
    echo "deb http://deb.debian.org/debian $CROSS_SUITE main"
  fi
}

# Makes (once) the target sysroot: Debian's packages of SYSROOT_PACKAGES for
# DEB_ARCH, unpacked (--variant=extract: no maintainer script runs, so no
# emulation is needed). A stamp records what it was made from; a change of
# the package list or of the sources makes it again.
make_sysroot() {
  local sources stamp want
  sources=$(apt_sources)
  want="layout=2 suite=$CROSS_SUITE arch=$DEB_ARCH packages=${SYSROOT_PACKAGES[*]} sources=$(if [ -f "$sources" ]; then sha256sum <"$sources" | cut -c1-16; else echo "$sources"; fi)"
  stamp=$SYSROOT/.sargs-sysroot
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "== making the $DEB_ARCH sysroot in $SYSROOT (Debian $CROSS_SUITE packages, mmdebstrap)" >&2
  rm -rf "$SYSROOT" "$SYSROOT.new"
  mkdir -p "$CROSS_CACHE"
  local include
  include=$(
    IFS=,
    echo "${SYSROOT_PACKAGES[*]}"
  )
  # chrootless: extracting needs no chroot, so this also works unprivileged
  # in a container build (cross/*.Dockerfile runs this same function).
  local log=$CROSS_CACHE/mmdebstrap-$DEB_ARCH.log
  if ! as_root mmdebstrap --mode=chrootless --variant=extract --arch="$DEB_ARCH" \
    --include="$include" "$CROSS_SUITE" "$SYSROOT.new" "$sources" >"$log" 2>&1; then
    # A mirror caught mid-sync serves an index of the wrong size for one
    # architecture (seen for armhf in the security suite). The sysroot is
    # only linked against, and a binary built on the release's own
    # libraries runs on their updated versions, so try once more from the
    # release and its updates alone before giving up.
    if grep -q "Mirror sync in progress" "$log"; then
      echo "== the mirror is mid-sync for $DEB_ARCH; the sysroot from $CROSS_SUITE and $CROSS_SUITE-updates alone" >&2
      rm -rf "$SYSROOT.new"
      as_root mmdebstrap --mode=chrootless --variant=extract --arch="$DEB_ARCH" \
        --include="$include" "$CROSS_SUITE" "$SYSROOT.new" \
        "deb http://deb.debian.org/debian $CROSS_SUITE main" \
        "deb http://deb.debian.org/debian $CROSS_SUITE-updates main" >>"$log" 2>&1 || {
        grep -E "^(E|W):" "$log" | tail -20 >&2
        die "mmdebstrap failed; see $log"
      }
    else
      grep -E "^(E|W):" "$log" | tail -20 >&2
      die "mmdebstrap failed; see $log"
    fi
  fi
  relativise_links "$SYSROOT.new"
  alternatives_links "$SYSROOT.new"
  echo "$want" >"$SYSROOT.new/.sargs-sysroot"
  mv "$SYSROOT.new" "$SYSROOT"
}

# Debian's -dev symlinks are often absolute (libz.so -> /lib/.../libz.so.1):
# inside a sysroot they would point at the host. Rewrite each as relative.
relativise_links() {
  local dir=$1 link target
  while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$dir$target")" "$link"
  done < <(find "$dir/usr/lib" "$dir/lib" -type l -lname '/*' -print0 2>/dev/null)
}

# No maintainer script runs in an extracted root, so the links that
# update-alternatives would make are missing; libav needs BLAS and LAPACK's
# (libblas.so.3 -> blas/libblas.so.3, as libblas3's postinst sets it up).
alternatives_links() {
  local lib=$1/usr/lib/$MULTIARCH so alt
  for alt in blas lapack; do
    for so in "$lib/$alt"/lib*.so.[0-9]; do
      [ -e "$so" ] || continue
      [ -e "$lib/${so##*/}" ] || ln -s "$alt/${so##*/}" "$lib/${so##*/}"
    done
  done
}

# Exports what cargo needs to build for TRIPLE against SYSROOT. Every
# variable is specific to the target (suffixed with its triple), so host
# builds, build scripts and the host's tools are not affected.
export_cargo_env() {
  # The linker cargo calls: the cross gcc pointed at the sysroot (a wrapper
  # rather than RUSTFLAGS, which a user's own RUSTFLAGS would replace).
  LINKER=$CROSS_CACHE/$GCC_PREFIX-gcc-sysroot
  printf '#!/bin/sh\nexec %s-gcc --sysroot='\''%s'\'' "$@"\n' "$GCC_PREFIX" "$SYSROOT" >"$LINKER.new"
  chmod 755 "$LINKER.new"
  mv "$LINKER.new" "$LINKER"
  export PKG_CONFIG_ALLOW_CROSS=1
  export "PKG_CONFIG_SYSROOT_DIR_$TRIPLE_LOWER=$SYSROOT"
  export "PKG_CONFIG_LIBDIR_$TRIPLE_LOWER=$SYSROOT/usr/lib/$MULTIARCH/pkgconfig:$SYSROOT/usr/share/pkgconfig"
  export "CC_$TRIPLE_LOWER=$GCC_PREFIX-gcc"
  export "AR_$TRIPLE_LOWER=$GCC_PREFIX-ar"
  export "CFLAGS_$TRIPLE_LOWER=--sysroot=$SYSROOT"
  export "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$LINKER"
  export "CARGO_TARGET_${TRIPLE_ENV}_RUNNER=$CROSS_DIR/run ${CROSS_NAME}"
}

# cross_setup NAME — everything above, in order.
cross_setup() {
  cross_target "$1"
  host_deps
  make_sysroot
  export_cargo_env
}
