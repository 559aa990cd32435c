"""The `postgresql` output: every event into a PostgreSQL database that a fleet shares.

Owns the connection (opened, and the schema migrated, at the first send; reopened after an
error). Inserts are idempotent (store/postgres.py), so the runner's retries and spool replays
never duplicate rows. Connection problems are retried; a batch the server refuses as data is
dropped and counted. The URL (it may hold a password) is never logged.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sandtrap.config import PostgresqlOutput
from sandtrap.outputs.base import Alert, Item, OutputError, OutputRejected, Record, sandtrap_record
from sandtrap.store.postgres import insert, migrate


class PostgresqlSink:
    """Inserts batches of our records."""

    def __init__(self, config: PostgresqlOutput, sensor: str) -> None:
        self.config = config
        self.sensor = sensor
        self.batch_max_events = config.batch_max_events
        self.batch_max_seconds = config.batch_max_seconds
        self.timeout_seconds = config.timeout_seconds
        self._connection: Any = None

    def format(self, item: Item) -> list[Record]:
        return [] if isinstance(item, Alert) else [sandtrap_record(item, self.sensor)]

    async def send(self, records: list[Record]) -> None:
        import psycopg

        try:
            if self._connection is None or self._connection.closed:
                self._connection = await psycopg.AsyncConnection.connect(
                    self.config.url, autocommit=True, connect_timeout=int(self.timeout_seconds)
                )
                await migrate(self._connection)
            await insert(self._connection, records)
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            raise OutputRejected(f"postgresql: {type(exc).__name__}: {exc}") from None
        except psycopg.Error as exc:
            await self.close()
            raise OutputError(f"postgresql: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # Closing a broken connection: nothing to report.
            with contextlib.suppress(Exception):
                await connection.close()


__all__ = ["PostgresqlSink"]
