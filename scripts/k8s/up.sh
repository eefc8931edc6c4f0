#!/usr/bin/env bash
# Start a local Kubernetes control plane on 127.0.0.1 on FREE ports (no scheduler, no kubelet):
#   etcd, kube-apiserver (RBAC, client-cert + static-token auth, service-account tokens),
#   kube-controller-manager (all default controllers, garbage collector on).
# Usage: up.sh [--state DIR] [--crds FILE|DIR] [--fresh]
#   --state DIR  where certs, etcd data, logs, pids, kubeconfig and ports live
#                (default $K8S_STATE or ~/.cache/local-k8s/plane). Ports are picked once per state dir and
#                kept, so restarting a stopped piece (e.g. the apiserver) brings it back on the same port.
#   --crds X     applied before the controller manager starts (it is restarted if running), so the garbage
#                collector knows the new kinds at once instead of after its 30 s discovery resync.
#   --fresh      wipe the state dir first.
# Starts only pieces that are not running; waits for /readyz. Writes DIR/kubeconfig and DIR/env.sh.
# Binaries: scripts/k8s/build.sh ($K8S_BIN, default ~/.cache/local-k8s/bin); etcd is Debian's /usr/bin/etcd.
set -euo pipefail
K8S_CACHE=${K8S_CACHE:-$HOME/.cache/local-k8s}
BIN=${K8S_BIN:-$K8S_CACHE/bin}
STATE=${K8S_STATE:-$K8S_CACHE/plane}
CRDS=; FRESH=0
while (($#)); do
  case $1 in
    --state) STATE=$2; shift ;;
    --crds) CRDS=$2; shift ;;
    --fresh) FRESH=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac; shift
done
HERE=$(cd "$(dirname "$0")" && pwd)
((FRESH)) && "$HERE/down.sh" --state "$STATE" --wipe >/dev/null
PKI=$STATE/pki RUN=$STATE/run DATA=$STATE/etcd-data KCFG=$STATE/kubeconfig
t0=$(date +%s%N)
say() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); echo "[k8s/up.sh $((ms/1000)).$((ms%1000/100))s] $*"; }
for b in kube-apiserver kube-controller-manager kubectl; do
  [[ -x $BIN/$b ]] || { echo "missing $BIN/$b: run scripts/k8s/build.sh first" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "etcd missing: run scripts/k8s/build.sh (installs etcd-server)" >&2; exit 1; }
mkdir -p "$PKI" "$RUN" "$DATA"; chmod 700 "$DATA"

# ---------- ports: picked free once, then kept ----------
if [[ ! -f $STATE/ports.env ]]; then
  python3 - "$STATE/ports.env" <<'PY'
import socket, sys
socks = []
for _ in range(4):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
names = ["API_PORT", "ETCD_PORT", "ETCD_PEER_PORT", "KCM_PORT"]
with open(sys.argv[1], "w") as f:
    for n, s in zip(names, socks):
        f.write(f"{n}={s.getsockname()[1]}\n")
PY
fi
# shellcheck disable=SC1091
source "$STATE/ports.env"

