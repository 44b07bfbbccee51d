"""Measure how fast StreamRecorder stores API messages in PostgreSQL.

Synthetic Agent SDK streams go through the real `StreamRecorder`, one
execution per worker process, with 1, 4 and 16 executions recorded at once.
In runs that alternate with the recorder's, the same worker processes insert
the same rows through psycopg with one INSERT and one COMMIT per row
("bare"). The two rates set the recorder's cost against what the database
allows on the same machine at the same time. docs/benchmarks.md describes
the method and the results.

The benchmark creates its own database (`agentmargin_bench` unless
`--database` names another) on the server of DATABASE_URL, migrates it and
drops it at the end. It changes no server setting, so every commit is as
durable as the server is configured to make it.

    DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python \\
        benchmarks/record_stream.py --messages 10000 --concurrency 1,4,16
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import multiprocessing
import os
import platform
import queue
import random
import statistics
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import django
import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import BenchmarkDatabase, BenchmarkError, machine_busy_seconds  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
# The recorder logs one INFO line per finished execution, which would
# interleave with the progress lines.
os.environ.setdefault("LOG_LEVEL", "WARNING")

# Same default as config.settings.test.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/agentmargin"
DEFAULT_BENCH_DATABASE = "agentmargin_bench"

RECORDER = "recorder"
BARE = "bare"

# Model ids as the API reports them, with their relative frequency.
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5-20251001", "claude-opus-4-6")
MODEL_WEIGHTS = (6, 3, 1)
SUBAGENT_SHARE = 0.15
SECOND_BLOCK_SHARE = 0.4
ONE_HOUR_CACHE_SHARE = 0.2
# A conversation is compacted and its prompt cached afresh above this size.
MAX_CONTEXT_TOKENS = 150_000

PROGRESS_STEP = 100
PROGRESS_INTERVAL_SECONDS = 2.0
# Starting a worker imports Django, the Agent SDK and genai-prices.
STARTUP_TIMEOUT_SECONDS = 180.0
# Extra time a worker gets past --time-limit before it counts as stuck.
STUCK_GRACE_SECONDS = 60.0

# write_doc replaces the block between these markers, one block per setting
# of live updates, so that runs with and without them can share a page.
RESULTS_START = "<!-- record_stream results, live updates {}: start -->"
RESULTS_END = "<!-- record_stream results, live updates {}: end -->"

BARE_COLUMNS = (
    "execution_id",
    "message_id",
    "sequence",
    "model",
    "parent_tool_use_id",
    "service_tier",
    "inference_geo",
    "speed",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
    "price_source",
    "price_version",
    "output_final",
    "estimated",
    "arrived_at",
    "updated_at",
)


# Synthetic streams -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Response:
    """One API response: the SDK messages that carry it and its final counts."""

    message_id: str
    model: str
    parent_tool_use_id: str | None
    usage: dict
    output_tokens: int
    sdk_messages: tuple


def build_responses(seed: int, count: int) -> list[Response]:
    """Build `count` responses of one execution, the same for the same seed.

    Each response streams as the SDK yields it: message_start, two text
    deltas, one AssistantMessage (two, with the same id, for a response with
    a second content block), message_delta with the final output count and
    message_stop. Prompts grow by their cache writes and are read from the
    cache, and the whole prompt is written to the cache again after each
    compaction.
    """
    from tests.agents import stream

    rng = random.Random(seed)
    responses = []
    context = 0
    for sequence in range(1, count + 1):
        message_id = f"msg_bench_{seed}_{sequence:05d}"
        model = rng.choices(MODELS, MODEL_WEIGHTS)[0]
        parent = None
        if rng.random() < SUBAGENT_SHARE:
            parent = f"toolu_task_{seed}_{sequence // 20}"
        if context == 0 or context > MAX_CONTEXT_TOKENS:
            context = rng.randint(2_000, 8_000)
            if rng.random() < ONE_HOUR_CACHE_SHARE:
                write_5m, write_1h, read = 0, context, 0
            else:
                write_5m, write_1h, read = context, 0, 0
        else:
            write_5m, write_1h, read = rng.randint(100, 3_000), 0, context
            context += write_5m
        usage = stream.usage(
            input=rng.randint(1, 400),
            output=1,
            write_5m=write_5m,
            write_1h=write_1h,
            read=read,
        )
        output_tokens = rng.randint(20, 1_500)
        sdk_messages = [
            stream.message_start(message_id, model, usage, parent=parent),
            stream.text_delta("Reading the diff.", parent=parent),
            stream.text_delta(" Two call sites change.", parent=parent),
            stream.assistant(message_id, model, usage, parent=parent),
        ]
        if rng.random() < SECOND_BLOCK_SHARE:
            sdk_messages.append(
                stream.assistant(message_id, model, usage, tool=True, parent=parent)
            )
        sdk_messages += [
            stream.message_delta(output_tokens, parent=parent),
            stream.message_stop(parent=parent),
        ]
        responses.append(
            Response(
                message_id, model, parent, usage, output_tokens, tuple(sdk_messages)
            )
        )
    return responses


def build_result(responses: list[Response]):
    """Build the ResultMessage that ends the stream, with per-model output totals."""
    from tests.agents import stream

    model_usage: dict[str, dict[str, int]] = {}
    for response in responses:
        totals = model_usage.setdefault(response.model, {"outputTokens": 0})
        totals["outputTokens"] += response.output_tokens
    main_turns = sum(1 for response in responses if response.parent_tool_use_id is None)
    return stream.result(num_turns=main_turns, model_usage=model_usage)


def build_bare_rows(execution_id: int, responses: list[Response]) -> list[tuple]:
    """Return the rows the recorder ends with for `responses`, as BARE_COLUMNS tuples."""
    from django.utils import timezone

    from agents.pricing import TokenUsage, price_usage

    now = timezone.now()
    rows = []
    for sequence, response in enumerate(responses, start=1):
        usage = TokenUsage.from_api(response.usage).with_output(response.output_tokens)
        quote = price_usage(response.model, usage, now)
        rows.append(
            (
                execution_id,
                response.message_id,
                sequence,
                response.model,
                response.parent_tool_use_id or "",
                usage.service_tier,
                usage.inference_geo,
                usage.speed,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_write_5m_tokens,
                usage.cache_write_1h_tokens,
                usage.cache_read_tokens,
                usage.web_search_requests,
                quote.cost_usd,
                quote.source,
                quote.version,
                True,
                quote.estimated,
                now,
                now,
            )
        )
    return rows


# Worker processes ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
    """One execution's share of a timed run, sent to one worker."""

    mode: str
    execution_id: int
    messages: int
    seed: int
    time_limit: float
    profile_path: str | None = None
    live_updates: bool = True


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """Measurements of one worker in a timed run, with CPU times in seconds."""

    started: float
    finished: float
    messages: int
    client_cpu: float
    server_cpu: float | None


