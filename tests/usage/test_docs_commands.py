"""Every command in a ```bash block of README.md and docs/*.md can be run as written: the
program or module exists, its options parse (the program's own argparse parser, stopped right
after parsing, so nothing is loaded or trained), and its key=value overrides load against the
config the command gives (``--config FILE``, else the defaults). A figure's command is in a
```bash figure block beside the figure (docs/testing.md); those are checked the same way and
must exist. One pass over the docs: no subprocess per command."""

from __future__ import annotations

import argparse
import importlib.util
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import pytest
from conftest import ROOT

from configs.errors import ConfigError
from configs.loader import load_config

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```bash( figure)?[ \t]*\n(.*?)^\1```", re.M | re.S)
# Programs of the system, not of the project: only that they are meant is checked.
SYSTEM_PROGRAMS = {"mkdir", "cp", "wget", "tensorboard", "cd", "export"}
RUN_SH_VARIABLES = re.compile(r"^#   (\w+) ", re.M)


@dataclass
class Command:
    where: str  # file:line
    words: List[str]
    figure: bool


class Parsed(BaseException):
    """Raised right after a program's parser has parsed its command line (not an Exception,
    so no ``except Exception`` in a program swallows it)."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


def shell_lines(body: str) -> List[tuple]:
    """(line offset, text) of each command line: continuations joined, here-document bodies
    and comment lines left out."""
    lines, skip_until, pending = [], None, ""
    for offset, line in enumerate(body.splitlines()):
        if skip_until is not None:
            skip_until = None if line.strip() == skip_until else skip_until
            continue
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            skip_until, line = heredoc.group(1), line[: heredoc.start()]
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            lines.append((offset, text))
    return lines


def doc_commands(paths: Sequence[Path] = DOCS) -> List[Command]:
    """Every simple command (split at && ; |) of every ```bash block of ``paths``."""
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            first_line = text.count("\n", 0, block.start(3)) + 1
            for offset, line in shell_lines(block.group(3)):
                line = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", line)  # a command substitution is a value here
                for part in re.split(r"&&|;|\|", line):
                    words = shlex.split(part, comments=True)
                    if words:
                        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                        where = f"{name}:{first_line + offset}"
                        found.append(Command(where, words, bool(block.group(2))))
    return found


def strip_environment(words: List[str]) -> List[str]:
    """Drop leading ``NAME=value`` assignments (``SMOKE=1 bash run.sh ablation``, a script's
    ``head=...``) and a launcher that runs the rest as given (SLURM's ``srun`` and its options;
    the shell's ``time``, docs/testing.md's timed figures)."""
    while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
        words = words[1:]
    if words[:1] == ["time"]:
        words = words[1:]
    if words[:1] == ["srun"]:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    return words


def parse_program(target: str, module: bool, argv: List[str], monkeypatch) -> argparse.Namespace:
    """Run ``target`` as ``__main__`` with ``argv`` until its parser has parsed them. A parse
    error (argparse's exit 2) fails with the parser's message."""
    with monkeypatch.context() as patch:
        for name in ("parse_args", "parse_intermixed_args"):
            original = getattr(argparse.ArgumentParser, name)

            def stop_after(self, args=None, namespace=None, _original=original):
                raise Parsed(_original(self, args, namespace))

            patch.setattr(argparse.ArgumentParser, name, stop_after)
        patch.setattr(sys, "argv", [target, *argv])
        try:
            if module:
                runpy.run_module(target, run_name="__main__", alter_sys=False)
            else:
                runpy.run_path(str(ROOT / target), run_name="__main__")
        except Parsed as parsed:
            return parsed.namespace
    raise AssertionError(f"{target} ran to the end without parsing a command line")


def check_overrides(namespace: argparse.Namespace) -> None:
    overrides = getattr(namespace, "overrides", None)
    if overrides is None:
        return
    config = getattr(namespace, "config", None)
    load_config(str(ROOT / config) if config else None, overrides)  # a ConfigError names the key


def check_python(words: List[str], monkeypatch) -> None:
    """``python X.py ...``, ``python -m module ...`` or ``python -`` (a here-document)."""
    if words[:1] == ["-"]:
        return
    if words[0] == "-m":
        module, argv = words[1], words[2:]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        if module.split(".")[0] not in {path.name for path in ROOT.iterdir() if path.is_dir()}:
            return  # pytest, venv: not the project's; that they exist is enough
        check_overrides(parse_program(module, True, argv, monkeypatch))
        return
    script, argv = words[0], words[1:]
    assert (ROOT / script).is_file(), f"no program {script}"
    check_overrides(parse_program(script, False, argv, monkeypatch))


def check_torchrun(words: List[str], monkeypatch) -> None:
    """torchrun's own options parse (torch's parser), then the program's as with python."""
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args(words)
    program = ["-m", args.training_script] if args.module else [args.training_script]
    check_python([*program, *args.training_script_args], monkeypatch)


def check_bash(words: List[str]) -> None:
    script = ROOT / words[0]
    assert script.is_file(), f"no script {words[0]}"
    if words[0] == "run.sh":
        sections = re.search(r'^SECTIONS="([^"]+)"', script.read_text(encoding="utf-8"), re.M).group(1).split()
        assert words[1:2] and words[1] in sections, f"run.sh sections are {sections}, not {words[1:]}"


def check_pip(words: List[str]) -> None:
    for flag, value in zip(words, words[1:]):
        if flag in ("-r", "--requirement"):
            assert (ROOT / value).is_file(), f"no requirements file {value}"


def check_command(command: Command, monkeypatch) -> None:
    words = strip_environment(command.words)
    if not words:  # only assignments
        return
    if words[:1] == ["source"]:
        assert words[1].endswith("bin/activate"), words
        return
    program = Path(words[0]).name
    if program in ("python", "python3"):
        check_python(words[1:], monkeypatch)
    elif program == "torchrun":
        check_torchrun(words[1:], monkeypatch)
    elif program == "bash":
        check_bash(words[1:])
    elif program == "pip":
        check_pip(words[1:])
    else:
        assert program in SYSTEM_PROGRAMS, f"unknown program {words[0]!r}"


COMMANDS = doc_commands()
# runpy warns when it runs a module as __main__ that an earlier command already imported.
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {c.words[0]}" for c in COMMANDS])
def test_a_documented_command_parses(command, monkeypatch):
    parses(command, check_command, monkeypatch)


def parses(command: Command, check, monkeypatch) -> None:
    """``check(command, monkeypatch)``, any failure reported with the command and where it is written."""
    try:
        check(command, monkeypatch)
    except SystemExit as stop:
        pytest.fail(f"{command.where}: {shlex.join(command.words)}\nexits {stop.code} while parsing")
    except Exception as error:
        pytest.fail(f"{command.where}: {shlex.join(command.words)}\n{type(error).__name__}: {error}")


def test_the_figures_commands_are_marked():
    """The figures whose command README promises (the quick start's table) keep their mark."""
    figures = {command.where.split(":")[0] for command in COMMANDS if command.figure}
    assert "README.md" in figures, figures


def test_the_checks_can_fail(monkeypatch, tmp_path):
    """A wrong flag, a wrong key, a missing program and a missing section are each caught."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\npython train.py --config configs/quickstart.yaml --epochs 3\n"
        "python test.py RUN data.batchsize=3\npython nowhere.py\nbash run.sh everything\n"
        "python -m benchmarks.efficiency --batch\npython visualize.py retrieval RUN --queries zero\n```\n",
        encoding="utf-8",
    )
    commands = doc_commands([page])
    assert len(commands) == 6
    for command in commands:
        with pytest.raises((AssertionError, SystemExit, ConfigError)):
            check_command(command, monkeypatch)


MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> List[tuple]:
    """(line, target) of every link in ``path`` that is not a URL or an anchor, code spans and blocks left out."""
    text = re.sub(
        r"^```.*?^```", lambda block: "\n" * block.group(0).count("\n"), path.read_text("utf-8"), flags=re.M | re.S
    )
    links = []
    for number, line in enumerate(text.splitlines(), 1):
        for target in MARKDOWN_LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"[a-z]+:|#", target):
                links.append((number, target.split("#")[0]))
    return links


def test_every_relative_link_of_the_docs_resolves():
    broken = [
        f"{doc.relative_to(ROOT)}:{line}: {target}"
        for doc in DOCS
        for line, target in relative_links(doc)
        if not (doc.parent / target).exists()
    ]
    assert sum(len(relative_links(doc)) for doc in DOCS) > 10  # the links are found at all
    assert broken == [], "links resolve from the file's own folder (docs/x.md links 'y.md', not 'docs/y.md')"
