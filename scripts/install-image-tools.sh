#!/usr/bin/env bash
# Installs what scripts/build-image.sh and the image test
# (app-agent/tests/fleet_image.rs) need, only what is missing, from Debian's
# packages: mmdebstrap (the base root filesystem, from Debian packages),
# buildah (builds the image), podman with runc (loads and runs it; crun
# refuses hybrid cgroups), skopeo (reads the OCI archive's labels), binutils
# (strip), gcc and libc-bin (the test's stand-in NVML library, ldconfig), and
# Prometheus (the test's scraper; also installed by
# scripts/install-test-servers.sh). No image registry is used.
# Idempotent; needs root (or sudo) on Debian/Ubuntu. Services are not
# started by the install. The test gives podman a containers.conf of its own
# (runc, cgroupfs, lower rlimits: what `scripts/managers.sh podman-up` writes
# for machines without systemd).
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

apt_install_missing install-image-tools \
    mmdebstrap:mmdebstrap buildah:buildah podman:podman runc:runc \
    skopeo:skopeo binutils:strip gcc:cc libc-bin:ldconfig prometheus:prometheus
echo "install-image-tools: mmdebstrap, buildah, podman, runc, skopeo, strip, cc, ldconfig and prometheus are installed"
