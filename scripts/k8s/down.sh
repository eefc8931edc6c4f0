#!/usr/bin/env bash
# Stop the processes up.sh started, by the PIDs it recorded (each checked against its executable name
# first; nothing is killed by name).
# Usage: down.sh [--state DIR] [--wipe] [--only NAME]
#   --wipe       also delete the state dir (etcd data, certs, kubeconfig, logs, ports)
#   --only NAME  stop just this piece (etcd | kube-apiserver | kube-controller-manager)
set -uo pipefail
K8S_CACHE=${K8S_CACHE:-$HOME/.cache/local-k8s}
STATE=${K8S_STATE:-$K8S_CACHE/plane}
WIPE=0; ONLY=
while (($#)); do
  case $1 in
    --state) STATE=$2; shift ;;
    --wipe) WIPE=1 ;;
    --only) ONLY=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac; shift
done
RUN=$STATE/run
for n in kube-controller-manager kube-apiserver etcd; do
  [[ -n $ONLY && $ONLY != "$n" ]] && continue
  f=$RUN/$n.pid
  [[ -f $f ]] || continue
  pid=$(cat "$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  if [[ -n $exe && $(basename "$exe") == "$n" ]]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    echo "[k8s/down.sh] stopped $n (pid $pid)"
  fi
  rm -f "$f"
done
if ((WIPE)) && [[ -z $ONLY ]]; then
  rm -rf "$STATE"
  echo "[k8s/down.sh] wiped $STATE"
fi
exit 0
