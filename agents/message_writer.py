"""PostgreSQL statements that store one API message row, with the totals when due.

`StreamRecorder` writes each API message twice (when the response starts and
when its final output count arrives), and each write must be committed
before the recorder goes on. On PostgreSQL each write is a single
statement. Outside a transaction the statement commits on its own, in one
round trip with no BEGIN or COMMIT. Inside a caller's transaction
`StreamRecorder` runs it in a savepoint.

The statements go to libpq through psycopg's `PGconn` of Django's
connection, as named prepared statements with parameters bound on the
server. Django's cursors bind parameters in Python and never prepare. On
the 2-CPU development machine an insert and update of one row this way
used about 40% less client CPU and 40% less server CPU than through
Django's cursor. Named prepared statements need a pooler in transaction
mode to support them (PgBouncer does from 1.21, with
`max_prepared_statements` set). Without one, set
`AGENTMARGIN_RECORDER_PREPARED_STATEMENTS` to False and each statement is
parsed at every run.

Data-modifying WITH clauses run in the statement's transaction, so a message
row and the execution's totals written together commit or fail as one.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref

import psycopg
from django.conf import settings
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution

# Parameters of an INSERT, in this order.
INSERT_FIELDS = (
    "execution_id",
    "message_id",
    "sequence",
    "parent_tool_use_id",
    "arrived_at",
    "updated_at",
    *TOKEN_COUNT_FIELDS,
    "model",
    "service_tier",
    "speed",
    "inference_geo",
    "cost_usd",
    "price_source",
    "price_version",
    "output_final",
    "estimated",
)

# Parameters of an UPDATE, in this order, followed by the row's id. The
# execution, message id, sequence, agent and arrival time never change.
UPDATE_FIELDS = INSERT_FIELDS[INSERT_FIELDS.index("updated_at") :]

# Parameters of the UPDATE sent when only a response's output count and
# what follows from it changed since the row's last write (its final
# message_delta, usually), in this order, followed by the row's id.
OUTPUT_UPDATE_FIELDS = (
    "updated_at",
    "output_tokens",
    "cost_usd",
    "output_final",
    "estimated",
)
# Positions in UPDATE_FIELDS values of the fields such an UPDATE leaves as
# they are, and of the ones it sets.
_KEPT_POSITIONS = tuple(
    index
    for index, name in enumerate(UPDATE_FIELDS)
    if name not in OUTPUT_UPDATE_FIELDS
)
_OUTPUT_POSITIONS = tuple(UPDATE_FIELDS.index(name) for name in OUTPUT_UPDATE_FIELDS)

# The execution's running totals, in this order, followed by its id, with the
# difference from the CLI's reported cost once the result has reported one.
TOTALS_FIELDS = (
    *TOKEN_COUNT_FIELDS,
    "api_message_count",
    "cost_usd",
    "unpriced",
    "estimated",
)
TOTALS_WITH_DIFFERENCE_FIELDS = (*TOTALS_FIELDS, "cost_difference_usd")

# Prepared statement names start with this, so they differ from the `_pg3_`
# names that psycopg 3.3 gives the statements it prepares itself.
STATEMENT_PREFIX = "agentmargin_recorder_"

# Statement names prepared on each psycopg connection.
_prepared_on: weakref.WeakKeyDictionary[psycopg.Connection, set[bytes]] = (
    weakref.WeakKeyDictionary()
)


def prepared_statements_enabled() -> bool:
    return getattr(settings, "AGENTMARGIN_RECORDER_PREPARED_STATEMENTS", True)


@dataclasses.dataclass(frozen=True)
class Statement:
    """One SQL statement with `$n` parameters, and its prepared statement name."""

    name: bytes
    sql: bytes


class MessageWriter:
    """Runs the recorder's statements on Django's PostgreSQL connection.

    Statements go to libpq directly (psycopg's `PGconn`, which releases the
    GIL while it waits), with parameters dumped as text by psycopg's
    adapters and their types taken by the server from the columns they
    set. Errors are raised as Django's database exceptions, as the ORM
    raises them.

    NOTE: Django does not see these statements, so they are missing from
    `connection.queries` and its SQL logging, and execute_wrapper() hooks
    do not run for them.
    """

    def __init__(self, connection, *, prepare: bool):
        self.connection = connection
        self.prepare = prepare
        self._psycopg_connection: psycopg.Connection | None = None
        self._transformer: Transformer | None = None
        self._prepared: set[bytes] = set()

    def insert(
        self, values: list, *, execution_id: int, totals: dict | None = None
    ) -> int:
        """Insert a message row from INSERT_FIELDS values and return its id.

        `totals`, when given, sets the execution's TOTALS_FIELDS, and its
        `cost_difference_usd` when it has one, in the same statement.
        """
        if totals is None:
            result = self._execute(insert_statement(), values)
        else:
            names = _totals_names(totals)
            result = self._execute(
                insert_with_totals_statement(names),
                [*values, *(totals[name] for name in names), execution_id],
            )
        return int(result.get_value(0, 0))

    def update(
        self, values: list, *, execution_id: int, totals: dict | None = None
    ) -> None:
        """Update a message row from UPDATE_FIELDS values followed by its id."""
        if totals is None:
            self._execute(update_statement(), values)
        else:
            names = _totals_names(totals)
            self._execute(
                update_with_totals_statement(names),
                [*values, *(totals[name] for name in names), execution_id],
            )

    def update_output(self, values: list, previous: list) -> bool:
        """Store UPDATE_FIELDS `values` followed by the row's id, sending only what changed.

        `previous` contains the UPDATE_FIELDS values of the row's last write.
        When they differ from `values` only in OUTPUT_UPDATE_FIELDS, the
        shorter UPDATE of those fields is sent and True returned.
        Otherwise nothing is sent and False returned.
        """
        for index in _KEPT_POSITIONS:
            if values[index] != previous[index]:
                return False
        params = [values[index] for index in _OUTPUT_POSITIONS]
        params.append(values[-1])
        self._execute(output_update_statement(), params)
        return True

    def _execute(self, statement: Statement, params: list):
        try:
            raw = self._get_connection()
            values = self._transformer.dump_sequence(params, _text_formats(len(params)))
            if not self.prepare:
                result = raw.pgconn.exec_params(statement.sql, values)
            else:
                result = self._execute_prepared(raw, statement, values)
            _check(raw, result)
        except Exception:
            # Entered only on failure: it turns the error into Django's.
            with self.connection.wrap_database_errors:
                raise
        return result

    def _execute_prepared(self, raw: psycopg.Connection, statement: Statement, values):
        pgconn = raw.pgconn
        prepared = self._prepared
        if statement.name not in prepared:
            _check(raw, pgconn.prepare(statement.name, statement.sql))
            prepared.add(statement.name)
        result = pgconn.exec_prepared(statement.name, values)
        if (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE) == _NO_SUCH_STATEMENT
            and pgconn.transaction_status == pq.TransactionStatus.IDLE
        ):
            # Something dropped the connection's prepared statements (a
            # DISCARD ALL, a pooler that moved the session): prepare again.
            prepared.clear()
            _check(raw, pgconn.prepare(statement.name, statement.sql))
            prepared.add(statement.name)
            result = pgconn.exec_prepared(statement.name, values)
        return result

    def _get_connection(self) -> psycopg.Connection:
        raw = self.connection.connection
        if raw is self._psycopg_connection and raw is not None:
            return raw
        if raw is None:
            self.connection.ensure_connection()
            raw = self.connection.connection
        if raw is not self._psycopg_connection:
            self._transformer = Transformer(raw)
            self._prepared = _prepared_on.setdefault(raw, set())
            self._psycopg_connection = raw
        return raw


@functools.cache
def _text_formats(count: int) -> list[PyFormat]:
    return [PyFormat.TEXT] * count


def _check(raw: psycopg.Connection, result) -> None:
    """Raise the error of a failed libpq result as psycopg would."""
    if result.status in _FAILED_STATUSES:
        raise psycopg.errors.error_from_result(result, encoding=raw.info.encoding)


_FAILED_STATUSES = frozenset({pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE})
# SQLSTATE invalid_sql_statement_name: no prepared statement of that name.
_NO_SUCH_STATEMENT = b"26000"


def insert_values(execution_id: int, state, updated_at) -> list:
    """Return the INSERT_FIELDS values of a recorder's `MessageState`."""
    return [
        execution_id,
        state.message_id,
        state.sequence,
        state.parent_tool_use_id,
        state.arrived_at,
        *update_values(state, updated_at),
    ]


