"""``python -m algoroom`` / the ``algoroom`` console script: read the environment, serve."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from . import __version__, create_app
from .settings import Settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="algoroom", description="Algoroom collaborative coding server")
    parser.add_argument("--host", help="interface to listen on (env HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env PORT, default 8000)")
    parser.add_argument("--version", action="version", version=f"algoroom {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(host=args.host, port=args.port)
    except ValueError as error:
        sys.exit(f"algoroom: {error}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda line: logging.getLogger("algoroom").info(line.strip()),
    )


if __name__ == "__main__":
    main()
