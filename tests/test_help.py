"""Each command's --help says only what applies to that command.

The options a command's --help lists are exactly those its parser accepts
(every listed option is accepted, every option listed by another command and
not by this one is refused as unknown), and no option description names an
option the command does not accept, or another command (the way
"(tokenize: reads stdin when absent)" once sat in generate's help).
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("SQSERVE_BIN", str(ROOT / "build" / "sqserve"))

# "  -m, --model X   text" / "   --chat   text" (cfg_usage's layout)
OPT_LINE = re.compile(r"^\s+(?:-([A-Za-z]), )?--([a-z][a-z0-9-]*)( X)?\s+(.*)$")
LONG_MENTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
SHORT_MENTION = re.compile(r"(?<![\w-])-([A-Za-z])(?![\w-])")


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)


def commands():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    body = r.stdout.split("commands:", 1)[1]
    cmds = re.findall(r"^  (\w+)\s", body, re.M)
    assert len(cmds) >= 7, r.stdout
    return cmds


COMMANDS = commands() if Path(BIN).exists() else []


def options(cmd):
    """{long name: (short letter or None, takes a value, description)}"""
    r = run(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: sqserve {cmd} "), r.stdout[:200]
    out = {}
    for line in r.stdout.split("options:", 1)[1].splitlines():
        if not line.strip():
            continue
        m = OPT_LINE.match(line)
        assert m, f"{cmd} --help: a line that is no option: {line!r}"
        out[m.group(2)] = (m.group(1), bool(m.group(3)), m.group(4))
    assert out, f"{cmd} --help lists no options"
    return out


def description(desc):
    """The free text of a description: without [default] and (env VAR)."""
    desc = re.sub(r" \(env SQSERVE_\w+\)$", "", desc)
    return re.sub(r" \[[^\]]*\]$", "", desc)


pytestmark = pytest.mark.skipif(not Path(BIN).exists(), reason=f"{BIN} not built")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_lists_what_the_parser_accepts(cmd):
    mine = options(cmd)
    everyone = {name for c in COMMANDS for name in options(c)}
    for name, (short, value, _) in mine.items():
        # with --help first nothing runs: a flag prints the help, an option
        # without its value says so; neither is an unknown option
        r = run(cmd, "--help", f"--{name}")
        assert "unknown option" not in r.stderr, f"{cmd} --help lists --{name}, which {cmd} refuses"
        assert (r.returncode == 0) == (not value), f"{cmd} --{name}: {r.returncode} {r.stderr}"
        if short:
            r = run(cmd, "--help", f"-{short}")
            assert "unknown option" not in r.stderr, f"{cmd} --help lists -{short}, which {cmd} refuses"
    for name in sorted(everyone - set(mine)):
        r = run(cmd, "--help", f"--{name}")
        assert r.returncode == 2 and f"unknown option '--{name}'" in r.stderr, \
            f"{cmd} accepts --{name}, which its --help does not list: {r.stderr}"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_text_mentions_only_this_command(cmd):
    mine = options(cmd)
    shorts = {s for s, _, _ in mine.values() if s}
    others = [c for c in COMMANDS if c != cmd]
    other_cmd = re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(map(re.escape, others)))
    for name, (_, _, desc) in mine.items():
        text = description(desc)
        for m in LONG_MENTION.findall(text):
            assert m in mine, f"{cmd} --{name}: the help names --{m}, which {cmd} does not accept: {text!r}"
        for m in SHORT_MENTION.findall(text):
            assert m in shorts, f"{cmd} --{name}: the help names -{m}, which {cmd} does not accept: {text!r}"
        m = other_cmd.search(text)
        assert not m, f"{cmd} --{name}: the help speaks of `{m.group(1)}`, another command: {text!r}"


def test_help_checker_catches_a_leak():
    """The checks above fail on the kind of text they are for."""
    leak = "prompt text (tokenize: reads stdin when absent)"
    others = re.compile(r"(?<![\w-])(tokenize|eval)(?![\w-])")
    assert others.search(description(leak))
    assert LONG_MENTION.findall("with --ref: the reference; default -m's own") == ["ref"]
    assert SHORT_MENTION.findall("default -m's own, x86-64, -1 = random") == ["m"]
    assert not others.search("--startup-eval tokens")
    m = OPT_LINE.match("  -p, --prompt X               prompt text")
    assert m.groups() == ("p", "prompt", " X", "prompt text")
    m = OPT_LINE.match("   --chat                      wrap the prompt")
    assert m.groups() == (None, "chat", None, "wrap the prompt")


def test_generate_prompt_help_is_generate_only():
    """The issue's example: generate -p no longer speaks of tokenize."""
    gen, tok = options("generate")["prompt"][2], options("tokenize")["prompt"][2]
    assert "stdin" not in gen and "tokenize" not in gen
    assert "stdin" in tok
    assert "512" in options("eval")["ctx"][2] and "512" not in options("generate")["ctx"][2]
