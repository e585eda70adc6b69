#!/usr/bin/env bash
# Everything a real node of the local stack needs, cached outside the checkout:
#  - kubelet and kube-proxy, built from the Go module proxy with the same wrapper module and
#    version ldflags as the control plane (scripts/lib/kube-module.sh);
#  - containerd, runc and the CNI plugins from Debian's packages (installed when missing);
#  - the pause image (containerd's sandbox image) and the test image `webecho`, each a static
#    C program packed as an OCI layout tar (no registry can be reached from these machines).
#
# Idempotent: what is present is not rebuilt or reinstalled.
# Usage: scripts/build-node.sh     (prints the node cache directory on its last line:
#        bin/kubelet, bin/kube-proxy, images/pause.tar, images/webecho.tar)
set -euo pipefail

KUBE_VERSION="${KVSCALE_KUBE_VERSION:-v1.36.3}"
CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}"
NODE="$CACHE/node/kube-$KUBE_VERSION"
BIN="$NODE/bin"
IMAGES="$NODE/images"
HERE="$(cd "$(dirname "$0")" && pwd)"

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
# shellcheck source=scripts/lib/kube-module.sh
. "$HERE/lib/kube-module.sh"
log() { echo "[build-node] $*" >&2; }
mkdir -p "$BIN" "$IMAGES"

# --- kubelet, kube-proxy ----------------------------------------------------------------
if ! [ -x "$BIN/kubelet" ] || ! [ -x "$BIN/kube-proxy" ]; then
  kdir="$CACHE/node/build/kube-$KUBE_VERSION"
  log "resolving k8s.io/kubernetes $KUBE_VERSION"
  kube_wrapper_module "$kdir" "$KUBE_VERSION" kubelet kube-proxy
  for cmd in kubelet kube-proxy; do
    if ! [ -x "$BIN/$cmd" ]; then
      log "building $cmd"
      kube_build "$kdir" "$KUBE_VERSION" "$BIN" "$cmd"
    fi
  done
fi

# --- containerd, runc, CNI plugins (Debian) ---------------------------------------------
packages=(containerd runc containernetworking-plugins iptables iproute2 conntrack)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} from Debian's packages"
  if [ "$(id -u)" -ne 0 ]; then
    echo "[build-node] installing packages needs root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
  # Debian's package enables a host containerd; the stack runs its own, private one.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now containerd >&2 || true
  fi
fi

# --- images: static programs packed as OCI layouts --------------------------------------
# Keyed by the sources' content, so a changed program gives a new image and tar.
image() {  # image NAME TAG SOURCE
  local name="$1" tag="$2" src="$HERE/node/$3" key out
  key="$(cat "$src" "$HERE/node/oci_image.py" | sha256sum | cut -c1-12)"
  out="$IMAGES/$name.tar"
  if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then return; fi
  log "building image kvscale.local/$name:$tag"
  local tmp
  tmp="$(mktemp -d)"
  gcc -static -O2 -o "$tmp/$name" "$src"
  python3 "$HERE/node/oci_image.py" "kvscale.local/$name:$tag" "$tmp/$name" "$out"
  echo "$key" > "$out.key"
  rm -rf "$tmp"
}
image pause 3.10 pause.c
image webecho 1 webecho.c

for f in "$BIN/kubelet" "$BIN/kube-proxy" "$IMAGES/pause.tar" "$IMAGES/webecho.tar"; do
  [ -e "$f" ] || { log "missing after build: $f"; exit 1; }
done
echo "$NODE"