alive() { [[ -f $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# ---------- PKI (openssl) ----------
if [[ ! -f $PKI/ca.crt ]]; then
  say "generating CA, certs, service-account keys in $PKI"
  ( cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=local-k8s-ca" >/dev/null 2>&1
    sign() { # name subject ext
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" >/dev/null 2>&1
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
        -extfile "$1.ext" >/dev/null 2>&1
      rm -f "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
    sign kcm "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048 >/dev/null 2>&1
    openssl rsa -in sa.key -pubout -out sa.pub >/dev/null 2>&1
    openssl rand -hex 24 > admin.token
    printf '%s,admin-token,admin-token,"system:masters"\n' "$(cat admin.token)" > tokens.csv
    # front-proxy (request-header) CA: lets the controller manager's delegated authn complete
    openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 \
      -subj "/CN=local-front-proxy-ca" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj "/CN=front-proxy-client" >/dev/null 2>&1
    printf 'extendedKeyUsage=clientAuth\n' > front-proxy-client.ext
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
      -CAcreateserial -out front-proxy-client.crt -days 3650 -extfile front-proxy-client.ext >/dev/null 2>&1
    rm -f front-proxy-client.csr
    chmod 600 ./*.key admin.token tokens.csv )
fi

mkkubeconfig() { # file user cert key
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 < "$3")
    client-key-data: $(base64 -w0 < "$4")
contexts:
- name: local
  context: {cluster: local, user: $2, namespace: default}
current-context: local
KC
  chmod 600 "$1"
}
mkkubeconfig "$KCFG" admin "$PKI/admin.crt" "$PKI/admin.key"
mkkubeconfig "$RUN/kcm.kubeconfig" system:kube-controller-manager "$PKI/kcm.crt" "$PKI/kcm.key"

start() { # name cmd...
  local n=$1; shift
  if alive "$n"; then return; fi
  setsid nohup "$@" >>"$RUN/$n.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$n.pid"
  say "started $n (pid $!)"
}
wait_for() { # what timeout cmd...
  local what=$1 to=$2; shift 2
  local end=$(( $(date +%s) + to ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > end )); then echo "timeout waiting for $what (logs: $RUN)" >&2; return 1; fi
    sleep 0.2
  done
}
CURL=(curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$PKI/admin.token")")

start etcd etcd --name local --data-dir "$DATA" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --quota-backend-bytes 2147483648 --log-level warn
wait_for "etcd" 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
  --authorization-mode RBAC --anonymous-auth=true \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/12 --allow-privileged=true \
  --endpoint-reconciler-type none \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --cert-dir "$RUN/apiserver-certs" --v 1
wait_for "kube-apiserver /readyz" 120 bash -c "[[ \$(${CURL[*]@Q} https://127.0.0.1:$API_PORT/readyz) == ok ]]"
# /readyz in 1.20 does not wait for the RBAC authorizer's informers: until they sync, every RBAC-authorized
# request is refused with 403. Wait until a request that only RBAC allows (the controller manager's
# identity reading a ServiceAccount) is no longer refused; 200 and 404 both mean authorized.
rbac_ok() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.crt" --cert "$PKI/kcm.crt" --key "$PKI/kcm.key" \
    "https://127.0.0.1:$API_PORT/api/v1/namespaces/kube-system/serviceaccounts/default")
  [[ $code == 200 || $code == 404 ]]
}
wait_for "RBAC authorizer" 60 rbac_ok
say "kube-apiserver ready on https://127.0.0.1:$API_PORT"

if [[ -n $CRDS ]]; then
  "$BIN/kubectl" --kubeconfig "$KCFG" apply -f "$CRDS" >/dev/null
  "$BIN/kubectl" --kubeconfig "$KCFG" wait --for condition=Established crd --all --timeout=60s >/dev/null
  if alive kube-controller-manager; then
    pid=$(cat "$RUN/kube-controller-manager.pid"); kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$RUN/kube-controller-manager.pid"
  fi
  say "applied CRDs from $CRDS"
fi

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$RUN/kcm.kubeconfig" \
  --authentication-kubeconfig "$RUN/kcm.kubeconfig" --authorization-kubeconfig "$RUN/kcm.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --port 0 --cert-dir "$RUN/kcm-certs" \
  --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --controllers '*' --enable-garbage-collector=true --v 1
wait_for "kube-controller-manager /healthz" 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
# controllers are working once the service-account controller has made default/default
wait_for "default ServiceAccount" 60 "${CURL[@]}" "https://127.0.0.1:$API_PORT/api/v1/namespaces/default/serviceaccounts/default"

cat > "$STATE/env.sh" <<ENV
export KUBECONFIG=$KCFG
export K8S_API=https://127.0.0.1:$API_PORT
export K8S_TOKEN=\$(cat $PKI/admin.token)
export K8S_CA=$PKI/ca.crt
export K8S_BIN=$BIN
ENV
say "control plane up: source $STATE/env.sh"
