#!/usr/bin/env bash
# Builds the Debian package of alumet-agent and prints its path
# (target/debian/alumet-agent_<version>-1_<arch>.deb):
#
#     bash scripts/package-deb.sh
#
# Steps: one `cargo build` of the binary, the man pages and the shell
# completions generated from its clap definition by alumet-agent-gen (into
# target/<profile>/generated/), then `cargo deb --no-build`, which takes the
# file list and the maintainer scripts from [package.metadata.deb] in
# app-agent/Cargo.toml. Needs cargo-deb (`cargo install cargo-deb --locked`,
# or bash scripts/install-packaging-deps.sh).
#
# Arguments go to `cargo deb` (e.g. `-o DIR`, `--fast`).
#
# ALUMET_DEB_BINARY=PATH packages that binary instead of building one (and
# runs the alumet-agent-gen beside it, or ALUMET_DEB_GEN): the
# package test (app-agent/tests/package_deb.rs) passes the debug binary that
# `cargo test` has just built, rather than spend minutes on a second, release
# build; it is staged in target/deb-test/ (ALUMET_DEB_PROFILE), a profile
# name cargo-deb reads from but never builds. Packages for admins come from
# the default: a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
if [ -n "${ALUMET_DEB_BINARY:-}" ]; then
    profile=${ALUMET_DEB_PROFILE:-deb-test}
else
    profile=${ALUMET_DEB_PROFILE:-release}
fi

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package-deb: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
fi

if [ -n "${ALUMET_DEB_BINARY:-}" ]; then
    if [ "$profile" = release ]; then
        echo "package-deb: ALUMET_DEB_BINARY would overwrite the release build: set ALUMET_DEB_PROFILE to another name" >&2
        exit 1
    fi
    mkdir -p "$target_dir/$profile"
    cp "$ALUMET_DEB_BINARY" "$target_dir/$profile/alumet-agent"
    gen=${ALUMET_DEB_GEN:-$(dirname "$ALUMET_DEB_BINARY")/alumet-agent-gen}
else
    cargo build --locked --profile "$profile" -p app-agent >&2
    gen="$target_dir/$profile/alumet-agent-gen"
fi

generated="$target_dir/$profile/generated"
rm -rf "$generated"
"$gen" man "$generated/man"
# Debian policy: man pages compressed with gzip -9n (no name or time stamp).
gzip -9n "$generated/man"/*.1
"$gen" completions "$generated/completions"

# --no-build: the binary above is the one packaged, with the pages it wrote.
cargo deb --no-build --locked --profile "$profile" -p app-agent --strip "$@"