def serve(index: int, inbox, outbox, progress) -> None:
    """Run tasks from `inbox` until it yields None: prepare, report ready, run on "go".

    Each worker is a process with its own Django connection and, for bare
    runs, its own psycopg connection, kept open from task to task like a
    Celery prefork worker's.
    """
    try:
        django.setup()
        # What a Celery pool process does when it starts (config/celery.py).
        from config.worker import worker_process_prepare

        worker_process_prepare()
    except Exception:
        outbox.put(("error", index, traceback.format_exc()))
        return
    bare_connection = None
    while (task := inbox.get()) is not None:
        try:
            if task.mode == RECORDER:
                run, backend_pid = prepare_recorder(task)
            else:
                bare_connection = bare_connection or connect_bare()
                run, backend_pid = prepare_bare(task, bare_connection)
        except Exception:
            outbox.put(("error", index, traceback.format_exc()))
            continue
        outbox.put(("ready", index))
        if inbox.get() != "go":
            break
        try:
            profiler = cProfile.Profile() if task.profile_path else None
            client_start = time.process_time()
            server_start = process_cpu_seconds(backend_pid)
            started = time.monotonic()
            if profiler is not None:
                profiler.enable()
            done = run(started + task.time_limit, progress)
            if profiler is not None:
                profiler.disable()
            finished = time.monotonic()
            client_cpu = time.process_time() - client_start
            server_end = process_cpu_seconds(backend_pid)
            server_cpu = None
            if server_start is not None and server_end is not None:
                server_cpu = server_end - server_start
            if profiler is not None:
                profiler.dump_stats(task.profile_path)
        except Exception:
            outbox.put(("error", index, traceback.format_exc()))
            continue
        outbox.put(
            (
                "done",
                index,
                WorkerResult(started, finished, done, client_cpu, server_cpu),
            )
        )
    if bare_connection is not None:
        bare_connection.close()


