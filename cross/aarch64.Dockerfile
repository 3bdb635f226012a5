# cross-rs image for aarch64-unknown-linux-gnu (Cargo.toml, [package.metadata.cross]):
#   cross build --release --locked --target aarch64-unknown-linux-gnu
#   cross test  --release --locked --target aarch64-unknown-linux-gnu
#
# Debian bookworm, the release the gateways run (Debian 12 / Raspberry Pi OS
# 12: glibc 2.36, GStreamer 1.22), rather than cross-rs's Ubuntu images,
# whose newer glibc the gateways would refuse. Inside is what cross/build
# sets up without Docker, made by the same cross/lib.sh from the same package
# list (cross/packages.sh): Debian's gcc cross compiler, a sysroot of Debian
# arm64 packages, per-target pkg-config and linker settings, and qemu-user
# (through cross/run) to run the tests.
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
# Host side: compilers for build scripts and for the target, mmdebstrap for
# the sysroot, qemu to run the target's tests, and the tools the tests use
# around the agent (the age CLI, ffprobe, Mosquitto).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      bash ca-certificates gcc libc6-dev pkg-config \
      gcc-aarch64-linux-gnu mmdebstrap qemu-user \
      age ffmpeg mosquitto \
 && rm -rf /var/lib/apt/lists/*

COPY cross/lib.sh cross/packages.sh cross/run /opt/sargs-cross/bin/
ENV SARGS_CROSS_CACHE=/opt/sargs-cross
# The sysroot (/opt/sargs-cross/sysroot-arm64) and the linker wrapper
# (/opt/sargs-cross/aarch64-linux-gnu-gcc-sysroot), as cross/build makes them.
RUN bash -c '. /opt/sargs-cross/bin/lib.sh \
      && cross_target aarch64 && make_sysroot && export_cargo_env \
      && chmod -R a+rX /opt/sargs-cross'

# What export_cargo_env exports, for every process of the container.
ENV PKG_CONFIG_ALLOW_CROSS=1 \
    PKG_CONFIG_SYSROOT_DIR_aarch64_unknown_linux_gnu=/opt/sargs-cross/sysroot-arm64 \
    PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu=/opt/sargs-cross/sysroot-arm64/usr/lib/aarch64-linux-gnu/pkgconfig:/opt/sargs-cross/sysroot-arm64/usr/share/pkgconfig \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    CFLAGS_aarch64_unknown_linux_gnu=--sysroot=/opt/sargs-cross/sysroot-arm64 \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=/opt/sargs-cross/aarch64-linux-gnu-gcc-sysroot \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="/opt/sargs-cross/bin/run aarch64" \
    SARGS_TEST_RUNNER="/opt/sargs-cross/bin/run aarch64"
