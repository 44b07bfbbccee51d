"""The recorder's PostgreSQL writes: statements, prepared statements, commits."""

import logging
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from django.db import DataError, IntegrityError, connection, connections

from agents import message_writer
from agents import recorder as recorder_module
from agents.message_writer import (
    INSERT_FIELDS,
    UPDATE_FIELDS,
    insert_values,
    update_values,
)
from agents.models import ApiMessage, Execution
from agents.pricing import TokenUsage
from agents.recorder import MessageState, StreamRecorder
from tests.agents import stream
from tests.factories import ExecutionFactory

SONNET = "claude-sonnet-4-6"


def response(message_id, output):
    return [
        stream.message_start(message_id, SONNET, stream.usage(input=10, read=4000)),
        stream.message_delta(output),
        stream.message_stop(),
    ]


def prepared_statement_names():
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {name for (name,) in cursor.fetchall()}


def test_values_follow_field_order():
    usage = TokenUsage(
        input_tokens=1,
        output_tokens=2,
        cache_write_5m_tokens=3,
        cache_write_1h_tokens=4,
        cache_read_tokens=5,
        web_search_requests=6,
        service_tier="standard",
        inference_geo="us",
        speed="fast",
    )
    arrived_at = datetime(2026, 1, 5, tzinfo=UTC)
    updated_at = datetime(2026, 1, 6, tzinfo=UTC)
    state = MessageState(
        message_id="msg_1",
        sequence=7,
        model=SONNET,
        parent_tool_use_id="toolu_1",
        usage=usage,
        arrived_at=arrived_at,
        output_final=True,
        estimated=True,
        cost_usd=Decimal("0.5"),
        price_source="override",
        price_version="override#1",
    )
    expected = {
        "execution_id": 42,
        "message_id": "msg_1",
        "sequence": 7,
        "parent_tool_use_id": "toolu_1",
        "arrived_at": arrived_at,
        "updated_at": updated_at,
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_write_5m_tokens": 3,
        "cache_write_1h_tokens": 4,
        "cache_read_tokens": 5,
        "web_search_requests": 6,
        "model": SONNET,
        "service_tier": "standard",
        "speed": "fast",
        "inference_geo": "us",
        "cost_usd": Decimal("0.5"),
        "price_source": "override",
        "price_version": "override#1",
        "output_final": True,
        "estimated": True,
    }
    assert set(INSERT_FIELDS) == set(expected)
    inserted = dict(
        zip(INSERT_FIELDS, insert_values(42, state, updated_at), strict=True)
    )
    assert inserted == expected
    updated = dict(zip(UPDATE_FIELDS, update_values(state, updated_at), strict=True))
    assert updated == {name: expected[name] for name in UPDATE_FIELDS}


def test_statements_number_their_parameters():
    statement = message_writer.update_statement()
    sql = statement.sql.decode()
    assert "%s" not in sql
    # UPDATE_FIELDS, then the row's execution and message id.
    assert f"${len(UPDATE_FIELDS) + 2}" in sql
    assert f"${len(UPDATE_FIELDS) + 3}" not in sql
    assert statement.name == b"agentmargin_recorder_update"


def other_session():
    """Open a second connection to the test database, outside Django."""
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or None,
        autocommit=True,
    )


def rows_seen_elsewhere(execution_id):
    with other_session() as other:
        return other.execute(
            "SELECT message_id, output_tokens, output_final FROM agents_apimessage "
            "WHERE execution_id = %s ORDER BY sequence",
            [execution_id],
        ).fetchall()


def message_state(message_id, output=1, *, sequence=1):
    return MessageState(
        message_id=message_id,
        sequence=sequence,
        model=SONNET,
        parent_tool_use_id="",
        usage=TokenUsage(input_tokens=10, output_tokens=output),
        arrived_at=datetime(2026, 1, 5, tzinfo=UTC),
        cost_usd=Decimal("0.001"),
    )