def process_cpu_seconds(pid: int) -> float | None:
    """Return the CPU time used so far by process `pid`, or None when unreadable.

    The server's backend processes are readable only when PostgreSQL runs
    on this machine.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime, fields 14 and 15 of proc(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def add_progress(progress, count: int) -> None:
    with progress.get_lock():
        progress.value += count


def warm_up_pricing() -> None:
    """Fill the price caches, as the first execution in a long-lived worker does."""
    from django.utils import timezone

    from agents.pricing import TokenUsage, price_usage

    for model in MODELS:
        price_usage(model, TokenUsage(input_tokens=1), timezone.now())


def prepare_recorder(task: Task):
    """Build the stream of `task`, and return the timed part with the backend pid.

    The timed part records the stream.
    """
    from django.conf import settings
    from django.db import connection

    from agents.models import Execution
    from agents.recorder import StreamRecorder

    responses = build_responses(task.seed, task.messages)
    result = build_result(responses)
    if not task.live_updates:
        settings.AGENTMARGIN_LIVE_UPDATES = False
    execution = Execution.objects.get(pk=task.execution_id)
    warm_up_pricing()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]

    def run(deadline: float, progress) -> int:
        recorder = StreamRecorder(execution)
        recorder.start()
        done = 0
        for response in responses:
            for message in response.sdk_messages:
                recorder.handle(message)
            done += 1
            if done % PROGRESS_STEP == 0:
                add_progress(progress, PROGRESS_STEP)
                if time.monotonic() > deadline:
                    break
        if done == len(responses):
            recorder.handle(result)
        recorder.finish()
        add_progress(progress, done % PROGRESS_STEP)
        return done

    return run, backend_pid


def connect_bare() -> psycopg.Connection:
    """Open a psycopg connection to Django's database, in transaction mode."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    return psycopg.connect(
        dbname=database["NAME"],
        user=database["USER"],
        password=database["PASSWORD"] or None,
        host=database["HOST"],
        port=database["PORT"] or None,
        autocommit=False,
    )


def prepare_bare(task: Task, connection: psycopg.Connection):
    """Build the rows of `task`, and return the timed part with the backend pid.

    The timed part sends one INSERT and one COMMIT per row.
    """
    from agents.models import ApiMessage

    rows = build_bare_rows(task.execution_id, build_responses(task.seed, task.messages))
    insert = (
        sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})")
        .format(
            table=sql.Identifier(ApiMessage._meta.db_table),
            columns=sql.SQL(", ").join(map(sql.Identifier, BARE_COLUMNS)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(BARE_COLUMNS)),
        )
        .as_string(connection)
    )
    backend_pid = connection.info.backend_pid

    def run(deadline: float, progress) -> int:
        done = 0
        with connection.cursor() as cursor:
            for row in rows:
                cursor.execute(insert, row)
                connection.commit()
                done += 1
                if done % PROGRESS_STEP == 0:
                    add_progress(progress, PROGRESS_STEP)
                    if time.monotonic() > deadline:
                        break
        add_progress(progress, done % PROGRESS_STEP)
        return done

    return run, backend_pid


@dataclasses.dataclass(frozen=True)
class RunResult:
    workers: list[WorkerResult]
    # CPU seconds used by every process on the machine during the run.
    machine_busy: float | None


