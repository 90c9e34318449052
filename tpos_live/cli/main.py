"""``tpos-live``: the parser of every command, and the one place a UserError becomes ``error: ...``."""

from __future__ import annotations

import argparse
import os
import sys

from tpos_live import __version__
from tpos_live.cli import app, evaluate, live, render, train
from tpos_live.errors import UserError

DESCRIPTION = """\
tpos-live: audio-reactive visuals with Stable Diffusion, after The Power of Sound (TPoS).
The sound's meaning (through a learned audio encoder) and its loudness steer every frame."""


def main(argv: list[str] | None = None) -> int:
    # transformers announces missing optional image backends on import; users need none of them.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpos-live", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tpos-live {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    render.add_command(commands)
    live.add_devices_command(commands)
    live.add_command(commands)
    train.add_train_command(commands)
    train.add_import_command(commands)
    app.add_command(commands)
    evaluate.add_command(commands)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
