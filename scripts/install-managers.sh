#!/usr/bin/env bash
# Installs the real workload managers that the workload tests start
# (app-agent/tests/managers.rs, through scripts/managers.sh), only what is
# missing: podman with runc (crun refuses hybrid cgroups), dockerd
# (docker.io, which brings containerd), a one-node Slurm (slurmctld, slurmd,
# the client commands) with munge, and libvirt with QEMU; busybox-static for
# the containers' root filesystem (no image registry is needed).
# Idempotent; needs root (or sudo) on Debian/Ubuntu. Services are not
# started by the install (policy-rc.d): the tests start their own.
set -euo pipefail

# package:binary pairs; a package is installed only when its binary is missing.
wanted=(
    podman:podman runc:runc catatonit:catatonit busybox-static:busybox
    docker.io:dockerd
    slurmctld:slurmctld slurmd:slurmd slurm-client:sbatch munge:munged
    qemu-system-x86:qemu-system-x86_64 libvirt-daemon:libvirtd
    libvirt-daemon-driver-qemu:/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so
    libvirt-clients:virsh
)

have() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] ;;
    esac
}

packages=()
for pair in "${wanted[@]}"; do
    p="${pair%%:*}"
    if ! have "${pair#*:}" && [[ " ${packages[*]} " != *" $p "* ]]; then
        packages+=("$p")
    fi
done
if [ "${#packages[@]}" -eq 0 ]; then
    echo "install-managers: podman, dockerd, Slurm, munge and libvirt are already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-managers: run as root (or install sudo) to install: ${packages[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive

need_update=0
for p in "${packages[@]}"; do
    apt-cache show "$p" >/dev/null 2>&1 || need_update=1
done
if [ "$need_update" -eq 1 ]; then
    $SUDO apt-get update -q
fi

# Forbid invoke-rc.d from starting the packages' daemons during the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT

$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
echo "install-managers: installed ${packages[*]}"