def update_values(state, updated_at) -> list:
    """Return the UPDATE_FIELDS values of a recorder's `MessageState`."""
    usage = state.usage
    # TOKEN_COUNT_FIELDS, in the order TokenUsage.counts() returns them.
    return [
        updated_at,
        *usage.counts(),
        state.model,
        usage.service_tier,
        usage.speed,
        usage.inference_geo,
        state.cost_usd,
        state.price_source,
        state.price_version,
        state.output_final,
        state.estimated,
    ]


def _table(model) -> str:
    return f'"{model._meta.db_table}"'


def _column(model, name: str) -> str:
    return f'"{model._meta.get_field(name).column}"'


def _assignments(model, names: tuple[str, ...]) -> str:
    return ", ".join(f"{_column(model, name)} = %s" for name in names)


def _insert_clause() -> str:
    columns = ", ".join(_column(ApiMessage, name) for name in INSERT_FIELDS)
    values = ", ".join(["%s"] * len(INSERT_FIELDS))
    return (
        f"INSERT INTO {_table(ApiMessage)} ({columns}) VALUES ({values}) "
        f"RETURNING {_column(ApiMessage, 'id')}"
    )


def _update_clause() -> str:
    return (
        f"UPDATE {_table(ApiMessage)} SET {_assignments(ApiMessage, UPDATE_FIELDS)} "
        f"WHERE {_column(ApiMessage, 'id')} = %s"
    )


