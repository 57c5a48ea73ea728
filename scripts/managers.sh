#!/usr/bin/env bash
# Starts and stops the real workload managers that the workload tests use,
# on a Debian machine without systemd as PID 1 (containers, CI VMs), as
# root. Installed by scripts/install-managers.sh.
#
#   bash scripts/managers.sh podman-up|podman-down|docker-up|docker-down|
#                            slurm-up|slurm-down|libvirt-up|libvirt-down
#
# Work files (sockets, logs, pid files, the busybox image) go to
# $ALUMET_MANAGERS_DIR (default /tmp/alumet-managers). Every `up` prints
# `ready: ...` lines a test can read; every `down` is safe to run twice.
set -euo pipefail
W=${ALUMET_MANAGERS_DIR:-/tmp/alumet-managers}
mkdir -p "$W"

wait_for() { # wait_for SECONDS COMMAND...: retries COMMAND every 0.2 s.
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "managers: timed out waiting for: $*" >&2
            return 1
        fi
        sleep 0.2
    done
}

# A root filesystem of one static busybox: images without a registry.
rootfs_tar() {
    [ -f "$W/rootfs.tar" ] && return
    rm -rf "$W/rootfs"
    mkdir -p "$W/rootfs/bin"
    cp "$(command -v busybox)" "$W/rootfs/bin/busybox"
    for applet in sh sleep cat yes true; do
        ln -sf busybox "$W/rootfs/bin/$applet"
    done
    tar -C "$W/rootfs" -cf "$W/rootfs.tar" .
}

podman_up() {
    rootfs_tar
    # runc: crun refuses hybrid cgroups. cgroupfs: no systemd to ask.
    # Lower rlimits: podman's defaults need CAP_SYS_RESOURCE, which
    # containers and some VMs do not grant.
    mkdir -p /etc/containers
    cat >/etc/containers/containers.conf <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    podman image exists localhost/alumet-busybox:1 ||
        podman import --change 'CMD ["/bin/sh"]' "$W/rootfs.tar" localhost/alumet-busybox:1 >/dev/null
    mkdir -p /run/podman
    podman system service --time=0 unix:///run/podman/podman.sock >"$W/podman-service.log" 2>&1 &
    echo $! >"$W/podman-service.pid"
    wait_for 20 curl -sf --unix-socket /run/podman/podman.sock http://d/_ping
    echo "ready: podman socket /run/podman/podman.sock image localhost/alumet-busybox:1"
}

podman_down() {
    podman pod rm -f -a >/dev/null 2>&1 || true
    podman rm -f -a -t 1 >/dev/null 2>&1 || true
    if [ -f "$W/podman-service.pid" ]; then
        kill "$(cat "$W/podman-service.pid")" 2>/dev/null || true
        rm -f "$W/podman-service.pid"
    fi
    rm -f /run/podman/podman.sock
}

docker_up() {
    rootfs_tar
    if ! curl -sf --unix-socket /var/run/docker.sock http://d/_ping >/dev/null 2>&1; then
        # dockerd starts its own containerd.
        dockerd --host unix:///var/run/docker.sock >"$W/dockerd.log" 2>&1 &
        echo $! >"$W/dockerd.pid"
        wait_for 30 curl -sf --unix-socket /var/run/docker.sock http://d/_ping
    fi
    docker image inspect alumet-busybox:1 >/dev/null 2>&1 ||
        docker import --change 'CMD ["/bin/sh"]' "$W/rootfs.tar" alumet-busybox:1 >/dev/null
    echo "ready: docker socket /var/run/docker.sock image alumet-busybox:1"
}

