#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager, kubectl v1.20.2) from
# Debian bookworm's `kubernetes` SOURCE package (no registry ships these binaries; Debian builds only the
# client, but the source tarball holds the whole upstream tree with everything vendored).
# Idempotent and cached: once $K8S_BIN holds the binaries a re-run takes about a second.
# Output: $K8S_BIN/{kube-apiserver,kube-controller-manager,kubectl}; etcd is Debian's /usr/bin/etcd.
set -euo pipefail

K8S_CACHE=${K8S_CACHE:-$HOME/.cache/local-k8s}
K8S_BIN=${K8S_BIN:-$K8S_CACHE/bin}
SRC_PARENT=$K8S_CACHE/src
LOG=$K8S_CACHE/build.log
WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl"
mkdir -p "$SRC_PARENT" "$K8S_BIN"
t0=$(date +%s)
say() { echo "[k8s/build.sh $(( $(date +%s) - t0 ))s] $*"; }
SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo

# 1. toolchain and runtime deps (etcd, openssl for certs, curl for health checks)
need=()
for p in golang-go etcd-server rsync make openssl curl golang-github-modern-go-reflect2-dev dpkg-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
missing=0
for w in $WHAT; do [[ -x $K8S_BIN/$(basename "$w") ]] || missing=1; done
if ((!missing)); then
  # binaries are cached; only etcd/openssl/curl are needed at run time
  need=()
  for p in etcd-server openssl curl; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
fi
if ((${#need[@]})); then
  say "apt-get install ${need[*]}"
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${need[@]}" >/dev/null
fi
if ((!missing)); then
  say "binaries already in $K8S_BIN"
  exit 0
fi

# 2. the Debian source package (needs deb-src)
SRC=$(ls -d "$SRC_PARENT"/kubernetes-*/ 2>/dev/null | head -1 || true)
if [[ -z $SRC ]]; then
  f=/etc/apt/sources.list.d/debian.sources
  if [[ -f $f ]] && ! grep -q 'deb-src' "$f"; then
    say "enabling deb-src in $f"
    $SUDO sed -i 's/^Types: deb$/Types: deb deb-src/' "$f"
  elif [[ ! -f $f && -f /etc/apt/sources.list ]] && ! grep -q '^deb-src' /etc/apt/sources.list; then
    say "adding deb-src lines to /etc/apt/sources.list"
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list | $SUDO tee -a /etc/apt/sources.list >/dev/null
  fi
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
  say "apt-get source kubernetes"
  (cd "$SRC_PARENT" && apt-get source kubernetes >/dev/null 2>&1)
  SRC=$(ls -d "$SRC_PARENT"/kubernetes-*/ | head -1)
fi
SRC=${SRC%/}
say "source: $SRC"
cd "$SRC"

# 3. the vendored modern-go/reflect2 (2018) crashes at run time with Go >= 1.18 (map iteration via
#    go:linkname); Debian's reflect2 1.0.2 is API-compatible and works.
R2=vendor/github.com/modern-go/reflect2
if [[ ! -f $R2/.swapped-1.0.2 ]]; then
  say "swapping $R2 for Debian's golang-github-modern-go-reflect2-dev"
  rsync -a --delete --exclude BUILD /usr/share/gocode/src/github.com/modern-go/reflect2/ "$R2/"
  rm -f "$R2/go.mod"
  touch "$R2/.swapped-1.0.2"
fi

# 4. upstream make rules: GOPATH mode, vendored deps, code generators (openapi-gen) first
export GOFLAGS= CGO_ENABLED=0 GO111MODULE=off
say "make WHAT=\"$WHAT\" (log: $LOG)"
tb=$(date +%s)
if ! make WHAT="$WHAT" >"$LOG" 2>&1; then
  tail -40 "$LOG"; echo "k8s build FAILED, see $LOG" >&2; exit 1
fi
say "make took $(( $(date +%s) - tb ))s"
for w in $WHAT; do install -m 0755 "_output/bin/$(basename "$w")" "$K8S_BIN/"; done
# the 2.4 GB build cache is not needed again; keep the source tree for a rebuild
rm -rf "$SRC/_output/local/go/cache" 2>/dev/null || true
"$K8S_BIN/kube-apiserver" --version
say "done"
