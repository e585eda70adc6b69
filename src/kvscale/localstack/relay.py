"""A TCP relay from the real node's veth to the API server on 127.0.0.1. Does I/O.

The API server listens on 127.0.0.1 only, which inside the node's network namespace is the
namespace's own loopback. The relay listens on the host end of the veth (an address only the
host and that namespace can reach) and copies bytes both ways; TLS passes through untouched, so
the node's clients still verify the API server's certificate and present their own.

Run: python -m kvscale.localstack.relay LISTEN_HOST PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (a half-close: the other direction may go on)."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def serve(listen_host: str, port: int, target_host: str, target_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                with contextlib.suppress(ConnectionError, OSError):
                    end.close()

    server = await asyncio.start_server(handle, listen_host, port)
    print(f"relay {listen_host}:{port} -> {target_host}:{target_port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        port, target_port = int(argv[1]), int(argv[3])
    except ValueError:
        print(f"ports = {argv[1]!r}, {argv[3]!r}: must be integers", file=sys.stderr)
        return 2
    asyncio.run(serve(argv[0], port, argv[2], target_port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
