#!/usr/bin/env bash
# Builds the container image of alumet-agent without any registry, writes it
# as an OCI archive and prints the archive's path (the only line on stdout):
#
#     bash scripts/build-image.sh     # target/image/alumet-agent_<version>.oci.tar
#     podman load -i target/image/alumet-agent_<version>.oci.tar
#
# Steps (deploy/image/README.md says more):
# 1. the release binary: `cargo build --locked --release -p app-agent` (a
#    no-op when target/release is fresh), unless ALUMET_IMAGE_BINARY names
#    one; its debug info is stripped (its symbols stay, for backtraces);
# 2. the base root filesystem, from Debian packages, by
#    deploy/image/make-rootfs.sh (mmdebstrap), kept in target/image/ under a
#    name that hashes that script, the suite and the mirror: later builds
#    reuse it (delete it, or ALUMET_IMAGE_REFRESH=1, for today's packages);
#    or ALUMET_IMAGE_ROOTFS names a tarball made earlier;
# 3. `buildah build` of deploy/image/Containerfile (FROM scratch), with the
#    OCI labels, every timestamp SOURCE_DATE_EPOCH (default: the commit's
#    time) and no identity label, so that the same inputs give the same
#    image digest;
# 4. `buildah push` to an OCI layout (gzip layers), packed as a tar with
#    sorted names, fixed times and owners: the archive's bytes are
#    reproducible too.
#
# The image stays in the local containers storage as NAME:TAG.
# Environment:
#   ALUMET_IMAGE_NAME     default localhost/alumet-agent
#   ALUMET_IMAGE_TAG      default the agent's version
#   ALUMET_IMAGE_OUT      the archive (relative: to the repository's root),
#                         default target/image/alumet-agent_<version>.oci.tar
#   ALUMET_IMAGE_BINARY   an alumet-agent binary to use instead of the release build
#   ALUMET_IMAGE_ROOTFS   a base root filesystem tarball to use instead of making one
#   ALUMET_IMAGE_SUITE    Debian suite of the base, default this machine's
#                         (the binary needs a glibc at least as new as the one
#                         it was built against), else bookworm
#   ALUMET_IMAGE_MIRROR   default http://deb.debian.org/debian; a snapshot
#                         (http://snapshot.debian.org/archive/debian/<date>T000000Z)
#                         pins the package versions
#   ALUMET_IMAGE_SECURITY_MIRROR  of <suite>-security, default
#                         http://deb.debian.org/debian-security; "": neither
#                         -security nor -updates (unstable)
#   ALUMET_IMAGE_REFRESH  1: make the base again even if one is kept
#   SOURCE_DATE_EPOCH     default: `git log -1 --format=%ct`
# Needs root (mmdebstrap, chown), buildah, mmdebstrap, strip, git:
# bash scripts/install-image-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { echo "build-image: $*" >&2; }
die() {
    say "$*"
    exit 1
}

for tool in buildah strip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: bash scripts/install-image-tools.sh"
done

target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir=$repo/$target_dir ;; esac
work=$target_dir/image
mkdir -p "$work"

# ---- 1. the binary ------------------------------------------------------
if [ -n "${ALUMET_IMAGE_BINARY:-}" ]; then
    binary=$ALUMET_IMAGE_BINARY
else
    start=$(date +%s)
    cargo build --locked --release -p app-agent --bin alumet-agent >&2
    say "release build: $(($(date +%s) - start)) s"
    binary=$target_dir/release/alumet-agent
fi
[ -x "$binary" ] || die "no binary at $binary"
version=$("$binary" --version | awk '{ print $2 }')
[ -n "$version" ] || die "$binary --version printed no version"

# ---- metadata -------------------------------------------------------------
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then
    say "warning: the working tree differs from $revision; the image is labelled with that commit all the same"
fi
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
source_url=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' Cargo.toml)
description=$(sed -n 's/^description *= *"\(.*\)"/\1/p' app-agent/Cargo.toml | head -n 1)
name=${ALUMET_IMAGE_NAME:-localhost/alumet-agent}
tag=${ALUMET_IMAGE_TAG:-$version}
out=${ALUMET_IMAGE_OUT:-$work/alumet-agent_$version.oci.tar}

# ---- 2. the base root filesystem ----------------------------------------
if [ -n "${ALUMET_IMAGE_ROOTFS:-}" ]; then
    rootfs=$ALUMET_IMAGE_ROOTFS
    [ -f "$rootfs" ] || die "no rootfs tarball at $rootfs"
else
    suite=${ALUMET_IMAGE_SUITE:-}
    if [ -z "$suite" ]; then
        suite=$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}" || true)
        suite=${suite:-bookworm}
    fi
    mirror=${ALUMET_IMAGE_MIRROR:-http://deb.debian.org/debian}
    security=${ALUMET_IMAGE_SECURITY_MIRROR-http://deb.debian.org/debian-security}
    key=$({
        cat deploy/image/make-rootfs.sh
        echo "$suite $mirror $security $(uname -m)"
    } | sha256sum | cut -c1-16)
    rootfs=$work/rootfs-$suite-$key.tar
    if [ ! -f "$rootfs" ] || [ "${ALUMET_IMAGE_REFRESH:-0}" = 1 ]; then
        command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is missing: bash scripts/install-image-tools.sh"
        start=$(date +%s)
        say "making the base root filesystem ($suite from $mirror)"
        bash deploy/image/make-rootfs.sh "$rootfs.part" "$suite" "$mirror" "$security"
        mv "$rootfs.part" "$rootfs"
        say "base root filesystem: $(($(date +%s) - start)) s"
    else
        say "reusing the base root filesystem $rootfs"
    fi
fi
# "package=version ..." of the base, from its dpkg status.
packages=$(tar -xOf "$rootfs" ./var/lib/dpkg/status |
    awk '/^Package:/ { p = $2 } /^Version:/ { printf "%s%s=%s", sep, p, $2; sep = " " }')
say "base packages: $packages"

# ---- 3. the image -------------------------------------------------------
# Per run: two builds at once do not share their context or layout.
context=$(mktemp -d "$work/context.XXXXXX")
layout=$(mktemp -d "$work/oci-layout.XXXXXX")
trap 'rm -rf "$context" "$layout"' EXIT
cp "$rootfs" "$context/rootfs.tar"
strip --strip-debug -o "$context/alumet-agent" "$binary"
chmod 755 "$context/alumet-agent"
cp deploy/image/alumet-config.toml "$context/alumet-config.toml"
chmod 644 "$context/alumet-config.toml"

start=$(date +%s)
buildah build --quiet --pull=never --layers=false --identity-label=false \
    --timestamp "$epoch" --format oci \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    --build-arg "SOURCE=$source_url" \
    --build-arg "DESCRIPTION=$description" \
    --build-arg "DEBIAN_PACKAGES=$packages" \
    -f deploy/image/Containerfile -t "$name:$tag" "$context" >&2

# ---- 4. the OCI archive -------------------------------------------------
buildah push --quiet --remove-signatures "$name:$tag" "oci:$layout:$name:$tag" >&2
mkdir -p "$(dirname "$out")"
tar --sort=name --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$epoch" \
    --mode=u+rwX,go+rX,go-w -cf "$out.part" -C "$layout" .
mv "$out.part" "$out"
say "image $name:$tag, $(stat -c %s "$out") bytes, built in $(($(date +%s) - start)) s"
echo "$out"
