#!/usr/bin/env bash
# Installs the real workload managers that the workload tests start
# (app-agent/tests/managers.rs, through scripts/managers.sh), only what is
# missing: podman with runc (crun refuses hybrid cgroups), dockerd
# (docker.io, which brings containerd), a one-node Slurm (slurmctld, slurmd,
# the client commands) with munge, and libvirt with QEMU; busybox-static for
# the containers' root filesystem (no image registry is needed).
# Idempotent; needs root (or sudo) on Debian/Ubuntu. Services are not
# started by the install: the tests start their own.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

apt_install_missing install-managers \
    podman:podman runc:runc catatonit:catatonit busybox-static:busybox \
    docker.io:dockerd containerd:containerd \
    slurmctld:slurmctld slurmd:slurmd slurm-client:sbatch munge:munged \
    qemu-system-x86:qemu-system-x86_64 libvirt-daemon:libvirtd \
    libvirt-daemon-driver-qemu:/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so \
    libvirt-clients:virsh
echo "install-managers: podman, dockerd, Slurm, munge and libvirt are installed"
