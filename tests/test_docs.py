"""The commands the README and docs/ show: every `edgevision ...` line in a fenced shell block names a real
command and real options, each command's --help examples do too, and the blocks marked `runnable` run."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from edgevision.cli.app import EXAMPLES, app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|shell)([^\n]*)\n(.*?)^```", re.S | re.M)


def shell_blocks(path: Path) -> list[tuple[bool, str]]:
    """(marked runnable, text) of each fenced shell block."""
    return [("runnable" in info.split(), body) for _, info, body in FENCE.findall(path.read_text(encoding="utf-8"))]


def edgevision_lines(body: str) -> list[str]:
    """The `edgevision ...` commands of a block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("edgevision "):
            lines.extend(part.strip() for part in line.split("&&") if part.strip().startswith("edgevision "))
    return lines


def options_of(command: str) -> set[str]:
    click_app = typer.main.get_command(app)
    params = click_app.commands[command].params
    return {opt for p in params for opt in (*p.opts, *p.secondary_opts)}


def check_parses(line: str) -> None:
    args = shlex.split(line)[1:]
    if args == ["--help"]:
        return
    command = args[0]
    assert command in EXAMPLES, f"unknown command in {line!r}"
    used = {a.split("=")[0] for a in args[1:] if a.startswith("--")}
    unknown = used - options_of(command) - {"--help"}
    assert not unknown, f"{line!r}: {command} has no {sorted(unknown)}"


DOC_LINES = [(path.name, line) for path in DOCS for _, body in shell_blocks(path) for line in edgevision_lines(body)]
RUNNABLE = [(path.name, line) for path in DOCS for runnable, body in shell_blocks(path) if runnable
            for line in edgevision_lines(body)]


def test_the_docs_show_commands_and_some_run():
    assert len(DOC_LINES) > 20 and len(RUNNABLE) >= 2


@pytest.mark.parametrize("where,line", DOC_LINES, ids=[f"{w}: {l[:60]}" for w, l in DOC_LINES])
def test_every_documented_command_parses(where, line):
    check_parses(line)


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_help_ends_with_examples_that_parse(command):
    epilog = typer.main.get_command(app).commands[command].epilog
    assert epilog.startswith("Examples:") and all(example in epilog for example in EXAMPLES[command])
    for example in EXAMPLES[command]:
        check_parses(example)


def test_help_prints_the_examples():
    done = subprocess.run([sys.executable, "-m", "edgevision", "compress", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, timeout=120)
    assert done.returncode == 0 and "Examples:" in done.stdout
    assert EXAMPLES["compress"][-1] in done.stdout


@pytest.mark.parametrize("where,line", RUNNABLE, ids=[f"{w}: {l}" for w, l in RUNNABLE])
def test_runnable_commands_run(where, line):
    done = subprocess.run([sys.executable, "-m", "edgevision", *shlex.split(line)[1:]], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
