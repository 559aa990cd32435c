"""The web console under real uvicorn in a background thread on 127.0.0.1:0, for the browser
tests and the benchmark."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import uvicorn

from sandtrap.config import Config
from sandtrap.web.server import bind, serve


class ConsoleThread:
    """`with ConsoleThread(config) as console:` serves until the block ends; `console.url`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sandtrap-web", daemon=True)

    def _main(self) -> None:
        def started(server: uvicorn.Server) -> None:
            self._server = server
            self._started.set()

        try:
            asyncio.run(serve(self.config, self.sock, on_started=started))
        except BaseException as exc:  # handed to the thread that waits
            self.error = exc
        finally:
            self._started.set()

    def __enter__(self) -> ConsoleThread:
        self._thread.start()
        if not self._started.wait(60) or self.error is not None:
            raise RuntimeError(f"console did not start: {self.error!r}")
        assert self._server is not None
        for _ in range(600):
            if self._server.started:
                return self
            threading.Event().wait(0.05)
        raise RuntimeError("console did not start listening")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)
        self.sock.close()