class WorkerPool:
    """Long-lived worker processes, each with its own inbox and one shared outbox."""

    def __init__(self, size: int, start_method: str):
        context = multiprocessing.get_context(start_method)
        self.outbox = context.Queue()
        self.progress = context.Value("q", 0)
        self.inboxes = [context.Queue() for _ in range(size)]
        self.processes = [
            context.Process(
                target=serve,
                args=(index, inbox, self.outbox, self.progress),
                name=f"record-stream-worker-{index}",
                daemon=True,
            )
            for index, inbox in enumerate(self.inboxes)
        ]
        for process in self.processes:
            process.start()

    def run(
        self, tasks: list[Task], *, label: str, total: int, timeout: float
    ) -> RunResult:
        """Hand one task to each of the first len(tasks) workers and start them together."""
        with self.progress.get_lock():
            self.progress.value = 0
        for inbox, task in zip(self.inboxes, tasks, strict=False):
            inbox.put(task)
        self._collect(len(tasks), timeout=STARTUP_TIMEOUT_SECONDS)
        busy = machine_busy_seconds()
        started = time.monotonic()
        for inbox in self.inboxes[: len(tasks)]:
            inbox.put("go")
        replies = self._collect(
            len(tasks), timeout=timeout, label=label, total=total, since=started
        )
        busy_end = machine_busy_seconds()
        machine_busy = (
            busy_end - busy if busy is not None and busy_end is not None else None
        )
        return RunResult([reply[2] for reply in replies], machine_busy)

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()

    def _collect(
        self, count, *, timeout, label=None, total=0, since=0.0
    ) -> list[tuple]:
        deadline = time.monotonic() + timeout
        replies = []
        while len(replies) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchmarkError(
                    f"Timed out after {timeout:.0f} s waiting for "
                    f"{count - len(replies)} of {count} workers."
                )
            try:
                reply = self.outbox.get(
                    timeout=min(PROGRESS_INTERVAL_SECONDS, remaining)
                )
            except queue.Empty:
                self._check_alive()
                if label:
                    elapsed = time.monotonic() - since
                    print(
                        f"  {label}: {self.progress.value:,}/{total:,} messages, {elapsed:.1f} s",
                        flush=True,
                    )
                continue
            if reply[0] == "error":
                raise BenchmarkError(f"Worker {reply[1]} failed:\n{reply[2]}")
            replies.append(reply)
        return replies

    def _check_alive(self) -> None:
        for process in self.processes:
            if not process.is_alive():
                raise BenchmarkError(
                    f"Worker process {process.name} exited with code {process.exitcode}."
                )


# Runs and checks -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One timed run; CPU times in seconds, None where they could not be read."""

    mode: str
    concurrency: int
    repeat: int
    messages: int
    seconds: float
    stopped_early: bool
    client_cpu: float
    server_cpu: float | None
    machine_busy: float | None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def client_us_per_message(self) -> float:
        return self.client_cpu / self.messages * 1e6

    @property
    def server_us_per_message(self) -> float | None:
        if self.server_cpu is None:
            return None
        return self.server_cpu / self.messages * 1e6

    @property
    def other_cores(self) -> float | None:
        """Cores kept busy by processes outside the benchmark, on average."""
        if self.machine_busy is None or self.server_cpu is None:
            return None
        other = self.machine_busy - self.client_cpu - self.server_cpu
        return max(other, 0.0) / self.seconds


@dataclasses.dataclass(frozen=True)
class StoredTotals:
    rows: int
    output_tokens: int
    cost_usd: Decimal


def split_messages(messages: int, concurrency: int) -> list[int]:
    share, remainder = divmod(messages, concurrency)
    return [share + (1 if index < remainder else 0) for index in range(concurrency)]


def create_executions(count: int, label: str) -> list[int]:
    from agents.models import Execution, Workflow
    from customers.models import Customer

    customer, _ = Customer.objects.get_or_create(
        slug="bench", defaults={"name": "Benchmark"}
    )
    workflow, _ = Workflow.objects.get_or_create(
        slug="bench", defaults={"name": "Benchmark", "model": MODELS[0]}
    )
    executions = Execution.objects.bulk_create(
        Execution(
            customer=customer,
            workflow=workflow,
            prompt=f"{label}, execution {index + 1}",
            requested_model=MODELS[0],
        )
        for index in range(count)
    )
    return [execution.pk for execution in executions]


