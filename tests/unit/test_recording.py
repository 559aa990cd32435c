"""The pure asciicast encoder, the command reconstructors and the channel recorder."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

from sandtrap.events import Event, Peer
from sandtrap.paths import cast_file
from sandtrap.recording import recorder as recorder_module
from sandtrap.recording.asciicast import CastEncoder, Header
from sandtrap.recording.commands import LineCommands, TerminalCommands
from sandtrap.recording.recorder import ChannelRecorder, display_size

PROMPT = b"root@web-prod-03:~# "


def test_header_line() -> None:
    line = Header(120, 40, 1700000000, "root session abc channel 0", {"TERM": "xterm"}).line()
    assert line.endswith("\n") and line.count("\n") == 1
    header = json.loads(line)
    assert header == {
        "version": 2,
        "width": 120,
        "height": 40,
        "timestamp": 1700000000,
        "title": "root session abc channel 0",
        "env": {"TERM": "xterm"},
    }


def test_split_multibyte_character_comes_out_whole() -> None:
    encoder = CastEncoder()
    euro = "€".encode()
    assert encoder.data(0.1, "o", b"price " + euro[:2]) == '[0.1, "o", "price "]\n'
    assert encoder.data(0.2, "o", euro[2:] + b"!") == '[0.2, "o", "\\u20ac!"]\n'
    # Input and output are decoded apart: a split in one does not leak into the other.
    assert encoder.data(0.3, "i", euro[:1]) is None
    assert json.loads(encoder.data(0.4, "o", b"x") or "")[2] == "x"
    assert json.loads(encoder.data(0.5, "i", euro[1:]) or "")[2] == "€"


def test_binary_gives_valid_ascii_json_lines_and_monotonic_time() -> None:
    encoder = CastEncoder()
    lines = []
    for index in range(50):
        line = encoder.data(10.0 - index * 0.1, "o", os.urandom(257))
        if line:
            lines.append(line)
    lines += encoder.finish(11.0)
    assert lines
    times = []
    for line in lines:
        assert line.isascii() and line.count("\n") == 1
        moment, code, text = json.loads(line)
        assert code == "o" and isinstance(text, str)
        times.append(moment)
    assert times == sorted(times)  # a clock going back never makes time go back in the cast


def test_finish_flushes_an_unfinished_character() -> None:
    encoder = CastEncoder()
    assert encoder.data(1, "o", b"\xe2\x82") is None
    assert [json.loads(line)[2] for line in encoder.finish(2)] == ["\ufffd"]
    assert json.loads(encoder.resize(3, 100, 30)) == [3, "r", "100x30"]


class Terminal:
    """A TerminalCommands with every line it gives, from input, output and finish, in order."""

    def __init__(self, width: int = 80, height: int = 24, banner: bytes = b"") -> None:
        self.commands = TerminalCommands(width, height)
        self.lines: list[str] = []
        self.output(banner)

    def input(self, data: bytes) -> list[str]:
        return self._add(self.commands.input(data))

    def output(self, data: bytes) -> list[str]:
        return self._add(self.commands.output(data))

    def finish(self) -> list[str]:
        return self._add(self.commands.finish())

    def _add(self, lines: list[str]) -> list[str]:
        self.lines += lines
        return lines


def _terminal() -> Terminal:
    terminal = Terminal(banner=b"Linux web-prod-03\r\n" + PROMPT)
    assert terminal.lines == []
    return terminal


def test_backspace_and_tab_completion() -> None:
    terminal = _terminal()
    # The keys alone say what the line is: it is known at Enter.
    assert terminal.input(b"ls -la\x7f\x7fl /tmp\r") == ["ls -l /tmp"]
    terminal.output(b"ls -la\x08\x1b[K\x08\x1b[Kl /tmp\r\n")
    terminal.output(b"a b\r\n" + PROMPT)
    terminal.input(b"cat /etc/hostn\t")
    terminal.output(b"cat /etc/hostname ")
    # Completion: the screen says what the shell made of it, once the Enter is echoed.
    assert terminal.input(b"\r") == []
    assert terminal.output(b"\r\nweb-prod-03\r\n" + PROMPT) == ["cat /etc/hostname"]
    assert terminal.lines == ["ls -l /tmp", "cat /etc/hostname"]


def test_ctrl_u_arrow_edit_and_completion_listing() -> None:
    terminal = _terminal()
    terminal.input(b"echo wrong\x15")
    terminal.output(b"echo wrong\r" + PROMPT + b"\x1b[K")
    terminal.input(b"echo right\x1b[D\x1b[DXY\r")
    terminal.output(b"echo right\x08\x08XYht\x08\x08")
    terminal.output(b"\r\nrigXYht\r\n" + PROMPT)
    terminal.input(b"ls /\t\t")
    # A tab listing redraws prompt and line below; the last copy is the command.
    terminal.output(b"ls /\r\nbin  etc\r\n" + PROMPT + b"ls /")
    terminal.input(b"etc\r")
    terminal.output(b"etc\r\n")
    assert terminal.lines == ["echo rigXYht", "ls /etc"]


def test_type_ahead_waits_for_the_prompt_and_wraps() -> None:
    terminal = Terminal(30, 5)
    terminal.output(PROMPT)
    terminal.input(b"echo 12345678901234567890 x\rid\r")
    terminal.output(
        b"echo 12345678901234567890 x\r\n12345678901234567890 x\r\n"
        + PROMPT
        + b"id\r\nuid=0(root)\r\n"
        + PROMPT
    )
    assert terminal.lines == ["echo 12345678901234567890 x", "id"]


def test_unechoed_line_is_taken_at_finish() -> None:
    terminal = _terminal()
    terminal.input(b"whoami\r")
    terminal.output(b"whoami")
    terminal.finish()
    assert terminal.lines == ["whoami"]


def test_garbage_output_never_raises() -> None:
    for seed in range(100):
        terminal = _terminal().commands
        assert isinstance(terminal.output(random.Random(seed).randbytes(4096)), list)
        terminal.input(b"id\r\x1b[A\t")
        assert isinstance(terminal.output(random.Random(-seed).randbytes(512) + b"\n"), list)
        terminal.resize(0, 0)
        assert isinstance(terminal.finish(), list)


def test_line_commands_without_pty() -> None:
    lines = LineCommands()
    assert lines.input(b"uname -a\nwget http://x/\xe2") == ["uname -a"]
    assert lines.input(b"\x82\xac\n\n  \n") == ["wget http://x/€"]
    assert lines.input(b"tail") == []
    assert lines.finish() == ["tail"]


def test_recording_path_uses_our_identifiers(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    moment = datetime(2026, 3, 4, tzinfo=UTC)
    assert cast_file(tmp_path, "abc123", 2, moment) == tmp_path / "2026/03/04/abc123-2.cast"


async def test_recorder_flushes_periodically_and_emits_commands(tmp_path: Path) -> None:
    seen: list[Event] = []

    class Sink:
        def emit(self, event: Event) -> None:
            seen.append(event)

    path = tmp_path / "r" / "s-0.cast"
    recorder_module.FLUSH_INTERVAL_SECONDS = 0.05
    try:
        async with ChannelRecorder(
            path,
            Header(80, 24, 0, "t", {}),
            events=Sink(),
            peer=Peer("s", "127.0.0.1", 1, 22),
            channel=0,
            record_input=True,
            commands=TerminalCommands(80, 24),
        ) as recorder:
            recorder.output(PROMPT, 1)
            recorder.input(b"id\r")
            recorder.output(b"id\r\nuid=0\r\n", 1)
            recorder.resize(100, 30)
            await asyncio.sleep(0.2)
            # Written by the flush task while the channel is still open.
            lines = path.read_text().splitlines()
            assert [json.loads(line)[1] for line in lines[1:]] == ["o", "i", "o", "r"]
    finally:
        recorder_module.FLUSH_INTERVAL_SECONDS = 0.5
    assert [(e.eventid, getattr(e, "input", None)) for e in seen] == [("session.command", "id")]


def test_find_casts_in_channel_order_and_by_channel(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sandtrap.analysis.replay import find_casts
    from sandtrap.paths import DataLayout

    layout = DataLayout(tmp_path)
    moment = datetime(2026, 3, 4, tzinfo=UTC)
    for channel in (10, 2, 0):
        path = layout.recording("abc123", channel, moment)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    layout.recording("abc1234", 1, moment).write_bytes(b"")
    found = find_casts(layout.recordings, "abc123")
    assert [p.name for p in found] == ["abc123-0.cast", "abc123-2.cast", "abc123-10.cast"]
    assert find_casts(layout.recordings, "abc123", 2) == [layout.recording("abc123", 2, moment)]
    assert find_casts(layout.recordings, "abc123", 5) == []


def test_pasted_script_echoed_twice_gives_each_line_once() -> None:
    """Type-ahead is echoed by the tty while a command runs, then again by readline at the
    prompt: each line the shell reads is one command, in order (as recorded from bash)."""
    terminal = _terminal()
    terminal.input(b"uname -a\necho hello-$((6*7))\nexit\n")
    terminal.output(b"uname -a\r\necho hello-$((6*7))\r\nexit\r\n")
    terminal.output(b"\x1b[?2004h" + PROMPT + b"uname -a\r\n\x1b[?2004l\r")
    terminal.output(b"Linux web-prod-03 6.1.0 x86_64 GNU/Linux\r\n")
    terminal.output(b"\x1b[?2004h" + PROMPT + b"echo hello-$((6*7))\r\n\x1b[?2004l\rhello-42\r\n")
    terminal.output(b"\x1b[?2004h" + PROMPT + b"exit\r\n\x1b[?2004l\rlogout\r\n")
    terminal.finish()
    assert terminal.lines == ["uname -a", "echo hello-$((6*7))", "exit"]


def test_zero_size_terminal_is_drawn_at_80x24() -> None:
    assert display_size(0, 0) == (80, 24)
    assert display_size(132, 0) == (132, 24)
    assert display_size(100, 30) == (100, 30)
