"""HTTP(S) probes of the local control plane's health endpoints and API. Does network I/O.

Only loopback URLs are probed; TLS is verified against the cluster's own CA, and the API server
is asked as the admin (client certificate), so the answers do not depend on anonymous access.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import ssl
import urllib.error
import urllib.parse
import urllib.request

_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class Result:
    """One probe: whether it passed and a short human-readable reason."""

    ok: bool
    detail: str


def tls_context(
    ca_file: pathlib.Path,
    client_cert: pathlib.Path | None = None,
    client_key: pathlib.Path | None = None,
) -> ssl.SSLContext:
    """A client TLS context trusting only `ca_file`, optionally presenting a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if client_cert is not None:
        context.load_cert_chain(str(client_cert), None if client_key is None else str(client_key))
    return context


def _check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"url = {url!r}: only loopback URLs are probed")


def get(
    url: str, context: ssl.SSLContext | None = None, timeout_s: float = _TIMEOUT_S
) -> tuple[int, bytes]:
    """GET `url`; returns (status, body), status 0 when nothing answered."""
    _check_loopback(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return 0, str(reason).encode()


def probe(url: str, context: ssl.SSLContext | None = None) -> Result:
    """Pass when `url` answers 200 (the /healthz, /readyz, /health family)."""
    status, body = get(url, context)
    text = body.decode("utf-8", "replace").strip()
    if status == 200:
        return Result(True, text[:200] or "ok")
    summary = text.splitlines()[-1] if text else ""
    if status == 0:
        return Result(False, f"no answer: {summary}")
    # /readyz lists failing checks as "[-]name failed"; those are the useful part.
    failing = [line for line in text.splitlines() if line.startswith("[-]")]
    return Result(False, f"HTTP {status}: {'; '.join(failing) or summary}"[:500])


def etcd(url: str) -> Result:
    """Pass when etcd's /health says {"health": "true"}."""
    status, body = get(url)
    if status != 200:
        return Result(False, f"HTTP {status}: {body[:200]!r}")
    try:
        healthy = json.loads(body).get("health") == "true"
    except (ValueError, AttributeError):
        return Result(False, f"unexpected answer {body[:200]!r}")
    return Result(healthy, body.decode("utf-8", "replace").strip())


def get_json(url: str, context: ssl.SSLContext) -> object | None:
    """The JSON document at `url`, or None when it does not answer 200 with JSON."""
    status, body = get(url, context)
    if status != 200:
        return None
    try:
        document: object = json.loads(body)
    except ValueError:
        return None
    return document