def _totals_names(totals: dict) -> tuple[str, ...]:
    if "cost_difference_usd" in totals:
        return TOTALS_WITH_DIFFERENCE_FIELDS
    return TOTALS_FIELDS


def _totals_clause(names: tuple[str, ...]) -> str:
    return (
        f"UPDATE {_table(Execution)} SET {_assignments(Execution, names)} "
        f"WHERE {_column(Execution, 'id')} = %s"
    )


def _numbered(name: str, statement: str) -> Statement:
    """Return `statement` with its %s placeholders numbered $1, $2 and so on."""
    parts = statement.split("%s")
    numbered = parts[0] + "".join(
        f"${number}{part}" for number, part in enumerate(parts[1:], start=1)
    )
    return Statement(name=(STATEMENT_PREFIX + name).encode(), sql=numbered.encode())


@functools.cache
def insert_statement() -> Statement:
    """Return the INSERT of a message row, which returns the row's id."""
    return _numbered("insert", _insert_clause())


@functools.cache
def update_statement() -> Statement:
    """Return the UPDATE of a message row."""
    return _numbered("update", _update_clause())


@functools.cache
def output_update_statement() -> Statement:
    """Return the UPDATE of a message row's OUTPUT_UPDATE_FIELDS."""
    return _numbered(
        "update_output",
        f"UPDATE {_table(ApiMessage)} SET "
        f"{_assignments(ApiMessage, OUTPUT_UPDATE_FIELDS)} "
        f"WHERE {_column(ApiMessage, 'id')} = %s",
    )


@functools.cache
def insert_with_totals_statement(totals_names: tuple[str, ...]) -> Statement:
    """Return an INSERT of a message row that also sets the execution's totals."""
    return _numbered(
        f"insert_totals_{len(totals_names)}",
        f"WITH message AS ({_insert_clause()}), "
        f"execution AS ({_totals_clause(totals_names)}) "
        f"SELECT {_column(ApiMessage, 'id')} FROM message",
    )


@functools.cache
def update_with_totals_statement(totals_names: tuple[str, ...]) -> Statement:
    """Return an UPDATE of a message row that also sets the execution's totals."""
    return _numbered(
        f"update_totals_{len(totals_names)}",
        f"WITH message AS ({_update_clause()}) {_totals_clause(totals_names)}",
    )
