"""Serve the local Anthropic Messages API simulator in the foreground."""

from django.core.management.base import BaseCommand, CommandError

from agents.simulator import SimulatorServer
from agents.simulator.cli import add_arguments, serve_until_signal


class Command(BaseCommand):
    help = (
        "Serve the local Anthropic Messages API simulator until SIGINT or "
        "SIGTERM. Point ANTHROPIC_BASE_URL at the URL it prints. Each request "
        "is logged in one line by the agents.simulator.server logger."
    )

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, host, port, stall_seconds, **options):
        try:
            server = SimulatorServer(host, port, stall_seconds=stall_seconds)
        except ValueError as error:
            raise CommandError(str(error)) from error

        def announce(url: str) -> None:
            self.stdout.write(f"Simulator listening on {url}")
            self.stdout.flush()

        try:
            serve_until_signal(server, announce)
        except OSError as error:
            raise CommandError(
                f"Could not listen on {host}:{port}: {error}. "
                "Pick another port with --port."
            ) from error
        self.stdout.write("Simulator stopped.")
