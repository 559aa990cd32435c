"""Sessions: what one SSH connection is, independent of SSH and of Docker.

`connection.py` runs a connection's life (channels, limits, release, `session.closed`);
`channel.py` one channel; `lease.py` its sandbox; `totals.py` its byte counters. Nothing here
imports asyncssh or the Docker backend: ssh/ drives a `Session`, the pool is a `SandboxProvider`.
"""

from sandtrap.session.channel import (
    ChannelRequest,
    ExecPlan,
    plan_exec,
    refused_settings,
    run_channel,
)
from sandtrap.session.connection import Link, Session, SessionSettings
from sandtrap.session.lease import SandboxLease
from sandtrap.session.totals import SessionTotals

__all__ = [
    "ChannelRequest",
    "ExecPlan",
    "Link",
    "SandboxLease",
    "Session",
    "SessionSettings",
    "SessionTotals",
    "plan_exec",
    "refused_settings",
    "run_channel",
]
