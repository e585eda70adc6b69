#!/usr/bin/env bash
# Builds the kvscale image and the engine-twin image (Containerfile's default target and its
# `engine-twin` target) with no daemon and no registry: buildah (chroot isolation) over a Debian
# base that mmdebstrap makes from Debian's packages, passed as BASE_IMAGE. Output: one OCI
# archive per image, which containerd imports (`ctr -n k8s.io images import`), cached by
# content hash under ~/.cache/kvscale/images/<hash>/ so a warm run takes a fraction of a second.
# Prints the two archives' paths last, the kvscale image's first. Needs root (apt, buildah's
# chroot). See docs/images.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${KVSCALE_CACHE:-$HOME/.cache/kvscale}/images"
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
B=(buildah --storage-driver vfs)

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || apt-get install -y -q --no-install-recommends "$tool" >&2
done

# The key: everything the image is made of. The source tree as git sees it (tracked and
# untracked-not-ignored files), so a local edit rebuilds.
key=$( { cat Containerfile requirements/runtime.lock pyproject.toml README.md
         echo "$SUITE $BASE_PACKAGES $VERSION"
         git ls-files -co --exclude-standard -- src operator engine_sidecar crds | sort | xargs sha256sum
       } | sha256sum | cut -c1-16)
out="$CACHE/$key"
archive="$out/kvscale-$VERSION.oci.tar"
twin_archive="$out/engine-twin-$VERSION.oci.tar"
if [[ -f "$archive" && -f "$twin_archive" ]]; then printf '%s\n' "$archive" "$twin_archive"; exit 0; fi
mkdir -p "$out"

base_tar="$CACHE/base-$SUITE-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-12).tar"
if [[ ! -f "$base_tar" ]]; then
  mmdebstrap --variant=apt --format=tar --include="$BASE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    "$SUITE" "$base_tar.part" >&2
  mv "$base_tar.part" "$base_tar"
fi
base_ref="localhost/kvscale-base:$SUITE"
container=$("${B[@]}" from scratch)
"${B[@]}" add "$container" "$base_tar" / >/dev/null
"${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
"${B[@]}" commit -q --rm "$container" "$base_ref" >/dev/null

# RUN steps reach PyPI through the host's network (chroot isolation); the host's CA bundle and
# a pip.conf naming it are mounted for the build only, never part of the image.
pipconf="$out/pip.conf"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$pipconf"
# --layers: the second target reuses the builder and runtime stages the first one made.
for target in kvscale engine-twin; do
  "${B[@]}" build --isolation chroot --layers --target "$target" \
    -v "$pipconf:/etc/pip.conf:ro" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg BASE_IMAGE="$base_ref" --build-arg VERSION="$VERSION" \
    -f Containerfile -t "ghcr.io/kvscale/$target:$VERSION" . >&2
  file="$out/$target-$VERSION.oci.tar"
  "${B[@]}" push -q "ghcr.io/kvscale/$target:$VERSION" "oci-archive:$file.part:ghcr.io/kvscale/$target:$VERSION" >&2
  mv "$file.part" "$file"
done
rm -f "$pipconf"
printf '%s\n' "$archive" "$twin_archive"
