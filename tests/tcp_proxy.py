"""A TCP proxy for tests that can go silent without closing anything: a Redis as its clients see it when
its host fails, the network partitions, or a NAT forgets their connections.

`StallingProxy` (asyncio) forwards bytes both ways between its clients and one upstream address, and:

- `stall()`: no byte, and no close, goes through any connection, open or new, until `resume()`;
- `forget()`: the connections open now never carry another byte and are never closed (as after a NAT
  lost its state), while new ones work.

Each side keeps its socket open throughout, so only a client's own timeouts or heartbeats can notice.
(The proxy's kernel still acknowledges what clients send, so TCP keepalive cannot notice: this tests
what the application does.)

`ProxyProcess` runs it in a process of its own (`python tests/tcp_proxy.py UPSTREAM_PORT`, driven
through stdin), so that its traffic does not wait on a busy test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)
class _Link:
    """One proxied connection: both sockets, and whether bytes may flow between them."""

    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class StallingProxy:
    """Listens on 127.0.0.1 (`port`) and forwards to `upstream_host:upstream_port`."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._stalled = False
        self._links: set[_Link] = set()
        #: Forgotten links: kept (never closed, never flowing) until the proxy stops.
        self._forgotten: list[_Link] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        self._stalled = True
        for link in self._links:
            link.flowing.clear()

    def resume(self) -> None:
        self._stalled = False
        for link in self._links:
            link.flowing.set()

    def forget(self) -> None:
        for link in self._links:
            link.flowing.clear()
        self._forgotten += self._links
        self._links = set()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in [*self._links, *self._forgotten]:
            for pump in link.pumps:
                pump.cancel()
            for writer in link.writers:
                writer.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:  # upstream down (a Redis restart): refuse, as a direct connection would be
            client_writer.close()
            return
        link = _Link(writers=[client_writer, upstream_writer])
        if not self._stalled:
            link.flowing.set()
        self._links.add(link)
        link.pumps = [
            asyncio.create_task(self._pump(link, client_reader, upstream_writer)),
            asyncio.create_task(self._pump(link, upstream_reader, client_writer)),
        ]

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; an end (EOF or error) closes the whole link, once bytes may flow."""
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""
                await link.flowing.wait()  # stalled: hold the bytes, and an end too
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self._links.discard(link)
            for each in link.writers:
                each.close()


class ProxyProcess:
    """`StallingProxy` in a child process; `stall`, `resume` and `forget` return once they took effect."""

    def __init__(self, upstream_port: int):
        self.popen = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(upstream_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdout is not None
        self.port = int(self.popen.stdout.readline().split()[-1])

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stall(self) -> None:
        self._say("stall")

    def resume(self) -> None:
        self._say("resume")

    def forget(self) -> None:
        self._say("forget")

    def stop(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def _say(self, command: str) -> None:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        answer = self.popen.stdout.readline().strip()
        if answer != f"ok {command}":
            raise RuntimeError(f"the proxy answered {answer!r} to {command!r}")


async def _main(upstream_port: int) -> None:
    proxy = StallingProxy(upstream_port)
    await proxy.start()
    print(f"listening {proxy.port}", flush=True)
    commands = {"stall": proxy.stall, "resume": proxy.resume, "forget": proxy.forget}
    try:
        while line := (await asyncio.to_thread(sys.stdin.readline)).strip():  # stdin closed: stop
            commands[line]()
            print(f"ok {line}", flush=True)
    finally:
        await proxy.aclose()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
