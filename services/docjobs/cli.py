"""The `docjobs` command."""

from __future__ import annotations

import argparse
import logging
import sys

from .settings import SettingsError, environ


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="docjobs", description="Async document-generation jobs")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the whole stack on this machine (what `make run` runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "up":
            from .stack import up

            raise SystemExit(up(environ()))
    except SettingsError as exc:
        print(f"docjobs: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
