"""Local Anthropic Messages API simulator for demos and end-to-end tests.

Importing this package needs no Django settings.
"""

from .scenarios import SCENARIOS, Scenario, UnknownScenarioError, scenario_usage
from .server import (
    SIMULATOR_MESSAGE_ID_PREFIX,
    SIMULATOR_NAME,
    SIMULATOR_VERSION,
    RequestRecord,
    SimulatorServer,
)

__all__ = [
    "SCENARIOS",
    "SIMULATOR_MESSAGE_ID_PREFIX",
    "SIMULATOR_NAME",
    "SIMULATOR_VERSION",
    "RequestRecord",
    "Scenario",
    "SimulatorServer",
    "UnknownScenarioError",
    "scenario_usage",
]