def pipelined_writer():
    # This thread's connection itself, not the proxy that each thread
    # resolves to its own.
    return message_writer.MessageWriter(
        connections["default"], prepare=True, pipeline=True
    )


def insert(writer, execution_id, message_id, *, sequence=1):
    values = insert_values(
        execution_id,
        message_state(message_id, sequence=sequence),
        datetime.now(UTC),
    )
    writer.insert(values, execution_id=execution_id)


def test_write_committed_by_settle(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    recorder.handle(response("msg_1", 80)[0])
    recorder.settle()
    # Another session reads the row before the response ends.
    assert rows_seen_elsewhere(execution.pk) == [("msg_1", 1, False)]


def test_write_in_flight_until_sync(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    insert(writer, execution.pk, "msg_1")
    assert writer.pending == 1
    writer.sync()
    assert writer.pending == 0
    assert connection.connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    assert rows_seen_elsewhere(execution.pk) == [("msg_1", 1, False)]


def test_write_in_transaction_waits(transactional_db):
    from django.db import transaction

    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    with transaction.atomic():
        insert(writer, execution.pk, "msg_1")
        assert writer.pending == 0
        assert ApiMessage.objects.filter(message_id="msg_1").exists()


def test_updates_sent_after_commit(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    seen = []

    def listener(update):
        # Each update describes rows that other sessions can already read.
        seen.append((update.message.message_id, rows_seen_elsewhere(execution.pk)))

    recorder = StreamRecorder(execution, listener=listener)
    for message in response("msg_1", 80):
        recorder.handle(message)
    assert seen == []
    recorder.settle()
    # One update when the response started, one when it stopped.
    assert seen == [
        ("msg_1", [("msg_1", 80, True)]),
        ("msg_1", [("msg_1", 80, True)]),
    ]


def test_handle_settles_full_pipeline(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    updates = []
    recorder = StreamRecorder(execution, listener=updates.append)
    # Two writes per response.
    responses = message_writer.PIPELINE_DEPTH // 2 + 1
    for number in range(1, responses + 1):
        for message in response(f"msg_{number}", number):
            recorder.handle(message)
    assert updates, "no update went out while the writes piled up"
    stored = ApiMessage.objects.filter(execution=execution).count()
    assert stored == responses
    recorder.finish()
    assert len(updates) == 2 * responses
    assert [u.message.message_id for u in updates[::2]] == [
        f"msg_{number}" for number in range(1, responses + 1)
    ]


def test_other_query_waits_for_writes(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    insert(writer, execution.pk, "msg_1")
    assert len(connection.execute_wrappers) == 1
    # An ORM query on the same connection reads the row and ends the pipeline.
    assert ApiMessage.objects.get(message_id="msg_1").output_tokens == 1
    assert writer.pending == 0
    assert connection.execute_wrappers == []


def test_failed_write_raised_at_sync(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    insert(writer, execution.pk, "msg_1", sequence=1)
    insert(writer, execution.pk, "msg_1", sequence=2)  # the same message id again
    insert(writer, execution.pk, "msg_2", sequence=3)
    with pytest.raises(IntegrityError, match="unique"):
        writer.sync()
    # Each statement committed on its own: only the duplicate is missing.
    assert [row[0] for row in rows_seen_elsewhere(execution.pk)] == ["msg_1", "msg_2"]
    assert writer.pending == 0
    assert connection.execute_wrappers == []
    insert(writer, execution.pk, "msg_3", sequence=4)
    writer.sync()
    assert ApiMessage.objects.filter(execution=execution).count() == 3


def test_sync_reads_uncounted_statements(transactional_db):
    """A SystemExit between a send and its count must not leave the pipeline open."""
    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    insert(writer, execution.pk, "msg_1")
    # A statement libpq sent that the writer never counted.
    pgconn = connection.connection.pgconn
    pgconn.send_query_params(b"SELECT 1", None)
    pgconn.pipeline_sync()
    writer.sync()
    assert pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    assert ApiMessage.objects.get(message_id="msg_1").sequence == 1


def test_connection_lost_in_flight(transactional_db):
    from django.db import OperationalError

    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    insert(writer, execution.pk, "msg_1")
    writer.sync()
    backend_pid = connection.connection.info.backend_pid
    with other_session() as other:
        # Hold the execution's row, so the next INSERT waits for its lock,
        # then end the backend while it waits.
        other.execute("BEGIN")
        other.execute(
            "SELECT id FROM agents_execution WHERE id = %s FOR UPDATE", [execution.pk]
        )
        insert(writer, execution.pk, "msg_2", sequence=2)
        with other_session() as admin:
            for _ in range(100):
                waiting = admin.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                    [backend_pid],
                ).fetchone()
                if waiting == ("Lock",):
                    break
                time.sleep(0.05)
            admin.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
        other.execute("ROLLBACK")
    with pytest.raises(OperationalError):
        writer.sync()
    assert writer.pending == 0
    assert connection.execute_wrappers == []
    connection.close()
    insert(writer, execution.pk, "msg_3", sequence=3)
    writer.sync()
    assert [row[0] for row in rows_seen_elsewhere(execution.pk)] == ["msg_1", "msg_3"]


def test_statements_prepared_once_per_connection(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in [*response("msg_1", 80), *response("msg_2", 90)]:
        recorder.handle(message)
    names = prepared_statement_names()
    assert "agentmargin_recorder_insert" in names
    # Each final count changed only the output, so the short UPDATE was sent.
    assert "agentmargin_recorder_update_output" in names
    # A second recorder on the same connection reuses them.
    second = StreamRecorder(ExecutionFactory(requested_model=SONNET))
    for message in response("msg_3", 10):
        second.handle(message)
    assert ApiMessage.objects.get(message_id="msg_3").output_tokens == 10


def test_statements_prepared_again_after_deallocate(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in response("msg_1", 80):
        recorder.handle(message)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    for message in response("msg_2", 90):
        recorder.handle(message)
    recorder.finish()
    execution.refresh_from_db()
    assert execution.api_message_count == 2
    assert execution.output_tokens == 170
    assert rows_seen_elsewhere(execution.pk) == [
        ("msg_1", 80, True),
        ("msg_2", 90, True),
    ]


def test_recording_survives_reconnect(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in response("msg_1", 80):
        recorder.handle(message)
    recorder.settle()
    connection.close()
    for message in response("msg_2", 90):
        recorder.handle(message)
    finished = recorder.finish()
    assert finished.status == Execution.Status.INTERRUPTED  # no result message
    assert finished.output_tokens == 170
    assert rows_seen_elsewhere(execution.pk) == [
        ("msg_1", 80, True),
        ("msg_2", 90, True),
    ]


def test_connection_closed_in_flight_fails_run(transactional_db, caplog):
    execution = ExecutionFactory(requested_model=SONNET)
    updates = []
    recorder = StreamRecorder(execution, listener=updates.append)
    for message in response("msg_1", 80):
        recorder.handle(message)
    # The final write of msg_1 is in flight when the connection closes:
    # whether it committed is unknown, so its update is not sent.
    with caplog.at_level(logging.WARNING, logger="agents.message_writer"):
        connection.close()
        finished = recorder.finish()
    assert "1 recorder statement(s) in flight when the database connection" in (
        caplog.text
    )
    assert finished.status == Execution.Status.FAILED
    assert "whether they committed is unknown" in finished.error
    assert [update.message.usage.output_tokens for update in updates] == [1]


def test_prepared_statements_can_be_disabled(transactional_db, settings):
    settings.AGENTMARGIN_RECORDER_PREPARED_STATEMENTS = False
    connection.close()
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in response("msg_1", 80):
        recorder.handle(message)
    recorder.finish()
    assert not {
        name for name in prepared_statement_names() if name.startswith("agentmargin")
    }
    assert ApiMessage.objects.get(execution=execution).output_tokens == 80


def test_database_error_raised_at_settle(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    Execution.objects.filter(pk=execution.pk).delete()
    # The INSERT is in flight; its failure arrives when the recorder waits.
    recorder.handle(response("msg_1", 80)[0])
    with pytest.raises(IntegrityError):
        recorder.settle()
    assert not ApiMessage.objects.filter(message_id="msg_1").exists()


def test_database_error_without_pipelining(transactional_db, settings):
    settings.AGENTMARGIN_RECORDER_PIPELINE = False
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    Execution.objects.filter(pk=execution.pk).delete()
    with pytest.raises(IntegrityError):
        recorder.handle(response("msg_1", 80)[0])


@pytest.mark.django_db
def test_write_in_transaction_uses_savepoint():
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in response("msg_1", 80):
        recorder.handle(message)
    recorder.finish()
    execution.refresh_from_db()
    assert connection.in_atomic_block
    assert execution.output_tokens == 80
    assert execution.api_message_count == 1


def test_short_update_when_only_output_changed(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in response("msg_1", 80):
        recorder.handle(message)
    names = prepared_statement_names()
    assert "agentmargin_recorder_update_output" in names
    assert "agentmargin_recorder_update" not in names
    row = ApiMessage.objects.get(message_id="msg_1")
    # 10 input at $3 + 4,000 cache reads at $0.30 + 80 output at $15 per MTok.
    assert (row.output_tokens, row.output_final, row.cost_usd) == (
        80,
        True,
        Decimal("0.00243"),
    )


def test_full_update_after_model_change(transactional_db):
    """A model learnt after message_start is written with every field, not the short UPDATE."""
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    no_model = stream.message_start("msg_1", "", stream.usage(input=10, read=4000))
    for message in [
        no_model,
        stream.assistant("msg_1", SONNET, stream.usage(input=10, read=4000)),
        stream.message_delta(80),
        stream.message_stop(),
    ]:
        recorder.handle(message)
    assert "agentmargin_recorder_update" in prepared_statement_names()
    row = ApiMessage.objects.get(message_id="msg_1")
    assert (row.model, row.output_tokens, row.output_final) == (SONNET, 80, True)


def test_short_update_checks_kept_fields():
    writer = message_writer.MessageWriter(connection, prepare=True)
    sent = []
    writer._write = lambda statement, params: sent.append((statement.name, params))
    previous = list(range(len(UPDATE_FIELDS)))
    for index, name in enumerate(UPDATE_FIELDS):
        # UPDATE_FIELDS values, then the row's key.
        changed = [*previous, 42, "msg_1"]
        changed[index] = "changed"
        short = writer.update_output(changed, previous)
        assert short == (name in message_writer.OUTPUT_UPDATE_FIELDS), name
    assert len(sent) == len(message_writer.OUTPUT_UPDATE_FIELDS)
    assert all(params[-2:] == [42, "msg_1"] for _, params in sent)


def test_sync_wait_releases_gil(transactional_db):
    """The worker's other threads (the SDK stream, the heartbeat) must not stall."""
    execution = ExecutionFactory(requested_model=SONNET)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '3s'")
    writer = pipelined_writer()
    try:
        with other_session() as other:
            other.execute("BEGIN")
            other.execute(
                "SELECT id FROM agents_execution WHERE id = %s FOR UPDATE",
                [execution.pk],
            )
            # The INSERT waits for the execution's row lock.
            insert(writer, execution.pk, "msg_1")
            # Only a thread that gets the GIL while sync() waits can end the
            # lock; otherwise the lock timeout fails the INSERT.
            release = threading.Timer(0.2, other.execute, ["ROLLBACK"])
            started = time.monotonic()
            release.start()
            writer.sync()
            waited = time.monotonic() - started
            release.join()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert waited < 3
    assert ApiMessage.objects.filter(message_id="msg_1").exists()


def test_finish_after_failed_write(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    recorder.start()
    # Another session stores the same response first, so the recorder's
    # INSERT fails after handle() has returned.
    with other_session() as other:
        other.execute(
            "INSERT INTO agents_apimessage (execution_id, message_id, sequence, "
            "parent_tool_use_id, arrived_at, updated_at, input_tokens, output_tokens, "
            "cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, "
            "web_search_requests, model, service_tier, speed, inference_geo, "
            "price_source, price_version, output_final, estimated) "
            "VALUES (%s, 'msg_1', 1, '', now(), now(), 0, 0, 0, 0, 0, 0, '', '', "
            "'', '', '', '', false, false)",
            [execution.pk],
        )
    updates = []
    recorder.listener = updates.append
    recorder.handle(response("msg_1", 80)[0])
    finished = recorder.finish()
    assert finished.status == Execution.Status.FAILED
    assert "A write failed: duplicate key value" in finished.error
    assert updates == []
    finished.refresh_from_db()
    assert finished.status == Execution.Status.FAILED


def start_that_fails(message_id):
    """A message_start whose INSERT the server rejects: the tier is too long."""
    usage = {**stream.usage(input=10, read=4000), "service_tier": "x" * 40}
    return stream.message_start(message_id, SONNET, usage)


def test_failed_write_drops_only_its_updates(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    updates = []
    recorder = StreamRecorder(execution, listener=updates.append)
    for message in [
        *response("msg_1", 80),
        start_that_fails("msg_2"),
        stream.message_stop(),
        *response("msg_3", 90),
    ]:
        recorder.handle(message)
    with pytest.raises(DataError):
        recorder.settle()
    # The other responses committed, and their updates go out.
    assert [update.message.message_id for update in updates] == [
        "msg_1",
        "msg_1",
        "msg_3",
        "msg_3",
    ]
    assert [row[0] for row in rows_seen_elsewhere(execution.pk)] == ["msg_1", "msg_3"]
    # msg_2 has no row, so the recorder no longer counts it as stored.
    assert recorder.messages["msg_2"].stored is False


def test_failed_write_fails_run_with_result(transactional_db, monkeypatch):
    # Totals only with the first write, so that every statement the stream
    # needs is prepared before msg_2, and its failure surfaces only after the
    # result has arrived.
    monkeypatch.setattr(recorder_module, "TOTALS_INTERVAL_SECONDS", 3600)
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    error = None
    try:
        for message in [
            *response("msg_0", 70),
            *response("msg_1", 80),
            start_that_fails("msg_2"),
            stream.message_delta(5),
            stream.message_stop(),
            stream.result(),
        ]:
            recorder.handle(message)
    except DataError as exc:
        # Raised when the result's session id is stored, as the runner
        # would catch it.
        error = exc
    assert recorder.result is not None
    finished = recorder.finish(error=error)
    # The result reports success, but a response is missing.
    assert finished.status == Execution.Status.FAILED
    assert "A write failed: value too long" in finished.error


def test_sync_after_send_without_its_sync(transactional_db):
    """An exception between a send and its Sync must not leave sync() waiting forever."""
    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    insert(writer, execution.pk, "msg_1")
    # A statement that went out without the Sync that ends it.
    connection.connection.pgconn.send_query_params(b"SELECT 1", None)
    done = threading.Event()

    def sync_in_thread():
        writer.sync()
        done.set()

    thread = threading.Thread(target=sync_in_thread, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set(), "sync() is still waiting for a reply"
    assert ApiMessage.objects.get(message_id="msg_1").sequence == 1


def test_wait_survives_execute_wrapper_context(transactional_db):
    """Django's execute_wrapper() removes the last wrapper when it exits."""
    execution = ExecutionFactory(requested_model=SONNET)
    writer = pipelined_writer()
    with connection.execute_wrapper(lambda execute, *args: execute(*args)):
        insert(writer, execution.pk, "msg_1")
    assert writer.pending == 1
    assert ApiMessage.objects.get(message_id="msg_1").sequence == 1
    assert writer.pending == 0
