#!/usr/bin/env bash
# The whole daemon under remote_write load on 127.0.0.1 (issue 3's benchmark): builds portent,
# then runs crates/portent-eval/examples/push_loopback.rs, which starts `portent serve` on a
# saved state of SERIES fitted series and pushes one sample per series per second for SECONDS.
#
#   bash bench/push_loopback.sh [SERIES] [SECONDS]      # defaults: 100000 200
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p portent
cargo run --release -p portent-eval --example push_loopback -- "$@"
