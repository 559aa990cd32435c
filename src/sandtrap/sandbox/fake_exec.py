"""Fake processes for the fake engine: a tiny interpreter behind the ExecStream protocol.

Each exec runs the interpreter (echo, cat, whoami, pwd, hostname, exit N, stty size, printenv,
yes, sleep, and a prompt loop for shells) as a task owned by its stream and cancelled by `close()`
or `abort()`. Never evidence that a feature works; `sandbox/fake.py` owns the containers.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass, field
from typing import Final

from sandtrap.sandbox.base import STDERR, STDOUT, Chunk

_EOF = None
# What `wait()` reports once the stream was aborted (as the Docker backend's streams do).
ABORTED_STATUS: Final = 255


@dataclass
class ExecRecord:
    """One exec call, as the fake saw it (for assertions)."""

    argv: tuple[str, ...]
    user: str
    tty: bool
    env: dict[str, str]
    workdir: str | None
    size: tuple[int, int] | None
    resizes: list[tuple[int, int]] = field(default_factory=list)
    stdin_closed: bool = False
    closed: bool = False


class FakeExecStream:
    """A running fake process; output is bounded so a flood applies back-pressure."""

    def __init__(self, hostname: str, record: ExecRecord) -> None:
        self._hostname = hostname
        self.record = record
        self._aborted = False
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._output: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=16)
        self._size = record.size or (80, 24)
        self._task = asyncio.ensure_future(self._run())
        self._pending = b""
        self._stdin_eof = False

    # --- ExecStream ------------------------------------------------------------------------------

    async def read(self) -> Chunk | None:
        if self._aborted or (self._task.done() and self._output.empty()):
            return None
        return await self._output.get()

    async def write(self, data: bytes) -> None:
        if not self.record.stdin_closed:
            self._stdin.put_nowait(data)

    async def close_stdin(self) -> None:
        if not self.record.stdin_closed:
            self.record.stdin_closed = True
            self._stdin.put_nowait(_EOF)

    async def resize(self, width: int, height: int) -> None:
        self.record.resizes.append((width, height))
        self._size = (width, height)

    async def wait(self) -> int:
        if self._aborted:
            return ABORTED_STATUS
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._aborted and self._task.cancelled():
                return ABORTED_STATUS  # aborted while we waited
            raise

    def abort(self) -> None:
        """The container died: readers see end of output, `wait()` reports ABORTED_STATUS."""
        if self._aborted:
            return
        self._aborted = True
        self.record.closed = True
        self._task.cancel()
        while not self._output.empty():
            self._output.get_nowait()
        self._output.put_nowait(_EOF)  # wakes a reader blocked on the empty queue

    async def close(self) -> None:
        self.record.closed = True
        if not self._task.done():
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise
        except Exception:  # noqa: S110 - the fake's failure already reached wait()
            pass

    # --- the interpreter -------------------------------------------------------------------------

    async def _out(self, text: str | bytes, stream: int = STDOUT) -> None:
        data = text.encode() if isinstance(text, str) else text
        if self.record.tty:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            stream = STDOUT
        if data:
            await self._output.put(Chunk(stream, data))

    async def _read_stdin(self) -> bytes | None:
        if self._stdin_eof:
            return None
        data = await self._stdin.get()
        if data is None:
            self._stdin_eof = True
        return data

    async def _readline(self) -> str | None:
        """A line of input; with a TTY, typed bytes are echoed and CR ends the line."""
        while True:
            for sep in (b"\r", b"\n"):
                index = self._pending.find(sep)
                if index >= 0:
                    line, self._pending = self._pending[:index], self._pending[index + 1 :]
                    if self.record.tty:
                        await self._out("\n")
                    return line.decode(errors="replace")
            data = await self._read_stdin()
            if data is None:
                if self._pending:
                    line, self._pending = self._pending, b""
                    return line.decode(errors="replace")
                return None
            if self.record.tty:
                await self._out(data.replace(b"\r", b""))
            self._pending += data

    async def _run(self) -> int:
        # Cancelled (by close()): no EOF is queued; nobody reads any more.
        argv = self.record.argv
        if argv[-1].endswith("exec -a -bash /bin/bash"):
            status = await self._shell()  # the login wrapper of Persona.login_shell
        elif argv[-2:-1] == ("-c",):
            status = await self._command(argv[-1])
        elif argv[0] == "/usr/sbin/sshd":
            # The fake image has no agent (sandbox.agent): its sshd refuses the pool's option.
            await self._out(f"{argv[0]}: unknown option -- {' '.join(argv[1:])[:40]}\n", STDERR)
            status = 255
        elif argv[0].endswith("sftp-server"):
            while await self._read_stdin() is not None:
                pass
            status = 0
        else:
            status = await self._shell()
        await self._output.put(_EOF)
        return status

    async def _shell(self) -> int:
        sigil = "#" if self.record.user == "root" else "$"
        status = 0
        while True:
            if self.record.tty:
                await self._out(f"{self.record.user}@{self._hostname}:~{sigil} ")
            line = await self._readline()
            if line is None:
                return status
            status = await self._command(line)
            if line.strip().split()[:1] == ["exit"]:
                return status

    async def _command(self, line: str) -> int:
        status = 0
        for part in line.split(";"):
            status = await self._simple(part.strip())
        return status

    async def _simple(self, line: str) -> int:
        try:
            words = shlex.split(line)
        except ValueError:
            await self._out("bash: syntax error\n", STDERR)
            return 2
        if not words:
            return 0
        stream = STDOUT
        if words[-1] == ">&2":
            words, stream = words[:-1], STDERR
        name, args = words[0], words[1:]
        if name == "echo":
            await self._out(" ".join(args) + "\n", stream)
        elif name == "cat":
            while (data := await self._read_stdin()) is not None:
                await self._out(data, stream)
        elif name == "whoami":
            await self._out(self.record.user + "\n", stream)
        elif name == "pwd":
            await self._out((self.record.workdir or "/") + "\n", stream)
        elif name == "hostname":
            await self._out(self._hostname + "\n", stream)
        elif name == "exit":
            return int(args[0]) if args and args[0].isdigit() else 0
        elif name == "stty" and args == ["size"]:
            await self._out(f"{self._size[1]} {self._size[0]}\n", stream)
        elif name == "printenv":
            for key in args:
                if key in self.record.env:
                    await self._out(self.record.env[key] + "\n", stream)
        elif name == "yes":
            text = ((args[0] if args else "y") + "\n") * 1024
            while True:
                await self._out(text, stream)
        elif name == "sleep":
            await asyncio.sleep(float(args[0]) if args else 0)
        else:
            await self._out(f"bash: {name}: command not found\n", STDERR)
            return 127
        return 0


__all__ = ["ABORTED_STATUS", "ExecRecord", "FakeExecStream"]
