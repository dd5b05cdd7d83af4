"""The ``pcgan`` console script: one front door with a subcommand per task.

Each subcommand lives in its own module, registered below by import path so that ``pcgan
--help`` stays instant and heavy packages (Open3D, lpips) load only for the command that needs
them. A command module provides::

    HELP: str                                  # one line for ``pcgan --help``
    EPILOG: str                                # examples, shown by ``pcgan CMD --help``
    def add_arguments(parser) -> None          # declares its flags
    def run(args) -> int                       # does the work; returns the exit code

User mistakes raise :class:`pcgan.errors.PcganError`; the CLI prints them as one line and
exits with status 2. Library code logs; the CLI configures logging and owns the console.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from pcgan.errors import PcganError

# name -> module path. Order is the order shown in ``pcgan --help``.
COMMANDS: dict[str, str] = {
    "synth-faces": "data_tools.synth_faces",
    "preprocess": "data_tools.preprocess",
    "dataset": "data_tools.dataset_cli",
    "train": "pcgan.train_cli",
    "generate": "pcgan.generate_cli",
    "mix": "pcgan.mix_cli",
    "interpolate": "pcgan.interpolate_cli",
    "export": "pcgan.export_cli",
    "eval": "pcgan.eval_cli",
    "invert": "pcgan.invert_cli",
    "train-encoder": "pcgan.train_encoder_cli",
    "view": "viewers.view_cli",
    "render": "viewers.render_cli",
    "demo": "pcgan.demo_cli",
}

EXIT_USER_ERROR = 2


def _load(name: str):
    return importlib.import_module(COMMANDS[name])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that subcommand is imported and declared."""
    parser = argparse.ArgumentParser(
        prog="pcgan",
        description="StyleGAN2 for 3D faces as coloured point clouds (XYZRGB grids).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name)  # placeholder so argparse accepts the name
            continue
        module = _load(name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _help_line(name: str) -> str:
    """A command's ``HELP`` string, read from its source without importing it (importing would
    pull in torch or Open3D: seconds for ``pcgan --help``); falls back to importing."""
    spec = importlib.util.find_spec(COMMANDS[name])
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "HELP"):
                return ast.literal_eval(node.value)
    except (OSError, TypeError, ValueError, SyntaxError):
        pass
    return _load(name).HELP


def _top_level_help() -> str:
    lines = ["usage: pcgan [-h] [-v] COMMAND ...", "",
             "StyleGAN2 for 3D faces as coloured point clouds (XYZRGB grids).", "", "commands:"]
    for name in COMMANDS:
        lines.append(f"  {name:<14}{_help_line(name)}")
    lines += ["", "Run `pcgan COMMAND --help` for a command's flags and examples."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None or command not in COMMANDS:
        if command is None and any(a in ("-h", "--help") for a in argv) or not argv:
            print(_top_level_help())
            return 0
        print(f"pcgan: error: unknown command {command!r}; one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return EXIT_USER_ERROR
    args = build_parser(only=command).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._module.run(args) or 0)
    except PcganError as exc:
        print(f"pcgan {command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"pcgan {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
