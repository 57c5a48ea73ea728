#!/usr/bin/env bash
# The base root filesystem of the container image, from Debian packages,
# written as a normalised tarball (run by scripts/build-image.sh, which
# caches the result):
#
#     bash deploy/image/make-rootfs.sh OUT.tar SUITE MIRROR [SECURITY_MIRROR]
#
# mmdebstrap --variant=extract resolves and unpacks libc6, libgcc-s1,
# ca-certificates and base-files (no maintainer script runs) from SUITE,
# SUITE-updates and SUITE-security, the last from SECURITY_MIRROR (without
# it, or empty, SUITE alone: for unstable).
# Then, from the packages it downloaded:
# - only those four stay, with gcc-N-base (libgcc's licence): the files of
#   what apt pulled in for maintainer scripts (openssl, libssl3, debconf,
#   awk...) are removed;
# - base-files keeps only /etc/debian_version (the NVIDIA container toolkit
#   injects the driver's libraries into /usr/lib/x86_64-linux-gnu when it is
#   there, else into /usr/lib64), os-release and the licence texts;
# - gconv modules, manuals, lintian overrides and docs (copyright files
#   excepted) go;
# - generated as the maintainer scripts would: the CA bundle
#   /etc/ssl/certs/ca-certificates.crt (every certificate of the package,
#   as update-ca-certificates concatenates them), /etc/ld.so.conf and
#   /etc/ld.so.cache (so that the toolkit's ldconfig hook can add the driver
#   library to it), /etc/os-release, /var/lib/dpkg/status (the packages and
#   their versions, for scanners);
# - written: /etc/passwd and /etc/group (root, alumet = 65532, nobody),
#   /etc/nsswitch.conf, and the directories /tmp, /run/alumet and
#   /var/lib/alumet (owned by 65532, the image's default user).
# mmdebstrap's apt and dpkg setup, logs, caches, /etc/resolv.conf and
# /etc/hostname are not kept; /dev is empty (the runtime mounts its own).
#
# The tarball: names sorted, numeric owners, every mtime 0, GNU format, no
# extended attributes: the same packages give the same bytes. The package
# versions are those of the mirrors today: snapshot mirrors
# (http://snapshot.debian.org/archive/debian/YYYYMMDDT000000Z and
# .../debian-security/YYYYMMDDT000000Z) pin them.
# Needs root (mmdebstrap's root mode, chown), mmdebstrap, dpkg-deb, ldconfig.
set -euo pipefail

if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
    echo "usage: $0 OUT.tar SUITE MIRROR [SECURITY_MIRROR]" >&2
    exit 2
fi
out=$1
suite=$2
mirror=$3
security=${4:-}
sources=("deb $mirror $suite main")
if [ -n "$security" ]; then
    sources+=("deb $mirror $suite-updates main" "deb $security $suite-security main")
fi
uid=65532

work=$(mktemp -d "${TMPDIR:-/tmp}/alumet-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

# --skip=cleanup/apt/cache: the .deb files stay, to know whose files are whose.
mmdebstrap --quiet --variant=extract --mode=root --format=directory \
    --skip=cleanup/apt/cache \
    --include=libc6,libgcc-s1,ca-certificates,base-files \
    "$suite" "$root" "${sources[@]}" >&2

cd "$root"
files_of() { dpkg-deb --fsys-tarfile "$1" | tar -t | grep -v '/$' || true; }

kept=()
removed=()
for deb in $(find var/cache/apt/archives -maxdepth 1 -name '*.deb' | LC_ALL=C sort); do
    package=$(dpkg-deb -f "$deb" Package)
    case "$package" in
        libc6 | libgcc-s1 | gcc-*-base | ca-certificates)
            kept+=("$deb")
            ;;
        base-files)
            kept+=("$deb")
            files_of "$deb" | grep -Ev '^\./(etc/debian_version|usr/lib/os-release|usr/share/common-licenses/.*|usr/share/doc/base-files/copyright)$' |
                xargs -r -d '\n' rm -f --
            ;;
        *)
            removed+=("$package")
            files_of "$deb" | xargs -r -d '\n' rm -f --
            ;;
    esac
done
for deb in "${kept[@]}"; do
    dpkg-deb -f "$deb" | awk '{ print } /^Package:/ { print "Status: install ok installed" }'
    echo
done >"$work/status"
echo "make-rootfs: removed what only maintainer scripts use: ${removed[*]:-nothing}" >&2

# What the kept packages hold but the agent never uses.
rm -rf usr/lib/*-linux-gnu/gconv usr/share/man usr/share/lintian usr/share/info \
    usr/share/locale usr/share/bash-completion usr/sbin/update-ca-certificates \
    etc/ca-certificates
rm -rf usr/share/doc/*/examples
find usr/share/doc -type f ! -name copyright -delete
# mmdebstrap's setup, apt's and dpkg's state, host files, device nodes.
rm -rf var/cache var/log var/lib/apt var/lib/dpkg etc/apt etc/dpkg \
    etc/resolv.conf etc/hostname etc/fstab etc/machine-id
rm -rf dev
find . -depth -type d -empty -delete

# The CA bundle, as update-ca-certificates writes it (each certificate
# ending with a newline), in a stable order.
mkdir -p etc/ssl/certs
find usr/share/ca-certificates -name '*.crt' | LC_ALL=C sort | while read -r crt; do
    sed -e '$a\' "$crt"
done >etc/ssl/certs/ca-certificates.crt
test -s etc/ssl/certs/ca-certificates.crt

# The loader's configuration and cache (as libc-bin's trigger would).
echo 'include /etc/ld.so.conf.d/*.conf' >etc/ld.so.conf
ldconfig -X -r "$root"
test -s etc/ld.so.cache

ln -s ../usr/lib/os-release etc/os-release

cat >etc/passwd <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
alumet:x:$uid:$uid:alumet-agent:/var/lib/alumet:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >etc/group <<EOF
root:x:0:
alumet:x:$uid:
nogroup:x:65534:
EOF
cat >etc/nsswitch.conf <<'EOF'
passwd: files
group: files
hosts: files dns
EOF

# dpkg's status database of the packages that are there, for scanners.
mkdir -p var/lib/dpkg
mv "$work/status" var/lib/dpkg/status

# /usr/lib/<multiarch>: where the NVIDIA toolkit mounts the driver's libraries.
multiarch=$(basename lib/*-linux-gnu)
mkdir -p dev proc sys root run/alumet var/lib/alumet tmp "usr/lib/$multiarch"
chmod 1777 tmp
chmod 700 root
chown "$uid:$uid" run/alumet var/lib/alumet
chmod 755 run/alumet var/lib/alumet

# Mode and owner as they are, names sorted, mtimes 0, numeric owners.
tar --sort=name --format=gnu --numeric-owner --mtime=@0 \
    -cf "$work/rootfs.tar" -C "$root" .
cd /
mv "$work/rootfs.tar" "$out"
