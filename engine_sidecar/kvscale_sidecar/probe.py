"""One scrape of the engine: GET /health, then GET /metrics, as a `sampler.Outcome`. Does I/O.

Every way a scrape can go wrong becomes an outcome value, never an exception: the poll loop must
outlive any engine. The whole scrape runs under one deadline (`Settings.timeout`), so a hanging
engine costs one timeout per poll and polls never pile up.
"""

from __future__ import annotations

import asyncio
import errno

import aiohttp

from kvscale_sidecar import sampler, settings

# vLLM serves the classic text format; asking for it keeps OpenMetrics out of the parser's way.
_ACCEPT = {"Accept": "text/plain;version=0.0.4"}
_HEALTH_BODY_LIMIT = 64 << 10


class _TooLargeError(Exception):
    pass


async def scrape(session: aiohttp.ClientSession, config: settings.Settings) -> sampler.Outcome:
    """Fetch /health, and /metrics when /health says 200; return how it went."""
    url = config.health_url
    try:
        async with asyncio.timeout(config.timeout):
            status, _ = await _get(session, url, _HEALTH_BODY_LIMIT)
            if status != 200:
                why = " (the engine is not serving)" if status == 503 else ""
                return sampler.Unhealthy(status, f"GET {url} answered HTTP {status}{why}")
            url = config.metrics_url
            try:
                status, body = await _get(session, url, config.max_body_bytes)
            except aiohttp.ClientPayloadError as error:
                return sampler.Answered(200, None, f"GET {url}: body cut short ({error})")
            except _TooLargeError:
                return sampler.Answered(
                    200, None, f"GET {url}: body larger than {config.max_body_bytes} bytes"
                )
    except TimeoutError:
        return sampler.TimedOut(
            f"GET {url}: no answer within {config.timeout:g} s (engine hung or overloaded)"
        )
    except aiohttp.ClientConnectorError as error:
        refused = error.os_error.errno == errno.ECONNREFUSED
        why = "connection refused" if refused else str(error.os_error) or type(error).__name__
        return sampler.Refused(f"GET {url}: {why}")
    except aiohttp.ClientError as error:
        return sampler.Failed(f"GET {url}: {type(error).__name__}: {error}")
    except _TooLargeError:
        return sampler.Failed(f"GET {url}: body larger than {_HEALTH_BODY_LIMIT} bytes")
    if status != 200:
        return sampler.Answered(status, None, f"GET {url} answered HTTP {status}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return sampler.Answered(200, None, f"GET {url}: body is not UTF-8 ({error.reason})")
    return sampler.Answered(200, text)


async def _get(session: aiohttp.ClientSession, url: str, limit: int) -> tuple[int, bytes]:
    async with session.get(url, headers=_ACCEPT) as response:
        chunks = []
        size = 0
        async for chunk in response.content.iter_chunked(64 << 10):
            size += len(chunk)
            if size > limit:
                raise _TooLargeError
            chunks.append(chunk)
        return response.status, b"".join(chunks)
