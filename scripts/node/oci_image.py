"""Pack one static executable into an OCI image layout tar for `ctr images import`.

Usage: python3 oci_image.py NAME EXECUTABLE OUT.tar
NAME is the full image reference (e.g. kvscale.local/pause:3.10); the executable lands at
/<basename> and is the entrypoint. Deterministic (fixed mtimes, sorted JSON), so the same
executable gives the same image digest. No registry is involved: none can be reached here.
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import sys
import tarfile


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _layer(executable: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("tmp", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        data = executable.read_bytes()
        info = tarfile.TarInfo(executable.name)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def pack(name: str, executable: pathlib.Path, out: pathlib.Path) -> None:
    layer_digest, layer = _blob(_layer(executable))
    config_digest, config = _blob(
        _json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [f"/{executable.name}"], "User": "65534:65534"},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        )
    )
    manifest_digest, manifest = _blob(
        _json(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        )
    )
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
    )
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
        **{
            f"blobs/sha256/{digest.split(':')[1]}": data
            for digest, data in (
                (layer_digest, layer),
                (config_digest, config),
                (manifest_digest, manifest),
            )
        },
    }
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    pack(sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))
