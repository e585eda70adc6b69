"""The API server relay copies bytes both ways and closes when either side does (loopback)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kvscale.localstack import network, relay


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


async def _round_trip() -> tuple[bytes, bytes]:
    upstream = await asyncio.start_server(_echo, network.LOOPBACK, 0)
    target_port = upstream.sockets[0].getsockname()[1]
    (port,) = network.free_ports(1)
    task = asyncio.create_task(relay.serve(network.LOOPBACK, port, network.LOOPBACK, target_port))
    try:
        for _ in range(100):  # the relay binds asynchronously
            try:
                reader, writer = await asyncio.open_connection(network.LOOPBACK, port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"relay never listened on {port}")
        big = b"x" * 300_000  # several reads' worth: the copy loops
        writer.write(b"hello ")
        writer.write(big)
        writer.write_eof()
        answer = await reader.read(-1)
        writer.close()
        return answer, b"HELLO " + big.upper()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        upstream.close()
        await upstream.wait_closed()


def test_bytes_pass_through_the_relay_both_ways() -> None:
    answer, expected = asyncio.run(_round_trip())
    assert answer == expected


def test_bad_ports_are_refused_naming_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert relay.main(["127.0.0.1", "http", "127.0.0.1", "1"]) == 2
    assert "ports = 'http', '1': must be integers" in capsys.readouterr().err


def test_missing_arguments_print_the_usage() -> None:
    assert relay.main([]) == 2
