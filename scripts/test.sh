#!/usr/bin/env bash
# The README's test command: everything the test suite needs, on a fresh Debian machine.
# This issue's tests need no external server; later ones install theirs here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (stable, 1.95 or newer) first" >&2
    exit 1
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
# Benchmarks run once each in test mode, so they cannot rot.
cargo test --workspace --benches -q
