"""The recorder's PostgreSQL writes: statements, prepared statements, commits."""

from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from django.db import IntegrityError, connection

from agents import message_writer
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
    assert f"${len(UPDATE_FIELDS) + 1}" in sql
    assert statement.name == b"agentmargin_recorder_update"


def test_write_outside_transaction_commits_at_once(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    recorder.handle(response("msg_1", 80)[0])
    settings = connection.settings_dict
    # Another session reads the row before the response ends.
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or None,
    ) as other:
        rows = other.execute(
            "SELECT output_tokens, output_final FROM agents_apimessage "
            "WHERE execution_id = %s",
            [execution.pk],
        ).fetchall()
    assert rows == [(1, False)]


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


def test_recording_survives_reconnect(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = StreamRecorder(execution)
    for message in response("msg_1", 80):
        recorder.handle(message)
    connection.close()
    for message in response("msg_2", 90):
        recorder.handle(message)
    recorder.finish()
    execution.refresh_from_db()
    assert execution.output_tokens == 170


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


def test_database_error_raised_as_django_error(transactional_db):
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
    writer._execute = lambda statement, params: sent.append((statement.name, params))
    previous = list(range(len(UPDATE_FIELDS)))
    for index, name in enumerate(UPDATE_FIELDS):
        changed = [*previous, 99]
        changed[index] = "changed"
        short = writer.update_output(changed, previous)
        assert short == (name in message_writer.OUTPUT_UPDATE_FIELDS), name
    assert len(sent) == len(message_writer.OUTPUT_UPDATE_FIELDS)
    assert all(params[-1] == 99 for _, params in sent)
