"""uvicorn for the app: the HTTP protocol with a header read timeout, and the app on a
loopback port in a background thread (tests, benchmarks, notebooks).

    with BackgroundServer(create_app(service)) as url:
        httpx.post(f"{url}/rank", json={...})
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a ``--host`` value) binds loopback only."""
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def header_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol (httptools) that closes a connection whose request line and
    headers have not all arrived ``seconds`` after it opened, or after its previous
    response (uvicorn bounds the idle time between requests, not a request that trickles
    in: without this, slow-header connections are held open for ever). Pass it as
    ``uvicorn.Config(http=...)``."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            waiting = bool(self.pipeline)  # a pipelined request whose headers are in
            super().on_response_complete()
            if not waiting and not self.transport.is_closing():
                self._arm()  # the next request's headers, when they come

    return HeaderTimeoutProtocol


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` (a free port by default) in a thread, with
    the header read timeout ``header_timeout_s``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None,
                 header_timeout_s: float = 10.0) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", access_log=False,
            lifespan="off", http=header_timeout_protocol(header_timeout_s),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_healthy(url: str, proc: Any = None, timeout: float = 300.0,
                 log: Path | None = None) -> None:
    """Poll ``url/healthz`` until it answers 200. ``proc`` (a ``subprocess.Popen`` of
    ``moon serve``) ending first raises with the tail of its output (``log``, else its
    stderr pipe). Raises RuntimeError on timeout."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            if log is not None and log.is_file():
                tail = log.read_text()[-3000:]
            else:
                tail = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            raise RuntimeError(f"moon serve exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"moon serve did not answer {url}/healthz within {timeout:.0f}s")
