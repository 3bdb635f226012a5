# What the target sysroot holds (sourced by cross/lib.sh; the Dockerfiles in
# this folder make their sysroot with the same list, through cross/lib.sh).
# shellcheck disable=SC2034

# The Debian release the binaries are built against: Debian 12 and Raspberry
# Pi OS 12 (both "bookworm") run them (glibc 2.36, GStreamer 1.22).
CROSS_SUITE=bookworm

SYSROOT_PACKAGES=(
  # to link sargs and sargsctl
  libc6-dev
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  # to link the test suite (its in-process RTSP server)
  libgstrtspserver-1.0-dev
  # the GStreamer elements the agent and its tests use, run under qemu
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
)
