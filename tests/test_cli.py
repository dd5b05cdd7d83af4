"""The ``pcgan`` front door: top-level help, unknown commands."""

import importlib
import subprocess
import sys

from pcgan import cli


def test_top_level_help_lists_every_command_with_its_help_line_without_importing_torch():
    code = ("import sys, pcgan.cli as c; text = c._top_level_help(); "
            "print(text); print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.rstrip().endswith("NO TORCH")
    for name, module in cli.COMMANDS.items():
        line = next(l for l in out.splitlines() if l.startswith(f"  {name} "))
        assert line.split(None, 1)[1] == importlib.import_module(module).HELP


def test_unknown_command_names_it_and_exits_2(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and "train" in err


def test_no_arguments_prints_the_help(capsys):
    assert cli.main([]) == 0
    assert "commands:" in capsys.readouterr().out
