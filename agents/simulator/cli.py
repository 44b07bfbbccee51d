"""Run the simulator as a foreground process until SIGINT or SIGTERM.

Used by ``python manage.py run_simulator`` and ``python -m agents.simulator``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from .server import DEFAULT_STALL_SECONDS, SimulatorServer

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the --host, --port and --stall-seconds options to `parser`."""
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="Loopback address to listen on (default: %(default)s).",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port to listen on; 0 picks a free one (default: %(default)s).",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=DEFAULT_STALL_SECONDS,
        help=(
            "Seconds the stall scenario holds a response open before closing "
            "it (default: %(default)s)."
        ),
    )


def serve_until_signal(
    server: SimulatorServer, on_ready: Callable[[str], None]
) -> None:
    """Start `server`, call `on_ready` with its URL and serve until a signal.

    SIGINT and SIGTERM stop the server, and the previous handlers are
    restored afterwards. Call it from the main thread, because Python runs
    signal handlers only there.
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        logger.info("Simulator received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous = {
        signum: signal.signal(signum, request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        on_ready(server.start())
        # A timed wait returns to the interpreter regularly, so the signal
        # handler runs promptly.
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.simulator",
        description="Serve the local Anthropic Messages API simulator.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server = SimulatorServer(args.host, args.port, stall_seconds=args.stall_seconds)
    except ValueError as error:
        parser.error(str(error))

    def announce(url: str) -> None:
        sys.stdout.write(f"Simulator listening on {url}\n")
        sys.stdout.flush()

    try:
        serve_until_signal(server, announce)
    except OSError as error:
        sys.stderr.write(f"Could not listen on {args.host}:{args.port}: {error}\n")
        return 1
    return 0
