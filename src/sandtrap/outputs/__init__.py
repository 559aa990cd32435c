"""Outputs: events (and alerts) delivered to other systems, each off the hot path.

`base` (the Sink protocol, alerts, filters, backoff), `runner` (one output's queue, retries and
spool), `spool`, `hub` (all outputs of a service), one module per output type (`jsonfile` with
the `cowrie` mapping, `syslog`, `webhook` with its `presets`), and `alerts` (the rules). Import
from here.
"""

from sandtrap.outputs.base import Alert, OutputError, OutputStatistics, Sink
from sandtrap.outputs.cowrie import CowrieMapper
from sandtrap.outputs.hub import Outputs, build_runner, drain
from sandtrap.outputs.runner import OutputRunner

__all__ = [
    "Alert",
    "CowrieMapper",
    "OutputError",
    "OutputRunner",
    "OutputStatistics",
    "Outputs",
    "Sink",
    "build_runner",
    "drain",
]
