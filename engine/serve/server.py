"""The server around the app: a listening socket, uvicorn, and a clean stop.

Used by `python -m engine.serve` (in the foreground) and by the desktop app (on a thread of its
own, sharing the app's engine). The socket is bound before uvicorn starts, so port 0 works and
the real address is known (and printed) before the first request.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

import uvicorn

from .app import Service, create_app
from .guard import HostPolicy, check_exposure
from .limits import Limits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088


def model_id(engine) -> str:
    """The name clients see: the Hub repository the model came from, else its folder's name."""
    repo = engine.manifest.source.repo_id
    return str(repo).split("/")[-1] if repo else Path(engine.model_dir).name


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port); OSError if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # on Windows the same option lets a second server share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class LocalServer:
    """An OpenAI-compatible server for `engine` on host:port."""

    def __init__(
        self,
        engine,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        allowed_hosts: Iterable[str] = (),
        limits: Limits = Limits(),
    ):
        check_exposure(host, api_key)
        self.host = host
        self.service = Service(engine, model_id(engine), limits)
        self.app = create_app(self.service, HostPolicy.for_bind(host, allowed_hosts), api_key)
        self._socket = bind_socket(host, port)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            limit_concurrency=64,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use (with /v1)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}/v1"

    def serve_forever(self) -> None:
        """Run in this thread until stop() (or Ctrl+C when this is the main thread)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.service.cancel_all()
            self.service.scheduler.shutdown()
            self._socket.close()

    def start(self, timeout: float = 10.0) -> None:
        """Serve on a background thread; returns once it accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, name="iris-serve", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self._server.started:
            raise RuntimeError("The local server did not start.")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop answering: running and waiting generations are cancelled, connections closed."""
        self.service.cancel_all()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
