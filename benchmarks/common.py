"""Helpers shared by the benchmarks: their error type, database and CPU reading."""

from __future__ import annotations

import os
import re
import urllib.parse

import psycopg
from psycopg import sql


class BenchmarkError(Exception):
    """The benchmark could not run or its results failed a check."""


class BenchmarkDatabase:
    """A database of the benchmark's own on the server of DATABASE_URL."""

    def __init__(self, source_url: str, name: str):
        parts = urllib.parse.urlsplit(source_url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise BenchmarkError(
                f"DATABASE_URL must point at PostgreSQL, got scheme {parts.scheme!r}."
            )
        source_name = parts.path.lstrip("/")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise BenchmarkError(
                f"Invalid database name {name!r}: use lowercase letters, digits and _."
            )
        # pytest-django creates test_<name> for the suite.
        if name in (
            source_name,
            f"test_{source_name}",
            "postgres",
            "template0",
            "template1",
        ):
            raise BenchmarkError(
                f"Invalid --database {name!r}: it is a database of the project or of "
                "the server, which the benchmark would drop. Pass another name."
            )
        self.name = name
        self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
        self._maintenance_url = urllib.parse.urlunsplit(
            parts._replace(scheme="postgresql", path="/postgres")
        )

    def create(self) -> None:
        """Create the database, dropping a copy left by an interrupted run first."""
        with psycopg.connect(self._maintenance_url, autocommit=True) as connection:
            connection.execute(self._drop_statement())
            connection.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name))
            )

    def drop(self) -> None:
        with psycopg.connect(self._maintenance_url, autocommit=True) as connection:
            connection.execute(self._drop_statement())

    def _drop_statement(self) -> sql.Composed:
        # WITH (FORCE), PostgreSQL 13 and later, ends the sessions of a worker
        # that a failed run left behind.
        return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(self.name)
        )


def machine_busy_seconds() -> float | None:
    """Return the CPU time all processes on this machine have used, or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None
    # Fields: user nice system idle iowait irq softirq steal guest guest_nice.
    # guest time is already counted in user time.
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")
