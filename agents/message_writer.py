"""PostgreSQL statements that store one API message row, with the totals when due.

`StreamRecorder` writes each API message twice (when the response starts and
when its final output count arrives). On PostgreSQL each write is a single
statement. Outside a transaction the statement commits on its own, with no
BEGIN or COMMIT. Inside a caller's transaction `StreamRecorder` runs it in a
savepoint, and the writer waits for each result.

Outside a transaction the writer pipelines its statements (libpq's pipeline
mode): it sends each one with a Sync of its own, so each still commits on
its own and durably, and goes on without waiting for the result. `sync()`
waits for every result in flight and raises the first error. The recorder
calls it whenever it has nothing else to do, when PIPELINE_DEPTH statements
are in flight, and at the end of a run. It sends its updates only then, so
that listeners and signal receivers learn of a write only after it has
committed. Waiting for each commit in turn instead wakes the worker and the
server once per statement, and with 16 recording processes on the 2-CPU
development machine that doubled the CPU per message (docs/benchmarks.md). While statements are in flight a Django execute wrapper on the
connection waits for them before any other query. Set
`AGENTMARGIN_RECORDER_PIPELINE` to False to wait for every statement, for
a proxy in front of PostgreSQL that does not support pipelining.

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

An UPDATE finds its row by execution and message id, so it can be sent
before the INSERT of the same row has returned. Data-modifying WITH clauses
run in the statement's transaction, so a message row and the execution's
totals written together commit or fail as one.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import select
import weakref

import psycopg
from django.conf import settings
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution

logger = logging.getLogger(__name__)

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

# Parameters of an UPDATE, in this order, followed by ROW_KEY_FIELDS. The
# execution, message id, sequence, agent and arrival time never change.
UPDATE_FIELDS = INSERT_FIELDS[INSERT_FIELDS.index("updated_at") :]

# The fields that find a row to update, unique together.
ROW_KEY_FIELDS = ("execution_id", "message_id")

# Parameters of the UPDATE sent when only a response's output count and
# what follows from it changed since the row's last write (its final
# message_delta, usually), in this order, followed by ROW_KEY_FIELDS.
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
# Index of the first ROW_KEY_FIELDS value in an UPDATE's parameters.
_KEY_START = len(UPDATE_FIELDS)

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

# Statements a pipelining writer sends before it waits for their results.
PIPELINE_DEPTH = 64

# Statement names prepared on each psycopg connection.
_prepared_on: weakref.WeakKeyDictionary[psycopg.Connection, set[bytes]] = (
    weakref.WeakKeyDictionary()
)


def prepared_statements_enabled() -> bool:
    return getattr(settings, "AGENTMARGIN_RECORDER_PREPARED_STATEMENTS", True)


def pipelining_enabled() -> bool:
    return getattr(settings, "AGENTMARGIN_RECORDER_PIPELINE", True)


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

    With `pipeline` on and no transaction open on the connection, a write
    is sent and left in flight (see the module docstring): `pending` counts
    the statements whose results have not been read, and `sync()` reads
    them. Inside a transaction, or with `pipeline` off, each write waits for
    its result.

    NOTE: Django does not see these statements, so they are missing from
    `connection.queries` and its SQL logging, and execute_wrapper() hooks
    do not run for them.
    """

    def __init__(self, connection, *, prepare: bool, pipeline: bool = False):
        self.connection = connection
        self.prepare = prepare
        self.pipeline = pipeline
        self._psycopg_connection: psycopg.Connection | None = None
        self._transformer: Transformer | None = None
        self._prepared: set[bytes] = set()
        # Statements sent whose results have not been read, oldest first:
        # each with its number, and its dumped parameters.
        self._in_flight: collections.deque[tuple[int, Statement, list]] = (
            collections.deque()
        )
        # Number of the last statement sent or run, counted from 1.
        self.last_number = 0
        # Numbers of the statements that failed, and the errors that sync()
        # has not raised yet.
        self.failed_numbers: set[int] = set()
        self._errors: list[Exception] = []
        # The first error of a statement sent by this writer, kept after
        # sync() has raised it.
        self.first_error: Exception | None = None

    @property
    def pending(self) -> int:
        """Return how many statements are in flight."""
        return len(self._in_flight)

    def insert(self, values: list, *, execution_id: int, totals: dict | None = None):
        """Insert a message row from INSERT_FIELDS values.

        `totals`, when given, sets the execution's TOTALS_FIELDS, and its
        `cost_difference_usd` when it has one, in the same statement.
        """
        if totals is None:
            self._write(insert_statement(), values)
        else:
            names = _totals_names(totals)
            self._write(
                insert_with_totals_statement(names),
                [*values, *(totals[name] for name in names), execution_id],
            )

    def update(
        self, values: list, *, execution_id: int, totals: dict | None = None
    ) -> None:
        """Update a message row from UPDATE_FIELDS values followed by ROW_KEY_FIELDS."""
        if totals is None:
            self._write(update_statement(), values)
        else:
            names = _totals_names(totals)
            self._write(
                update_with_totals_statement(names),
                [*values, *(totals[name] for name in names), execution_id],
            )

    def update_output(self, values: list, previous: list) -> bool:
        """Store UPDATE_FIELDS `values` and ROW_KEY_FIELDS, sending only what changed.

        `previous` contains the UPDATE_FIELDS values of the row's last write.
        When they differ from `values` only in OUTPUT_UPDATE_FIELDS, the
        shorter UPDATE of those fields is sent and True returned.
        Otherwise nothing is sent and False returned.
        """
        for index in _KEPT_POSITIONS:
            if values[index] != previous[index]:
                return False
        params = [values[index] for index in _OUTPUT_POSITIONS]
        params.extend(values[_KEY_START:])
        self._write(output_update_statement(), params)
        return True

    def sync(self) -> None:
        """Wait for the result of every statement in flight, then raise the first error.

        Every result is read before this returns, also when a statement
        failed, because each ran in its own transaction and the others
        committed. The numbers of failed statements stay in
        `failed_numbers`. A connection that Django closed with statements
        in flight counts them as failed.
        """
        raw = self._psycopg_connection
        if raw is not None and raw is not self.connection.connection:
            self._forget_closed_connection()
        elif raw is not None and (
            self._in_flight or raw.pgconn.pipeline_status != pq.PipelineStatus.OFF
        ):
            try:
                self._read_results(raw)
            except Exception:
                # This error ends the statements in flight, and replaces
                # the errors read before it.
                self._errors.clear()
                with self.connection.wrap_database_errors:
                    raise
        if self._errors:
            error = self._errors[0]
            self._errors.clear()
            with self.connection.wrap_database_errors:
                raise error

    def _write(self, statement: Statement, params: list) -> None:
        if self.pipeline and not self.connection.in_atomic_block:
            self._send(statement, params)
        else:
            self._execute(statement, params)

    def _execute(self, statement: Statement, params: list):
        if self._in_flight or self._errors:
            self.sync()
        self.last_number += 1
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

    def _send(self, statement: Statement, params: list) -> None:
        try:
            raw = self._get_connection()
            pgconn = raw.pgconn
            values = self._transformer.dump_sequence(params, _text_formats(len(params)))
            if self.prepare and statement.name not in self._prepared:
                # A statement is prepared outside the pipeline, once per
                # connection, so its failure is raised here.
                self.sync()
                _check(raw, pgconn.prepare(statement.name, statement.sql))
                self._prepared.add(statement.name)
            if pgconn.pipeline_status == pq.PipelineStatus.OFF:
                pgconn.enter_pipeline_mode()
            wrappers = self.connection.execute_wrappers
            if not self._in_flight and self._wait_before_query not in wrappers:
                # First, because Django's execute_wrapper() context manager
                # removes the last wrapper when it exits.
                wrappers.insert(0, self._wait_before_query)
            number = self.last_number + 1
            try:
                if self.prepare:
                    pgconn.send_query_prepared(statement.name, values)
                else:
                    pgconn.send_query_params(statement.sql, values)
            finally:
                # Ends the statement's transaction, and sends what is
                # buffered. sync() sends another Sync before it reads, for
                # an exception that lands before this one.
                pgconn.pipeline_sync()
            self.last_number = number
        except Exception:
            with self.connection.wrap_database_errors:
                raise
        self._in_flight.append((number, statement, values))

    def _read_results(self, raw: psycopg.Connection) -> None:
        """Read results until the pipeline is empty, then leave pipeline mode.

        The errors of statements that failed go to `_errors`, and their
        numbers to `failed_numbers`. A statement that failed because its
        prepared statement had gone is prepared and run again instead.
        The count of statements in flight is checked against libpq's own.
        An exception raised between a send and its count (a signal turned
        into SystemExit) leaves libpq with more than counted, and libpq
        refuses to leave pipeline mode until those are read too.
        """
        pgconn = raw.pgconn
        in_flight = self._in_flight
        again = []
        empty_reads = 0
        try:
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                # A statement sent without its Sync would never get a reply.
                # One more Sync costs an empty one.
                pgconn.pipeline_sync()
            while True:
                if not in_flight or empty_reads > 1:
                    try:
                        pgconn.exit_pipeline_mode()
                        break
                    except psycopg.OperationalError:
                        if empty_reads > 1:
                            raise
                if pgconn.status == pq.ConnStatus.BAD:
                    raise psycopg.OperationalError(
                        "the connection was lost with "
                        f"{len(in_flight)} statement(s) in flight: "
                        f"{pgconn.get_error_message().strip()}"
                    )
                if pgconn.is_busy():
                    _wait_for_input(pgconn)
                    continue
                result = pgconn.get_result()
                if result is None:
                    # One statement's results end with None; two in a row
                    # mean that libpq has nothing more to read.
                    empty_reads += 1
                    continue
                empty_reads = 0
                status = result.status
                if status == pq.ExecStatus.PIPELINE_SYNC:
                    if in_flight:
                        in_flight.popleft()
                elif not in_flight:
                    continue
                elif _no_such_statement(result):
                    again.append(in_flight[0])
                elif status in _FAILED_STATUSES:
                    self._fail(in_flight[0][0], _error_of(raw, result))
                elif _matched_no_row(in_flight[0][1], result):
                    self._fail(
                        in_flight[0][0],
                        psycopg.DatabaseError(
                            "A recorder UPDATE matched no message row; the row's "
                            "INSERT had failed or the row was deleted."
                        ),
                    )
        except psycopg.OperationalError as exc:
            # The connection failed, so nothing more can be read from it.
            for number, _, _ in in_flight:
                self.failed_numbers.add(number)
            self.first_error = self.first_error or exc
            in_flight.clear()
            self._remove_wait_before_query()
            raise
        finally:
            if pgconn.pipeline_status == pq.PipelineStatus.OFF:
                in_flight.clear()
                self._remove_wait_before_query()
        if again:
            self._prepared.clear()
            for number, statement, values in again:
                result = self._execute_prepared(raw, statement, values)
                if result.status in _FAILED_STATUSES:
                    self._fail(number, _error_of(raw, result))

    def _fail(self, number: int, error: Exception) -> None:
        self.failed_numbers.add(number)
        self._errors.append(error)
        self.first_error = self.first_error or error

    def _forget_closed_connection(self) -> None:
        """Count what was in flight on a connection that Django closed or replaced as failed.

        The server runs what it had received before it saw the connection
        end, unless its backend had ended first, so whether they committed
        is unknown.
        """
        if self._in_flight:
            logger.warning(
                "%d recorder statement(s) in flight when the database "
                "connection closed; whether they committed is unknown",
                len(self._in_flight),
            )
            error = psycopg.OperationalError(
                f"The database connection closed with {len(self._in_flight)} "
                "recorder statement(s) in flight; whether they committed is "
                "unknown."
            )
            for number, _, _ in self._in_flight:
                self._fail(number, error)
            self._in_flight.clear()
        self._remove_wait_before_query()
        self._psycopg_connection = None

    def _wait_before_query(self, execute, sql, params, many, context):
        """Django execute wrapper: any other query waits for the statements in flight."""
        self.sync()
        return execute(sql, params, many, context)

    def _remove_wait_before_query(self) -> None:
        wrappers = self.connection.execute_wrappers
        while self._wait_before_query in wrappers:
            wrappers.remove(self._wait_before_query)

    def _execute_prepared(self, raw: psycopg.Connection, statement: Statement, values):
        pgconn = raw.pgconn
        prepared = self._prepared
        if statement.name not in prepared:
            _check(raw, pgconn.prepare(statement.name, statement.sql))
            prepared.add(statement.name)
        result = pgconn.exec_prepared(statement.name, values)
        if (
            _no_such_statement(result)
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
            self._forget_closed_connection()
            self._transformer = Transformer(raw)
            self._prepared = _prepared_on.setdefault(raw, set())
            self._psycopg_connection = raw
        return raw


def _wait_for_input(pgconn) -> None:
    """Wait until the server has sent something, then read it into libpq.

    libpq's own wait in PQgetResult holds the GIL in psycopg's binary
    build, which would stop every other thread of the worker (the SDK's
    stream, the heartbeat, the live-update publisher) while a statement
    waits, for a lock for instance. poll() releases it.
    """
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    poller.poll()
    pgconn.consume_input()


@functools.cache
def _text_formats(count: int) -> list[PyFormat]:
    return [PyFormat.TEXT] * count


def _check(raw: psycopg.Connection, result) -> None:
    """Raise the error of a failed libpq result as psycopg would."""
    if result.status in _FAILED_STATUSES:
        raise _error_of(raw, result)


def _error_of(raw: psycopg.Connection, result) -> Exception:
    return psycopg.errors.error_from_result(result, encoding=raw.info.encoding)


def _matched_no_row(statement: Statement, result) -> bool:
    """Return whether a message UPDATE without the totals changed no row."""
    return (
        statement.name in _MESSAGE_UPDATE_NAMES
        and result.status == pq.ExecStatus.COMMAND_OK
        and result.command_tuples == 0
    )


_FAILED_STATUSES = frozenset(
    {
        pq.ExecStatus.FATAL_ERROR,
        pq.ExecStatus.BAD_RESPONSE,
        pq.ExecStatus.PIPELINE_ABORTED,
    }
)
# SQLSTATE invalid_sql_statement_name: no prepared statement of that name.
_NO_SUCH_STATEMENT = b"26000"


_MESSAGE_UPDATE_NAMES = frozenset(
    {
        (STATEMENT_PREFIX + "update").encode(),
        (STATEMENT_PREFIX + "update_output").encode(),
    }
)


def _no_such_statement(result) -> bool:
    return (
        result.status == pq.ExecStatus.FATAL_ERROR
        and result.error_field(pq.DiagnosticField.SQLSTATE) == _NO_SUCH_STATEMENT
    )


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
    return f"INSERT INTO {_table(ApiMessage)} ({columns}) VALUES ({values})"


def _row_key_clause() -> str:
    return " AND ".join(f"{_column(ApiMessage, name)} = %s" for name in ROW_KEY_FIELDS)


def _update_clause() -> str:
    return (
        f"UPDATE {_table(ApiMessage)} SET {_assignments(ApiMessage, UPDATE_FIELDS)} "
        f"WHERE {_row_key_clause()}"
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
    """Return the INSERT of a message row."""
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
        f"WHERE {_row_key_clause()}",
    )


@functools.cache
def insert_with_totals_statement(totals_names: tuple[str, ...]) -> Statement:
    """Return an INSERT of a message row that also sets the execution's totals."""
    return _numbered(
        f"insert_totals_{len(totals_names)}",
        f"WITH message AS ({_insert_clause()}) {_totals_clause(totals_names)}",
    )


@functools.cache
def update_with_totals_statement(totals_names: tuple[str, ...]) -> Statement:
    """Return an UPDATE of a message row that also sets the execution's totals."""
    return _numbered(
        f"update_totals_{len(totals_names)}",
        f"WITH message AS ({_update_clause()}) {_totals_clause(totals_names)}",
    )
