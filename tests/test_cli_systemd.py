"""Quoting for systemd (``cli._systemd._systemd_quote``, used by
`systemd-unit` and `export systemd`): every word reads back, as systemd
reads a unit file, as the word it was; plain words stay unquoted."""

from __future__ import annotations

import pytest
from upsonic_server_manager.cli import _systemd_quote

AWKWARD = [
    "plain",
    "",
    "two words",
    "100%",
    "%n",
    "$HOME",
    "${HOME}",
    'say "hi"',
    "back\\slash",
    "tab\there",
    "KEY=a b",
    "ünïcode",
    "--opt=x,y",
    "a'b",
]


def systemd_words(line: str, dollars: bool = True) -> list[str]:
    """Splits a unit line as systemd does, for the quoting _systemd_quote
    uses: specifiers (%%) and, in ExecStart=, variables ($$) undoubled,
    double-quoted words with \\\\ and \\" escapes."""
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        word = ""
        if line[i] == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                word += line[i]
                i += 1
            i += 1
        else:
            while i < len(line) and line[i] != " ":
                word += line[i]
                i += 1
        word = word.replace("%%", "%")
        words.append(word.replace("$$", "$") if dollars else word)
    return words


@pytest.mark.parametrize("word", AWKWARD)
def test_every_word_reads_back_as_itself(word: str) -> None:
    assert systemd_words(_systemd_quote(word)) == [word]
    assert systemd_words(_systemd_quote(word, dollars=False), dollars=False) == [word]


def test_a_command_line_reads_back_word_for_word() -> None:
    line = " ".join(_systemd_quote(w) for w in AWKWARD)
    assert systemd_words(line) == AWKWARD


def test_plain_words_stay_unquoted_and_the_rest_is_quoted() -> None:
    for word in ("uvicorn", "-m", "/usr/bin/python3", "app.main:app", "--port=8000", "a@b+c"):
        assert _systemd_quote(word) == word
    assert _systemd_quote("") == '""'
    assert _systemd_quote("two words") == '"two words"'


def test_specifiers_and_variables() -> None:
    assert _systemd_quote("100%") == '"100%%"'
    # ExecStart= expands $VAR: doubled there, kept in Environment= lines.
    assert _systemd_quote("$HOME") == '"$$HOME"'
    assert _systemd_quote("$HOME", dollars=False) == '"$HOME"'
