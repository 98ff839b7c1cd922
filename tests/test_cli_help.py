"""Consistent help (issue 13, "Small things"): every option of every command has help text, every command says
what it does, ``--seed`` means the same everywhere, and errors share one prefix."""
from __future__ import annotations

import argparse

import pytest

from calibrate.cli import build_parser
from calibrate.cli.argtypes import SEED_HELP


def _commands(parser=None, name="eical"):
    parser = parser or build_parser()
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            for n, sp in a.choices.items():
                yield f"{name} {n}", (sp, helps.get(n))
                yield from _commands(sp, f"{name} {n}")


ALL = dict(_commands())
COMMANDS = {k: v[0] for k, v in ALL.items()}


def test_every_option_of_every_command_has_help_text():
    missing = [f"{cmd} {a.option_strings or a.dest}" for cmd, p in COMMANDS.items() for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
               and (not a.help or a.help == argparse.SUPPRESS)]
    assert not missing, missing


def test_every_command_says_what_it_does():
    silent = [cmd for cmd, (p, help_line) in ALL.items() if not help_line]
    assert not silent, silent  # a line in `eical --help`
    for cmd in ("eical report", "eical calibrate", "eical profiles validate", "eical profiles show", "eical diagnose",
                "eical simulate", "eical track", "eical yield"):
        assert COMMANDS[cmd].description, cmd


def _seed(p):
    return next((a for a in p._actions if "--seed" in a.option_strings), None)


@pytest.mark.parametrize("cmd", ["eical simulate", "eical calibrate", "eical track", "eical diagnose",
                                 "eical chip export"])
def test_seed_means_the_same_everywhere(cmd):
    a = _seed(COMMANDS[cmd])
    assert a.help == SEED_HELP and not a.required
    assert a.type("7") == 7
    with pytest.raises(argparse.ArgumentTypeError):
        a.type("-1")


def test_profiles_validate_takes_a_name_as_show_does(capsys):
    from calibrate.cli import main

    assert main(["profiles", "validate", "bss2"]) == 0
    out = capsys.readouterr().out
    assert "ok (bss2" in out and out.count("\n") == 1
    assert main(["profiles", "validate", "no-such-profile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eical: error: ")


@pytest.mark.parametrize("interrupt, said", [(KeyboardInterrupt(), "Ctrl-C"), (KeyboardInterrupt("SIGTERM"), "SIGTERM")])
def test_an_interrupted_command_says_what_stopped_it(monkeypatch, capsys, interrupt, said):
    """Ctrl-C and a batch system's SIGTERM (which the long commands turn into an interrupt) exit 130 with one line
    naming which of the two it was."""
    from calibrate.cli import main

    def stopped(args):
        raise interrupt

    monkeypatch.setattr("calibrate.cli.board._cmd_devices", stopped)
    assert main(["devices"]) == 130
    assert capsys.readouterr().err == f"eical: error: interrupted ({said})\n"
