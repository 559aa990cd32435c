"""The lines an interactive shell reads, rebuilt from the keys sent: a subset of readline's editing.

Owns a pure line editor (no I/O) that applies what bash's readline (emacs mode) and the terminal's
line discipline do with each key: insertion, cursor moves, deletions, kills and yank, ^C, ^V. A
line whose meaning depends on the shell's own state (tab completion, history recall and search,
undo, unknown sequences) is marked inexact: recording/commands.py then reads it off the screen.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

MAX_LINE_CHARS = 8192
# Bytes of one escape sequence we parse before giving up on it (CSI parameters are short).
_MAX_ESCAPE = 16

_ESC = "\x1b"
_WORD_DELIMITERS = " \t"


@dataclass(frozen=True)
class Line:
    """One line the shell reads: its text and whether the keys alone determine it."""

    text: str
    exact: bool


def _is_word_char(char: str) -> bool:
    # readline's words (backward-word, kill-word) are runs of letters and digits.
    return char.isalnum()


class LineEditor:
    """Feed keys in order; each Enter yields the line as the shell will read it.

    `started` is True while a line has keys but no Enter yet.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._chars: list[str] = []
        self._cursor = 0
        self._exact = True
        self._kill = ""
        self._escape: str | None = None
        self._literal = False
        self._last_cr = False
        self.started = False

    def feed(self, data: bytes) -> list[Line]:
        """Keys the client sent; returns the lines they completed, in order."""
        lines: list[Line] = []
        for char in self._decoder.decode(data):
            line = self._key(char)
            if line is not None:
                lines.append(line)
        return lines

    # --- keys ----------------------------------------------------------------------------------

    def _key(self, char: str) -> Line | None:
        if self._escape == "" and char in "\r\n":
            self._escape = None  # ESC then Enter: the shell accepts the line as it is
            self._exact = False
        if self._escape is not None:
            self._escape_key(char)
            return None
        if self._literal:  # ^V: the next key is inserted as it is
            self._literal = False
            self._insert(char)
            return None
        is_lf_after_cr = char == "\n" and self._last_cr
        self._last_cr = char == "\r"
        if char in "\r\n":
            return None if is_lf_after_cr else self._accept()
        self.started = True
        if char == _ESC:
            self._escape = ""
        elif char >= " " and char != "\x7f":
            self._insert(char)
        else:
            self._control(char)
        return None

    def _control(self, char: str) -> None:
        chars = self._chars
        if char in "\x7f\x08":  # backward-delete-char (and the tty's ERASE)
            if self._cursor > 0:
                self._cursor -= 1
                del chars[self._cursor]
        elif char == "\x01":  # ^A beginning-of-line
            self._cursor = 0
        elif char == "\x05":  # ^E end-of-line
            self._cursor = len(chars)
        elif char == "\x02":  # ^B backward-char
            self._cursor = max(0, self._cursor - 1)
        elif char == "\x06":  # ^F forward-char
            self._cursor = min(len(chars), self._cursor + 1)
        elif char == "\x04":  # ^D delete-char (on an empty line the shell reads EOF: no line)
            if self._cursor < len(chars):
                del chars[self._cursor]
        elif char == "\x0b":  # ^K kill-line
            self._kill = "".join(chars[self._cursor :])
            del chars[self._cursor :]
        elif char == "\x15":  # ^U unix-line-discard (the tty's KILL)
            self._kill = "".join(chars[: self._cursor])
            del chars[: self._cursor]
            self._cursor = 0
        elif char == "\x17":  # ^W unix-word-rubout (the tty's WERASE)
            start = self._cursor
            while start > 0 and chars[start - 1] in _WORD_DELIMITERS:
                start -= 1
            while start > 0 and chars[start - 1] not in _WORD_DELIMITERS:
                start -= 1
            self._kill_range(start, self._cursor)
        elif char == "\x19":  # ^Y yank
            for kept in self._kill:
                self._insert(kept)
        elif char == "\x14":  # ^T transpose-chars
            self._transpose()
        elif char == "\x03":  # ^C: the line is abandoned
            self._reset()
        elif char == "\x16":  # ^V quoted-insert
            self._literal = True
        elif char == "\x0c":  # ^L clear-screen: no edit
            pass
        else:
            # TAB (completion), ^R/^S (search), ^P/^N (history), ^_ (undo), ^X prefixes, ...:
            # the result depends on the shell's state, so the screen decides.
            self._exact = False

    def _escape_key(self, char: str) -> None:
        sequence = self._escape = (self._escape or "") + char
        if len(sequence) == 1:
            if char in "[O":
                return  # CSI or SS3: parameters follow
            self._escape = None
            self._meta(char)
            return
        final = char
        if not ("\x40" <= final <= "\x7e") and len(sequence) < _MAX_ESCAPE:
            return  # parameter or intermediate byte
        self._escape = None
        body = sequence[1:]
        chars = self._chars
        if body in ("D",):
            self._cursor = max(0, self._cursor - 1)
        elif body in ("C",):
            self._cursor = min(len(chars), self._cursor + 1)
        elif body in ("H", "1~", "7~"):
            self._cursor = 0
        elif body in ("F", "4~", "8~"):
            self._cursor = len(chars)
        elif body == "3~":
            if self._cursor < len(chars):
                del chars[self._cursor]
        elif body in ("200~", "201~"):
            pass  # bracketed paste markers: the pasted keys follow as keys
        else:
            self._exact = False  # history (A/B), function keys, ...

    def _meta(self, char: str) -> None:
        """ESC followed by a key: readline's meta bindings."""
        if char == "b":  # backward-word
            self._cursor = self._word_start(self._cursor)
        elif char == "f":  # forward-word
            self._cursor = self._word_end(self._cursor)
        elif char == "d":  # kill-word
            self._kill_range(self._cursor, self._word_end(self._cursor))
        elif char in "\x7f\x08":  # backward-kill-word
            self._kill_range(self._word_start(self._cursor), self._cursor)
        elif char == "\x03":
            self._reset()
        else:
            self._exact = False  # ESC . (last argument), ESC u/l/c (case), ...

    # --- editing ---------------------------------------------------------------------------------

    def _insert(self, char: str) -> None:
        if len(self._chars) < MAX_LINE_CHARS:
            self._chars.insert(self._cursor, char)
            self._cursor += 1

    def _kill_range(self, start: int, end: int) -> None:
        self._kill = "".join(self._chars[start:end])
        del self._chars[start:end]
        self._cursor = start

    def _transpose(self) -> None:
        chars, cursor = self._chars, self._cursor
        if len(chars) < 2 or cursor == 0:
            return
        if cursor == len(chars):
            cursor -= 1
        chars[cursor - 1], chars[cursor] = chars[cursor], chars[cursor - 1]
        self._cursor = cursor + 1

    def _word_start(self, position: int) -> int:
        chars = self._chars
        while position > 0 and not _is_word_char(chars[position - 1]):
            position -= 1
        while position > 0 and _is_word_char(chars[position - 1]):
            position -= 1
        return position

    def _word_end(self, position: int) -> int:
        chars = self._chars
        while position < len(chars) and not _is_word_char(chars[position]):
            position += 1
        while position < len(chars) and _is_word_char(chars[position]):
            position += 1
        return position

    def _accept(self) -> Line:
        line = Line("".join(self._chars), self._exact)
        self._reset()
        return line

    def _reset(self) -> None:
        self._chars = []
        self._cursor = 0
        self._exact = True
        self.started = False


__all__ = ["MAX_LINE_CHARS", "Line", "LineEditor"]
