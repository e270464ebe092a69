"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way: a relay at network distance.

Each chunk read from one side is written to the other ``delay`` seconds later, in order;
chunks in flight overlap (it adds latency, not a bandwidth limit), so one round trip
through it costs ``2 x delay`` more than on loopback. Opening a session costs one round
trip more too (the upstream connection is opened ``delay`` after the client's, and the
greeting comes back ``delay`` later), as a TCP handshake does. Runs its own event loop in a
daemon thread of the calling process.
"""

from __future__ import annotations

import asyncio
import socket
import threading


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DelayProxy:
    """``DelayProxy(target_port, delay)``: listens on ``self.port``, forwards to ``target_port``."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = _free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delaying proxy did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _session(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await asyncio.sleep(self.delay)  # the SYN's way there
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, server_writer),
            self._pump(server_reader, client_writer),
            return_exceptions=True,
        )

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await in_flight.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    target.close()
                    return
                target.write(data)
                await target.drain()

        writer = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await source.read(65536)
                in_flight.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await writer
        except (ConnectionError, OSError):
            writer.cancel()
            target.close()

    def stop(self) -> None:
        """Stop listening and end the loop's thread."""

        def shutdown() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)
