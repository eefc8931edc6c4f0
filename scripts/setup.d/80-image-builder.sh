#!/usr/bin/env bash
# The daemonless image builder for tests/images/test_image_builds.py: Debian's buildah (`bud --isolation
# chroot`) and a stand-in for the Dockerfiles' python:3.11-slim-bookworm base, made with debootstrap because no
# container registry is reachable (Debian bookworm with its python3.11 as `python`, python3-venv for the build
# stage). The base trusts the build host's CA bundle, so apt and pip inside a build work through this machine's
# network the way they do on the host. Cached under ~/.cache/voice-gateway-images (container storage + base):
# the first run takes 3-6 minutes, a later one about a second; the base is rebuilt when this script's recipe
# or the host's CA bundle changes.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  # debootstrap and buildah's chroot isolation need root; tests/images skips its builds for another user
  echo "[image-builder] not root: image builds skipped"
  exit 0
fi
CACHE="${VOICE_GATEWAY_IMAGES_CACHE:-$HOME/.cache/voice-gateway-images}"
BASE_TAG="localhost/python-standin:3.11-slim-bookworm"
mkdir -p "$CACHE"

# overlay where the kernel mounts it here (a layer stores only its changes); else vfs (a full copy per layer,
# several GB for the gateway image). The tests read the choice from $CACHE/driver.
overlay_works() {
  grep -qw overlay /proc/filesystems || return 1
  local probe
  probe=$(mktemp -d "$CACHE/overlay-probe.XXXXXX")
  mkdir "$probe"/{lower,upper,work,merged}
  local ok=1
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
    "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    ok=0
  fi
  rm -rf "$probe"
  return "$ok"
}
DRIVER=$(cat "$CACHE/driver" 2>/dev/null || true)
if [ -z "$DRIVER" ]; then
  if overlay_works; then DRIVER=overlay; else DRIVER=vfs; fi
  echo "$DRIVER" >"$CACHE/driver"
fi
STORE=(--root "$CACHE/storage-$DRIVER" --runroot "$CACHE/run-$DRIVER" --storage-driver "$DRIVER")
HOST_CA=/etc/ssl/certs/ca-certificates.crt
RECIPE=1  # bump when the base's contents below change
KEY="$RECIPE-$DRIVER-$(sha256sum "$HOST_CA" | cut -c1-16)"

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(cat "$CACHE/base.key" 2>/dev/null)" = "$KEY" ] \
  && buildah "${STORE[@]}" inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
  exit 0
fi

echo "[image-builder] debootstrap bookworm base (once)"
rootfs="$CACHE/rootfs.tmp"
rm -rf "$rootfs"
nice -n 10 debootstrap --variant=minbase \
  --include=ca-certificates,python3,python3-venv,python-is-python3 \
  bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
# The same suites as the official image (updates + security), and the host's CAs where update-ca-certificates
# keeps them (a package that re-runs it inside a build must not drop them).
cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
install -m 0644 "$HOST_CA" "$rootfs/usr/local/share/ca-certificates/build-host.crt"
install -m 0644 "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

buildah "${STORE[@]}" rmi -f "$BASE_TAG" >/dev/null 2>&1 || true
ctr=$(buildah "${STORE[@]}" from scratch)
mnt=$(buildah "${STORE[@]}" mount "$ctr")
cp -a "$rootfs/." "$mnt/"
buildah "${STORE[@]}" umount "$ctr" >/dev/null
buildah "${STORE[@]}" config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  --cmd python3 "$ctr"
buildah "${STORE[@]}" commit --quiet --rm "$ctr" "$BASE_TAG" >/dev/null
rm -rf "$rootfs"
echo "$KEY" >"$CACHE/base.key"
echo "[image-builder] base $BASE_TAG ready"
