"""Commands written inline in README.md and docs/*.md (`` `python -m benchmarks.efa` ``) are
checked as the fenced ones are (tests/usage/test_docs_commands.py): a figure's command quoted in a
sentence must parse as written too. Inline commands may mark optional parts with brackets
(``[--jpeg]``: checked with them), stand for a value with a capital placeholder (``--batch B``:
checked with 1), and end in a comment (``(reads its config.yaml)``, dropped). A program named
alone (`` `python -m utils.report` ``) is a reference to it: that it exists is checked."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import List, Sequence

import pytest
from conftest import ROOT
from test_docs_commands import DOCS, FENCE, Command, check_command, parses

from configs.errors import ConfigError

INLINE = re.compile(r"(?<!`)`((?:python3?|bash|torchrun) [^`]+)`(?!`)")
# Interpreter switches that run no project program (``python -X importtime -c ...``, ``python -I``).
INTERPRETER_ONLY = re.compile(r"^python3? (-I\b|-X\b|-c\b)")
PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*")


def inline_words(text: str) -> List[str]:
    """The words of one inline command: prose after `` (`` or ``, or`` dropped, brackets of
    optional parts and ``...`` removed."""
    text = re.split(r" \(|, or ", text, maxsplit=1)[0]
    text = text.replace("[", " ").replace("]", " ").replace("...", " ")
    words = shlex.split(text)
    for i, word in enumerate(words):
        if PLACEHOLDER.fullmatch(word) and i and words[i - 1].startswith("--"):
            words[i] = "1"
        words[i] = re.sub(r"^(--[\w-]+=)[A-Z][A-Z_]*$", r"\g<1>1", words[i])
    return words


def check_inline(command: Command, monkeypatch) -> None:
    """As a fenced command, but a program named alone, a run.sh section placeholder and a
    torchrun option without its script are references: the program or script must exist."""
    words = command.words
    if words[0] == "torchrun" and not any(w.endswith(".py") or w == "-m" for w in words):
        words = [*words, "train.py"]
    if words[:2] == ["bash", "run.sh"] and PLACEHOLDER.fullmatch(words[2] if len(words) > 2 else "X"):
        words = words[:2]
        assert (ROOT / "run.sh").is_file()
        return
    if len(words) == 3 and words[:2] in (["python", "-m"], ["python3", "-m"]):
        assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
        return
    if len(words) == 2 and words[0] in ("python", "python3"):
        assert (ROOT / words[1]).is_file(), f"no program {words[1]}"
        return
    check_command(Command(command.where, words, command.figure), monkeypatch)


def inline_commands(paths: Sequence[Path] = DOCS) -> List[Command]:
    """Every inline `` `python ...` ``, `` `bash ...` `` and `` `torchrun ...` `` outside fences."""
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        outside = FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)
        for match in INLINE.finditer(outside):
            if INTERPRETER_ONLY.match(match.group(1)):
                continue
            name = path.relative_to(DOCS[0].parent) if path.is_relative_to(DOCS[0].parent) else path.name
            line = outside.count("\n", 0, match.start()) + 1
            found.append(Command(f"{name}:{line}", inline_words(match.group(1)), figure=False))
    return found


COMMANDS = inline_commands()
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")


def test_the_docs_quote_commands_inline():
    assert len(COMMANDS) >= 20 and any(c.words[:2] == ["python", "-m"] for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {' '.join(c.words[:3])}" for c in COMMANDS])
def test_an_inline_command_parses(command, monkeypatch):
    parses(command, check_inline, monkeypatch)


def test_a_renamed_flag_in_an_inline_command_is_caught(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(
        "Measured with `python -m benchmarks.eval_speed [--jpg]` and `python test.py RUN eval.splt=test`,\n"
        "`python -m benchmarks.efa --batch B --our-only` and `python -m benchmarks.nowhere`.\n"
        "```bash\npython -m benchmarks.efa\n```\n",
        encoding="utf-8",
    )
    commands = inline_commands([page])
    assert [c.words[:3] for c in commands] == [
        ["python", "-m", "benchmarks.eval_speed"],
        ["python", "test.py", "RUN"],
        ["python", "-m", "benchmarks.efa"],
        ["python", "-m", "benchmarks.nowhere"],
    ]
    assert commands[2].words[3:5] == ["--batch", "1"]
    for command in commands:
        with pytest.raises((AssertionError, SystemExit, ConfigError)):
            check_inline(command, monkeypatch)