def checkpoint() -> None:
    """Flush dirty pages now, so no run pays for the previous run's checkpoint."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


def build_tasks(*, mode, concurrency, repeat, execution_ids, args) -> list[Task]:
    tasks = []
    shares = split_messages(args.messages, concurrency)
    for index, (execution_id, messages) in enumerate(
        zip(execution_ids, shares, strict=True)
    ):
        profile_path = None
        if args.profile and mode == RECORDER:
            name = f"recorder-c{concurrency}-r{repeat + 1}-w{index}.prof"
            profile_path = str(args.profile / name)
        tasks.append(
            Task(
                mode=mode,
                execution_id=execution_id,
                messages=messages,
                # The recorder and bare runs of one concurrency get the same
                # streams, so their stored totals can be compared.
                seed=concurrency * 1000 + index,
                time_limit=args.time_limit,
                profile_path=profile_path,
                live_updates=args.live_updates,
            )
        )
    return tasks


def run_once(
    pool, *, mode, concurrency, repeat, args
) -> tuple[Measurement, StoredTotals]:
    """Time one run of `mode`, print its result and check what it stored."""
    label = f"{mode} x{concurrency}, run {repeat + 1}"
    execution_ids = create_executions(concurrency, label)
    tasks = build_tasks(
        mode=mode,
        concurrency=concurrency,
        repeat=repeat,
        execution_ids=execution_ids,
        args=args,
    )
    checkpoint()

    result = pool.run(
        tasks,
        label=label,
        total=args.messages,
        timeout=args.time_limit + STUCK_GRACE_SECONDS,
    )
    workers = result.workers
    done = sum(worker.messages for worker in workers)
    server_cpus = [worker.server_cpu for worker in workers]
    measurement = Measurement(
        mode=mode,
        concurrency=concurrency,
        repeat=repeat,
        messages=done,
        seconds=max(worker.finished for worker in workers)
        - min(worker.started for worker in workers),
        stopped_early=done < args.messages,
        client_cpu=sum(worker.client_cpu for worker in workers),
        server_cpu=None if None in server_cpus else sum(server_cpus),
        machine_busy=result.machine_busy,
    )
    print(f"  {label}: {describe(measurement)}", flush=True)

    stored = check_stored(mode, execution_ids, done)
    return measurement, stored


def describe(measurement: Measurement) -> str:
    text = (
        f"{measurement.messages:,} messages in {measurement.seconds:.2f} s, "
        f"{measurement.rate:,.0f} msgs/s; CPU per message: client "
        f"{measurement.client_us_per_message:,.0f} us"
    )
    if measurement.server_us_per_message is not None:
        text += f", server {measurement.server_us_per_message:,.0f} us"
    if measurement.other_cores is not None:
        text += f"; other processes used {measurement.other_cores:.2f} cores"
    if measurement.stopped_early:
        text += " (stopped at --time-limit)"
    return text


def check_stored(
    mode: str, execution_ids: list[int], expected_rows: int
) -> StoredTotals:
    """Check the rows a run stored and return their totals.

    For the recorder, the executions' running totals must match their rows,
    and every row must carry its final output count.
    """
    from django.db.models import Count, Q, Sum

    from agents.models import ApiMessage, Execution

    rows = ApiMessage.objects.filter(execution_id__in=execution_ids).aggregate(
        rows=Count("id"),
        output=Sum("output_tokens", default=0),
        cost=Sum("cost_usd", default=Decimal(0)),
        not_final=Count("id", filter=Q(output_final=False)),
    )
    stored = StoredTotals(rows["rows"], rows["output"], rows["cost"])
    problems = []
    if stored.rows != expected_rows:
        problems.append(f"{stored.rows:,} rows stored, expected {expected_rows:,}")
    if rows["not_final"]:
        problems.append(f"{rows['not_final']:,} rows without their final output count")
    if mode == RECORDER:
        executions = Execution.objects.filter(pk__in=execution_ids).aggregate(
            messages=Sum("api_message_count"),
            output=Sum("output_tokens"),
            cost=Sum("cost_usd"),
        )
        if executions["messages"] != stored.rows:
            problems.append(f"executions count {executions['messages']:,} messages")
        if executions["output"] != stored.output_tokens:
            problems.append(
                f"executions total {executions['output']:,} output tokens, "
                f"rows {stored.output_tokens:,}"
            )
        if executions["cost"] != stored.cost_usd:
            problems.append(
                f"executions cost {executions['cost']}, rows {stored.cost_usd}"
            )
    if problems:
        raise BenchmarkError(
            f"The {mode} run stored wrong data: " + "; ".join(problems) + "."
        )
    return stored


class EventWatcher:
    """A pattern subscription that receives and counts the benchmark's live updates.

    A pattern subscription on the channel prefix makes the workers' publishing
    threads build and send every event, as when someone watches every
    execution. A thread of the benchmark process reads and counts them.
    """

    def __init__(self, redis_url: str, prefix: str):
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{prefix}:*")
        if self.pubsub.parse_response(block=False, timeout=5) is None:
            raise BenchmarkError(
                f"Subscribing to Redis at {redis_url} timed out: no confirmation within 5 s."
            )
        self._lock = threading.Lock()
        self._received = 0
        self._last_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "pmessage":
                with self._lock:
                    self._received += 1
                    self._last_at = time.monotonic()

    def take(self, quiet_seconds: float = 0.5) -> int:
        """Return the events received since the last call, once none came for `quiet_seconds`."""
        while True:
            with self._lock:
                idle = time.monotonic() - self._last_at
                if idle >= quiet_seconds:
                    received, self._received = self._received, 0
                    return received
            time.sleep(quiet_seconds - idle)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()


def run_all(pool, args, watcher: EventWatcher | None = None) -> list[Measurement]:
    """Time the recorder and bare inserts at each concurrency, alternating their order."""
    measurements = []
    for concurrency in args.concurrency:
        for repeat in range(args.repeat):
            order = (RECORDER, BARE) if repeat % 2 == 0 else (BARE, RECORDER)
            stored = {}
            for mode in order:
                measurement, stored[mode] = run_once(
                    pool, mode=mode, concurrency=concurrency, repeat=repeat, args=args
                )
                measurements.append(measurement)
                if watcher is not None:
                    check_watched(watcher, mode, measurement)
            if stored[RECORDER].rows == stored[BARE].rows == args.messages and (
                stored[RECORDER] != stored[BARE]
            ):
                raise BenchmarkError(
                    f"Recorder and bare rows differ for the same streams: "
                    f"{stored[RECORDER]} and {stored[BARE]}."
                )
    return measurements


def check_watched(watcher: EventWatcher, mode: str, measurement: Measurement) -> None:
    """Check that a watched recorder run published every update on both channels.

    Each API message is announced when its response starts and when it is
    complete, and each execution's end once, each on two channels.
    """
    # NOTE: every message under the channel prefix counts, so another
    # publisher on the same Redis and prefix makes this check fail.
    received = watcher.take()
    if mode != RECORDER:
        return
    expected = 4 * measurement.messages + 2 * measurement.concurrency
    print(f"    live events received: {received:,} (expected {expected:,})")
    if received != expected:
        raise BenchmarkError(
            f"Live events missing or extra: the watcher received {received:,} "
            f"instead of {expected:,}. Check that nothing else publishes under "
            "the channel prefix on this Redis."
        )


# Report ----------------------------------------------------------------


def read_environment(args) -> dict[str, str]:
    """Return the facts about the machine and server that the results depend on."""
    from django.conf import settings
    from django.db import connection

    from agents.models import Execution
    from agents.signals import api_message_recorded

    live_updates = args.live_updates and getattr(
        settings, "AGENTMARGIN_LIVE_UPDATES", True
    )
    facts = {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "psycopg": psycopg.__version__,
        "receivers": (
            "connected" if api_message_recorded.has_listeners(Execution) else "none"
        ),
        "live_updates": "off",
    }
    if live_updates:
        facts["live_updates"] = "on, watched" if args.watch else "on"
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            # Any pattern subscription makes the workers publish every event.
            facts["patterns"] = str(client.pubsub_numpat())
        finally:
            client.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        facts["postgresql"] = cursor.fetchone()[0]
        for setting in (
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "commit_delay",
        ):
            cursor.execute(f"SHOW {setting}")
            facts[setting] = cursor.fetchone()[0]
    return facts


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, which show other work on the machine."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_rates(rates: list[float]) -> str:
    median = statistics.median(rates)
    if len(rates) == 1:
        return f"{median:,.0f}"
    return f"{median:,.0f} ({min(rates):,.0f}–{max(rates):,.0f})"


def format_median(values: list[float | None], digits: int = 0) -> str:
    if not values or None in values:
        return "n/a"
    return f"{statistics.median(values):,.{digits}f}"


@dataclasses.dataclass(frozen=True)
class Summary:
    rates: list[list[str]]
    cpu: list[list[str]]
    verdicts: list[str]


RATES_HEADER = [
    "Concurrent executions",
    "Messages per execution",
    "Recorder msgs/s",
    "Bare msgs/s",
    "Recorder / bare",
]
CPU_HEADER = [
    "Concurrent executions",
    "Recorder client µs",
    "Recorder server µs",
    "Bare client µs",
    "Bare server µs",
    "Other processes, cores",
]


def summarize(measurements: list[Measurement], args) -> Summary:
    """Return the median rates and CPU times per concurrency, and the verdict on each target."""
    rates_table = []
    cpu_table = []
    ratios = {}
    recorder_medians = {}
    for concurrency in args.concurrency:
        runs = {
            mode: [
                measurement
                for measurement in measurements
                if measurement.mode == mode and measurement.concurrency == concurrency
            ]
            for mode in (RECORDER, BARE)
        }
        rates = {mode: [run.rate for run in runs[mode]] for mode in runs}
        recorder = statistics.median(rates[RECORDER])
        ratios[concurrency] = recorder / statistics.median(rates[BARE])
        recorder_medians[concurrency] = recorder
        shares = split_messages(args.messages, concurrency)
        per_execution = (
            f"{shares[0]:,}"
            if len(set(shares)) == 1
            else f"{shares[-1]:,}–{shares[0]:,}"
        )
        rates_table.append(
            [
                str(concurrency),
                per_execution,
                format_rates(rates[RECORDER]),
                format_rates(rates[BARE]),
                f"{ratios[concurrency]:.2f}",
            ]
        )
        cpu_table.append(
            [
                str(concurrency),
                format_median([run.client_us_per_message for run in runs[RECORDER]]),
                format_median([run.server_us_per_message for run in runs[RECORDER]]),
                format_median([run.client_us_per_message for run in runs[BARE]]),
                format_median([run.server_us_per_message for run in runs[BARE]]),
                format_median(
                    [run.other_cores for run in runs[RECORDER] + runs[BARE]], 2
                ),
            ]
        )
    lowest = min(ratios, key=ratios.get)
    verdicts = [
        f"Recorder at least half the bare rate at every concurrency: "
        f"{'met' if ratios[lowest] >= 0.5 else 'missed'} "
        f"(lowest ratio {ratios[lowest]:.2f}, at {lowest})."
    ]
    if 16 in recorder_medians:
        rate = recorder_medians[16]
        verdicts.append(
            f"Recorder at least 2,000 msgs/s with 16 executions: "
            f"{'met' if rate >= 2000 else 'missed'} ({rate:,.0f} msgs/s)."
        )
    if any(measurement.stopped_early for measurement in measurements):
        verdicts.append(
            "Some runs stopped at --time-limit; their rates cover the part done."
        )
    return Summary(rates_table, cpu_table, verdicts)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(row[column]) for row in [header, *rows])
        for column in range(len(header))
    ]
    lines = []
    for row in [header, *rows]:
        cells = [cell.rjust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown_results(summary: Summary, facts, args, command: str) -> str:
    lines = [
        RESULTS_START.format(facts["live_updates"]),
        f"Measured on {datetime.now(UTC).date().isoformat()} with `{command}`.",
        "",
        f"- Machine: {facts['cpus']} CPUs ({facts['cpu_model']}), "
        f"Python {facts['python']}, Django {facts['django']}, psycopg {facts['psycopg']}.",
        f"- Server: {facts['postgresql']}.",
        f"- Durability: synchronous_commit={facts['synchronous_commit']}, "
        f"fsync={facts['fsync']}, wal_sync_method={facts['wal_sync_method']}, "
        f"commit_delay={facts['commit_delay']}.",
        f"- Receivers of api_message_recorded: {facts['receivers']}; "
        f"AGENTMARGIN_LIVE_UPDATES in the workers: {facts['live_updates']}"
        + (
            f"; other pattern subscriptions on Redis: {facts['patterns']}."
            if "patterns" in facts
            else "."
        ),
        f"- Load average before the runs: {facts['load_before']}; after: "
        f"{facts['load_after']}.",
        f"- {args.messages:,} API messages per run, {args.repeat} runs of each kind per "
        "concurrency. Each rate is the median, with the lowest and highest in brackets.",
        "",
        *markdown_table(RATES_HEADER, summary.rates),
        "",
        "CPU time per message, medians over the runs: client is the worker processes, "
        "server their PostgreSQL backends. Other processes is the CPU that the rest of "
        "the machine used during the runs, in cores.",
        "",
        *markdown_table(CPU_HEADER, summary.cpu),
        "",
        *(f"- {verdict}" for verdict in summary.verdicts),
        RESULTS_END.format(facts["live_updates"]),
    ]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, block: str, live_updates: str) -> None:
    """Replace the results block of `path` for `live_updates`, or append one."""
    start_marker = RESULTS_START.format(live_updates)
    end_marker = RESULTS_END.format(live_updates)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find(start_marker)
    end = text.find(end_marker)
    if start != -1 and end != -1:
        text = text[:start] + block.rstrip("\n") + text[end + len(end_marker) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


# Command line ----------------------------------------------------------


def parse_concurrency(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid concurrency {value!r}: expected integers separated by commas, e.g. 1,4,16"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid concurrency {value!r}: each must be 1 or more"
        )
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=10_000,
        help="API messages per timed run (default 10000)",
    )
    parser.add_argument(
        "--concurrency",
        type=parse_concurrency,
        default=[1, 4, 16],
        help="executions recorded at once, one worker process each, comma-separated "
        "(default 1,4,16)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs of each kind per concurrency; the table shows the median (default 3)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        help="seconds after which a timed run stops and reports the messages done so far "
        "(default 60)",
    )
    parser.add_argument(
        "--database",
        default=DEFAULT_BENCH_DATABASE,
        help="name of the database to create, use and drop on the server of DATABASE_URL "
        f"(default {DEFAULT_BENCH_DATABASE})",
    )
    parser.add_argument(
        "--start-method",
        choices=("spawn", "fork", "forkserver"),
        default="spawn",
        help="multiprocessing start method of the worker processes (default spawn)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory to write a cProfile file per recorder worker and run into; "
        "profiling slows the recorder, so its rates are not comparable",
    )
    parser.add_argument(
        "--no-live-updates",
        dest="live_updates",
        action="store_false",
        help="set AGENTMARGIN_LIVE_UPDATES to False in the workers, so that the recorder "
        "publishes nothing to Redis and only its database work is measured",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="subscribe to every live-update channel from the benchmark process, so "
        "that the workers build and publish every event, as when someone watches "
        "each execution, and check that every event arrives",
    )
    parser.add_argument(
        "--write-doc", type=Path, help="markdown file whose results block to replace"
    )

    args = parser.parse_args(argv)
    if args.messages < max(args.concurrency):
        parser.error("--messages must be at least the highest --concurrency")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    if args.time_limit <= 0:
        parser.error("--time-limit must be positive")
    if args.watch and not args.live_updates:
        parser.error("--watch needs live updates; drop --no-live-updates")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    database = BenchmarkDatabase(
        os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL), args.database
    )
    print(f"Creating database {database.name} and migrating it.", flush=True)
    database.create()
    try:
        # Worker processes inherit the environment, so they use it too.
        os.environ["DATABASE_URL"] = database.url
        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        facts = read_environment(args)
        facts["load_before"] = load_average()
        # A forked worker must not inherit this process's open connection.
        connections.close_all()
        print(
            f"Starting {max(args.concurrency)} worker processes ({args.start_method})."
        )
        pool = WorkerPool(max(args.concurrency), args.start_method)
        watcher = None
        try:
            if args.watch:
                from django.conf import settings

                from agents.live import channel_prefix

                watcher = EventWatcher(settings.REDIS_URL, channel_prefix())
            measurements = run_all(pool, args, watcher)
        finally:
            if watcher is not None:
                watcher.close()
            pool.close()
            connections.close_all()
    finally:
        database.drop()
        print(f"Dropped database {database.name}.", flush=True)

    facts["load_after"] = load_average()
    summary = summarize(measurements, args)
    print()
    print(text_table(RATES_HEADER, summary.rates))
    print()
    print("CPU time per message (medians):")
    print(text_table(CPU_HEADER, summary.cpu))
    print()
    for verdict in summary.verdicts:
        print(verdict)
    if args.write_doc:
        command = " ".join(
            ["benchmarks/record_stream.py", *(sys.argv[1:] if argv is None else argv)]
        )
        block = markdown_results(summary, facts, args, command)
        write_doc(args.write_doc, block, facts["live_updates"])
        print(f"Wrote the results to {args.write_doc}.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"Benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
