#!/usr/bin/env bash
# Build (once, 4-7 min on 2 cores) and cache the local Kubernetes control plane the operator's integration
# tests run against: kube-apiserver, kube-controller-manager, kubectl v1.20.2 from Debian's source package,
# plus Debian's etcd. Cached under ~/.cache/local-k8s: a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash scripts/k8s/build.sh
