"""The line editor: what bash's readline makes of the keys sent, one line per Enter."""

from __future__ import annotations

import pytest

from sandtrap.recording.lineedit import MAX_LINE_CHARS, Line, LineEditor


def lines(*chunks: bytes) -> list[Line]:
    editor = LineEditor()
    out: list[Line] = []
    for chunk in chunks:
        out += editor.feed(chunk)
    return out


def texts(*chunks: bytes) -> list[str]:
    return [line.text for line in lines(*chunks)]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (b"uname -a\n", "uname -a"),
        (b"ls -la\x7f\x7fl /tmp\r", "ls -l /tmp"),  # DEL
        (b"ls -la\x08\x08l /tmp\r", "ls -l /tmp"),  # ^H
        (b"echo wrong\x15echo right\r", "echo right"),  # ^U
        (b"echo one two\x17three\r", "echo one three"),  # ^W
        (b"echo right\x1b[D\x1b[DXY\r", "echo rigXYht"),  # arrows
        (b"cho hi\x01e\x05!\r", "echo hi!"),  # ^A ^E
        (b"cho hi\x1b[He\x1b[F!\r", "echo hi!"),  # Home End
        (b"echo abc\x02\x02\x0b\r", "echo a"),  # ^B ^K
        (b"abc def\x1bb\x0b\x19\x19\r", "abc defdef"),  # M-b, ^K, yank twice
        (b"echo ab\x14\r", "echo ba"),  # ^T at the end
        (b"echo x\x1b[D\x1b[3~\r", "echo "),  # Delete
        (b"echo x\x02\x04\r", "echo "),  # ^D on a non-empty line deletes
        (b"cd /tmp/dir\x1b\x7f\r", "cd /tmp/"),  # M-DEL
        (b"a bb cc\x01\x1bf\x1bd\r", "a cc"),  # M-f, M-d
        (b"printf '\x16\x01'\r", "printf '\x01'"),  # ^V inserts the next key as it is
        (b"\x1b[200~echo pasted\x1b[201~\r", "echo pasted"),  # bracketed paste markers
        ("echo h\u00e9\u20ac\r".encode(), "echo h\u00e9\u20ac"),
    ],
)
def test_editing_keys(keys: bytes, expected: str) -> None:
    assert lines(keys) == [Line(expected, exact=True)]


def test_one_line_per_enter_in_order_and_crlf_counts_once() -> None:
    script = b"uname -a\r\ncat /proc/cpuinfo | grep name\n\nhistory -c\rexit\n"
    assert texts(script) == ["uname -a", "cat /proc/cpuinfo | grep name", "", "history -c", "exit"]


def test_keys_split_anywhere_give_the_same_lines() -> None:
    script = "echo caf\u00e9 \x1b[D\x1b[Cx\x7f!\r\nid\n".encode()
    whole = texts(script)
    for cut in range(1, len(script)):
        assert texts(script[:cut], script[cut:]) == whole
    assert whole == ["echo caf\u00e9 !", "id"]


def test_ctrl_c_abandons_the_line() -> None:
    assert texts(b"rm -rf /\x03echo safe\r") == ["echo safe"]


@pytest.mark.parametrize(
    "keys",
    [b"cat /etc/pas\t\r", b"\x1b[A\r", b"\x12wget\r", b"ls\x10\r", b"echo \x1b.\r", b"x\x1f\r"],
)
def test_keys_that_depend_on_the_shell_make_the_line_inexact(keys: bytes) -> None:
    (line,) = lines(keys)
    assert not line.exact


def test_an_inexact_line_does_not_taint_the_next() -> None:
    assert [line.exact for line in lines(b"ls\t\rid\r")] == [False, True]


def test_no_enter_no_line_and_started_says_so() -> None:
    editor = LineEditor()
    assert editor.feed(b"wget http://x") == []
    assert editor.started
    editor.feed(b"\r")
    assert not editor.started


def test_long_lines_are_capped() -> None:
    (line,) = lines(b"A" * (MAX_LINE_CHARS + 100) + b"\r")
    assert len(line.text) == MAX_LINE_CHARS
