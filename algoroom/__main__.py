"""``python -m algoroom`` / the ``algoroom`` console script: read the environment, serve.

``--workers N`` starts N server processes sharing the port through ``SO_REUSEPORT`` (the
kernel spreads connections over them). They behave as one server through Redis, so it
requires ``ALGOROOM_REDIS_URL`` and a store every process can open (not ``memory://``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys

from aiohttp import web

from . import __version__, create_app
from .settings import Settings

log = logging.getLogger("algoroom")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="algoroom", description="Algoroom collaborative coding server")
    parser.add_argument("--host", help="interface to listen on (env HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env PORT, default 8000)")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (needs ALGOROOM_REDIS_URL)"
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"algoroom {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(host=args.host, port=args.port)
        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        if args.workers > 1 and not settings.redis_url:
            raise ValueError("--workers > 1 needs ALGOROOM_REDIS_URL so the processes act as one")
        if args.workers > 1 and settings.database_url.startswith("memory:"):
            raise ValueError("--workers > 1 needs a shared store, not memory://")
    except ValueError as error:
        sys.exit(f"algoroom: {error}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.workers > 1:
        sys.exit(supervise(args.workers, settings))
    app = create_app(settings)
    app.on_startup.append(freeze_startup_objects)  # after every cleanup_ctx has started
    web.run_app(
        app,
        loop=new_event_loop(),
        host=settings.host,
        port=settings.port,
        reuse_port=args.reuse_port or None,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda line: log.info(line.strip()),
    )


async def freeze_startup_objects(app: web.Application) -> None:
    """Exempt everything alive once the server has started from the cyclic garbage collector.

    Modules, schemas, routes and the OpenAPI document are ~50,000 objects that live as long
    as the process; each full collection walked them all again (~10 ms with the loop
    stopped: a stall for every socket and request). New objects are still collected.
    """
    gc.collect()
    gc.freeze()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a dependency except on Windows), else asyncio's own.

    uvloop's C transports and scheduler make each request and each socket write cheaper;
    the seed's uvicorn used it too (see ``bench/bench_server.py``).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def supervise(workers: int, settings: Settings) -> int:
    """Run ``workers`` children on one port; forward SIGTERM/SIGINT; stop all if one dies."""
    command = [sys.executable, "-m", "algoroom", "--reuse-port", "--host", settings.host, "--port", str(settings.port)]
    children = [subprocess.Popen(command, env=os.environ.copy()) for _ in range(workers)]
    log.info("started %d workers on %s:%d: pids %s", workers, settings.host, settings.port,
             ", ".join(str(c.pid) for c in children))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pid, status = os.wait()  # the first child to exit ends the group
    forward(signal.SIGTERM, None)
    for child in children:
        if child.pid != pid:
            child.wait()
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else 1


if __name__ == "__main__":
    main()
