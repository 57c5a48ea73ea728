#!/usr/bin/env bash
# Renders the Helm chart deploy/helm/alumet-agent with its default values
# into plain manifests, one file per template, for people without Helm:
#
#   bash scripts/render-helm.sh            # rewrites deploy/helm/rendered/
#   bash scripts/render-helm.sh DIR        # writes them into DIR instead
#
# Release name alumet-agent, namespace alumet, for the oldest Kubernetes the
# chart supports (1.27; fields of later versions, such as recursiveReadOnly,
# are left out so that the files apply to every supported cluster).
# deploy/tests/helm.rs renders them again and fails when the committed files
# differ. Helm: $HELM, else .k8s-tools/bin/helm (scripts/install-k8s-tools.sh),
# else the one in PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-deploy/helm/rendered}
helm=${HELM:-}
if [ -z "$helm" ]; then
    if [ -x .k8s-tools/bin/helm ]; then helm=.k8s-tools/bin/helm; else helm=helm; fi
fi
command -v "$helm" >/dev/null 2>&1 || {
    echo "render-helm: helm not found (bash scripts/install-k8s-tools.sh installs it)" >&2
    exit 1
}

KUBE_VERSION=1.27.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$helm" template alumet-agent deploy/helm/alumet-agent \
    --namespace alumet --kube-version "$KUBE_VERSION" >"$tmp/all.yaml"

# One file per template: helm starts each with "# Source: alumet-agent/templates/NAME".
mkdir -p "$tmp/out"
awk -v dir="$tmp/out" '
    /^---$/ { next }
    /^# Source: / { file = dir "/" substr($3, index($3, "/templates/") + 11); next }
    file != "" { print > file }
' "$tmp/all.yaml"
header="# Rendered from the Helm chart deploy/helm/alumet-agent with its default values
# (release alumet-agent, namespace alumet, Kubernetes $KUBE_VERSION) by scripts/render-helm.sh:
# do not edit; change the chart and run the script again.
#   kubectl create namespace alumet && kubectl apply -f deploy/helm/rendered/"
mkdir -p "$out"
rm -f "$out"/*.yaml
for f in "$tmp"/out/*.yaml; do
    { echo "$header"; cat "$f"; } >"$out/$(basename "$f")"
done
ls "$out"