docker_down() {
    local ids
    ids=$(docker ps -aq 2>/dev/null || true)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
    if [ -f "$W/dockerd.pid" ]; then
        local pid
        pid=$(cat "$W/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        rm -f "$W/dockerd.pid"
    fi
}

slurm_up() {
    mkdir -p /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    chown munge:munge /run/munge
    chown -R slurm:slurm /var/lib/slurm /var/log/slurm 2>/dev/null || true
    [ -f /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || create-munge-key -f >/dev/null; }
    chown munge:munge /etc/munge/munge.key
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(($(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') - 1000))
    mkdir -p /etc/slurm
    cat >/etc/slurm/slurm.conf <<EOF
ClusterName=alumet
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # cgroup/v1: the v2 tree here holds no controller.
    cat >/etc/slurm/cgroup.conf <<'EOF'
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=no
EOF
    # -c: a clean state, no jobs from an earlier run.
    pgrep -x slurmctld >/dev/null || slurmctld -c
    pgrep -x slurmd >/dev/null || slurmd -c
    wait_for 30 sh -c "sinfo -h -o '%T' | grep -q idle"
    echo "ready: slurm node $host partition debug"
}

slurm_down() {
    # slurmstepd outlives slurmd: cancel the jobs and wait for them first.
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [ -n "$jobs" ] && scancel --full $jobs 2>/dev/null || true
    wait_for 15 sh -c '[ -z "$(squeue -h -t running,completing 2>/dev/null)" ]' || true
    scontrol shutdown >/dev/null 2>&1 || true
    for _ in $(seq 50); do pgrep -x 'slurmctld|slurmd' >/dev/null || break; sleep 0.2; done
    pkill -x munged 2>/dev/null || true
}

libvirt_up() {
    mkdir -p /var/log/libvirt/qemu /run/libvirt /var/lib/libvirt/qemu
    id libvirt-qemu >/dev/null 2>&1 ||
        useradd -r -U -s /usr/sbin/nologin -d /var/lib/libvirt libvirt-qemu
    # QEMU runs as libvirt-qemu and opens /dev/kvm (root:kvm, 0660).
    if getent group kvm >/dev/null; then
        usermod -a -G kvm libvirt-qemu
    fi
    pgrep -x virtlogd >/dev/null || /usr/sbin/virtlogd -d -p "$W/virtlogd.pid"
    pgrep -x libvirtd >/dev/null || /usr/sbin/libvirtd -d -p "$W/libvirtd.pid"
    wait_for 30 virsh -c qemu:///system version
    echo "ready: libvirt qemu:///system"
}

# libvirt-vm NAME: a 64 MiB, one-vCPU KVM guest with no disk (it spins in
# the firmware's network boot, which is load enough to measure).
libvirt_vm() {
    local name=$1
    cat >"$W/$name.xml" <<EOF
<domain type='kvm'>
  <name>$name</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices><emulator>$(command -v qemu-system-x86_64)</emulator></devices>
</domain>
EOF
    virsh -c qemu:///system create "$W/$name.xml" >/dev/null
    echo "ready: vm $name"
}

libvirt_down() {
    local d
    for d in $(virsh -c qemu:///system list --name 2>/dev/null || true); do
        virsh -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
    done
    for f in libvirtd virtlogd; do
        if [ -f "$W/$f.pid" ]; then
            kill "$(cat "$W/$f.pid")" 2>/dev/null || true
            rm -f "$W/$f.pid"
        fi
    done
    # Gone before a next `up` looks for them.
    for _ in $(seq 50); do pgrep -x 'libvirtd|virtlogd' >/dev/null || break; sleep 0.2; done
}

case "${1:-}" in
podman-up) podman_up ;;
podman-down) podman_down ;;
docker-up) docker_up ;;
docker-down) docker_down ;;
slurm-up) slurm_up ;;
slurm-down) slurm_down ;;
libvirt-up) libvirt_up ;;
libvirt-vm) libvirt_vm "${2:?vm name}" ;;
libvirt-down) libvirt_down ;;
*)
    echo "usage: $0 {podman,docker,slurm,libvirt}-{up,down} | libvirt-vm NAME" >&2
    exit 2
    ;;
esac
