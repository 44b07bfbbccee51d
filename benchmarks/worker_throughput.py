"""Measure how many short simulated executions per second two Celery workers finish.

N executions of the simulator's `default` scenario (one API response) run
twice in the same run of this script. First they run one after another in
this process, through `agents.runner.run_execution`. Then
`agents.jobs.execution_enqueue` queues them for one
`celery worker --pool prefork --concurrency 2`, which has two pool
processes. Both modes drive the real Claude Code CLI through the Agent SDK
against the project's API simulator, which this process serves on
127.0.0.1. The script prints executions per second of both and their ratio.

The script creates its own database (`agentmargin_bench_worker` unless
`--database` names another) on the server of DATABASE_URL, migrates it and
drops it at the end. The worker reads its own Redis queue, which is deleted
at the end. Both this process and the worker use config.settings.test, whose
API target is only ever the local simulator. AGENTMARGIN_CUSTOMER_CONCURRENCY is set to the number
of executions, so the per-customer limit never holds an execution back.

    .venv/bin/python benchmarks/worker_throughput.py --executions 40 \\
        --markdown /tmp/worker_throughput.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import django

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import BenchmarkDatabase, BenchmarkError, machine_busy_seconds  # noqa: E402

# Same default as config.settings.test.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/agentmargin"
DEFAULT_BENCH_DATABASE = "agentmargin_bench_worker"

SCENARIO = "default"
MESSAGES_PATH = "/v1/messages"
PROMPT = f"[sim:{SCENARIO}] Say hello."
# The worker imports Django, Celery and the Agent SDK before it reports ready.
WORKER_READY_TIMEOUT_SECONDS = 120.0
WORKER_STOP_TIMEOUT_SECONDS = 20.0
POLL_INTERVAL_SECONDS = 0.1
PROGRESS_INTERVAL_SECONDS = 2.0
WORKER_LOG_TAIL_LINES = 40
# Thresholds of the written reading: other processes' average CPU use above
# which the machine counts as shared, and the busy share that counts as
# saturated. Judgment calls, not measured limits.
OTHER_CPUS_NOTICEABLE = 0.25
CPU_SATURATED_SHARE = 0.85

IN_PROCESS = "in-process"
WORKERS = "workers"


# Celery worker ---------------------------------------------------------


class CeleryWorker:
    """A `celery worker` process group on the benchmark's queue, logging to a file.

    The worker runs in a session of its own, so stopping it signals the
    whole group: the main process, its pool processes and their CLIs.
    """

    def __init__(self, *, queue: str, concurrency: int, log_path: Path):
        self.queue = queue
        self.concurrency = concurrency
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        """Start the worker with this process's environment and wait until it is ready."""
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--queues",
                self.queue,
                "--hostname",
                f"bench-worker-{os.getpid()}@%h",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "LOG_LEVEL": "INFO"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_SECONDS
        while " ready." not in self.log():
            self.check_running()
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"The Celery worker was not ready within "
                    f"{WORKER_READY_TIMEOUT_SECONDS:g} s. {self.describe_log()}"
                )
            time.sleep(0.2)

    def check_running(self) -> None:
        """Raise BenchmarkError when the worker's main process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchmarkError(
                f"The Celery worker exited with status {self.process.returncode}. "
                f"{self.describe_log()}"
            )

    def stop(self) -> None:
        """Send SIGTERM to the worker's process group, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=WORKER_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                print(
                    f"The Celery worker did not stop within "
                    f"{WORKER_STOP_TIMEOUT_SECONDS:g} s of SIGTERM, so it gets SIGKILL.",
                    flush=True,
                )
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=WORKER_STOP_TIMEOUT_SECONDS)
            except ProcessLookupError:
                pass
        if self.process is not None:
            # Pool processes or CLIs left behind by a crashed main process.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def cpu_seconds(self) -> float | None:
        """Return the CPU time of the worker's processes and the children they waited for.

        The pool processes wait for the CLIs they start, so every CLI that
        has exited is counted. Returns None when /proc is unreadable.
        """
        if self.process is None:
            return None
        pid = self.process.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
                pool_pids = [int(child) for child in file.read().split()]
            return sum(process_cpu_seconds(each) for each in [pid, *pool_pids])
        except OSError:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe_log(self) -> str:
        lines = self.log().splitlines()[-WORKER_LOG_TAIL_LINES:]
        return f"Last lines of its log {self.log_path}:\n" + "\n".join(lines)


def delete_queue(queue: str) -> None:
    """Delete the benchmark's queue, its messages and its bindings from the broker.

    kombu deletes only the bindings that its channel has declared, so the
    queue is declared on the channel first.
    """
    from config.celery import app as celery_app

    with celery_app.connection_for_write() as broker:
        bound = celery_app.amqp.queues[queue](broker.default_channel)
        bound.declare()
        bound.delete()


def check_broker() -> None:
    """Raise BenchmarkError unless the Celery broker accepts a connection."""
    from config.celery import app as celery_app

    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - kombu raises many types here
        raise BenchmarkError(
            f"The Celery broker {celery_app.conf.broker_url} is not reachable ({exc}). "
            "Start Redis or set REDIS_URL."
        ) from exc


# Phases ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Phase:
    """One timed set of executions. Times are in seconds, None where unreadable."""

    mode: str
    execution_ids: list[int]
    seconds: float
    # CPU time of this process and the worker's processes, each with the
    # children it has waited for, which include every CLI that has exited.
    cpu_seconds: float | None
    # CPU time that every process on the machine used, as a share of all CPUs.
    machine_busy_share: float | None
    # CPUs that processes other than the benchmark's and the worker's kept
    # busy on average, PostgreSQL and Redis included.
    other_cpus: float | None
    api_requests: int

    @property
    def rate(self) -> float:
        return len(self.execution_ids) / self.seconds

    @property
    def cpu_per_execution(self) -> float | None:
        if self.cpu_seconds is None:
            return None
        return self.cpu_seconds / len(self.execution_ids)


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU times in seconds at one moment, None where unreadable."""

    at: float  # time.monotonic()
    machine_busy: float | None
    benchmark: float
    worker: float | None

    def cpu_since(self, start: CpuSample) -> float | None:
        if self.worker is None or start.worker is None:
            return None
        return self.benchmark - start.benchmark + self.worker - start.worker

    def busy_share_since(self, start: CpuSample) -> float | None:
        if self.machine_busy is None or start.machine_busy is None:
            return None
        cpus = len(os.sched_getaffinity(0))
        return (self.machine_busy - start.machine_busy) / ((self.at - start.at) * cpus)

    def other_cpus_since(self, start: CpuSample) -> float | None:
        own = self.cpu_since(start)
        if own is None or self.machine_busy is None or start.machine_busy is None:
            return None
        other = self.machine_busy - start.machine_busy - own
        return max(other, 0.0) / (self.at - start.at)


def sample_cpu(worker: CeleryWorker) -> CpuSample:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(
        at=time.monotonic(),
        machine_busy=machine_busy_seconds(),
        benchmark=own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        worker=worker.cpu_seconds(),
    )


def process_cpu_seconds(pid: int) -> float:
    """Return the CPU time of process `pid` and of the children it has waited for.

    Raises OSError when the process is gone or /proc is unreadable.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime and cstime, fields 14 to 17 of proc(5), in clock ticks.
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def count_api_requests(simulator) -> int:
    """Return how many Messages API requests the simulator has returned status 200 for."""
    return sum(
        1
        for record in simulator.requests
        if record.method == "POST"
        and urllib.parse.urlsplit(record.path).path == MESSAGES_PATH
        and record.status == 200
    )


def run_in_process(
    customer, workflow, count: int, *, run_timeout: float, deadline: float
) -> list[int]:
    """Create and run `count` executions one after another and return their ids."""
    from agents.runner import run_execution
    from agents.services import execution_create

    execution_ids = []
    started = time.monotonic()
    last_report = started
    for number in range(1, count + 1):
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"Timed out: {number - 1} of {count} in-process executions finished "
                "before --timeout. Raise --timeout or look for a slow run."
            )
        execution = execution_create(
            customer=customer, workflow=workflow, prompt=f"{PROMPT} Run {number}."
        )
        run_execution(execution, timeout_seconds=run_timeout)
        execution_ids.append(execution.pk)
        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL_SECONDS or number == count:
            print(
                f"  {IN_PROCESS}: {number}/{count} finished, {now - started:.1f} s",
                flush=True,
            )
            last_report = now
    return execution_ids


def run_in_workers(
    customer, workflow, count: int, worker: CeleryWorker, *, deadline: float
) -> tuple[list[int], float]:
    """Queue `count` executions and wait until all have finished.

    Returns their ids and the wall-clock time of the last `finished_at`.
    """
    from django.db.models import Count

    from agents.jobs import execution_enqueue
    from agents.models import Execution

    execution_ids = [
        execution_enqueue(
            customer=customer, workflow=workflow, prompt=f"{PROMPT} Run {number}."
        ).pk
        for number in range(1, count + 1)
    ]
    executions = Execution.objects.filter(pk__in=execution_ids)
    started = time.monotonic()
    last_report = started
    while True:
        counts = dict(
            executions.order_by()
            .values("status")
            .annotate(total=Count("pk"))
            .values_list("status", "total")
        )
        waiting = counts.get(Execution.Status.QUEUED, 0) + counts.get(
            Execution.Status.RUNNING, 0
        )
        now = time.monotonic()
        if waiting == 0 or now - last_report >= PROGRESS_INTERVAL_SECONDS:
            print(
                f"  {WORKERS}: {count - waiting}/{count} finished, "
                f"{counts.get(Execution.Status.RUNNING, 0)} running, "
                f"{counts.get(Execution.Status.QUEUED, 0)} queued, "
                f"{now - started:.1f} s",
                flush=True,
            )
            last_report = now
        if waiting == 0:
            break
        worker.check_running()
        if now > deadline:
            raise BenchmarkError(
                f"Timed out: {count - waiting} of {count} executions finished in the "
                f"Celery worker before --timeout ({counts}). {worker.describe_log()}"
            )
        time.sleep(POLL_INTERVAL_SECONDS)
    last_finished = max(executions.values_list("finished_at", flat=True))
    return execution_ids, last_finished.timestamp()


def timed_in_process(customer, workflow, simulator, worker, args) -> Phase:
    requests_before = count_api_requests(simulator)
    start = sample_cpu(worker)
    execution_ids = run_in_process(
        customer,
        workflow,
        args.executions,
        run_timeout=args.run_timeout,
        deadline=start.at + args.timeout,
    )
    end = sample_cpu(worker)
    return Phase(
        mode=IN_PROCESS,
        execution_ids=execution_ids,
        seconds=end.at - start.at,
        cpu_seconds=end.cpu_since(start),
        machine_busy_share=end.busy_share_since(start),
        other_cpus=end.other_cpus_since(start),
        api_requests=count_api_requests(simulator) - requests_before,
    )


def timed_in_workers(customer, workflow, simulator, worker, args) -> Phase:
    requests_before = count_api_requests(simulator)
    start = sample_cpu(worker)
    # Wall-clock time, because the end is the last `finished_at`, which the
    # worker's pool processes write.
    started = time.time()
    execution_ids, finished = run_in_workers(
        customer,
        workflow,
        args.executions,
        worker,
        deadline=start.at + args.timeout,
    )
    end = sample_cpu(worker)
    return Phase(
        mode=WORKERS,
        execution_ids=execution_ids,
        seconds=finished - started,
        cpu_seconds=end.cpu_since(start),
        machine_busy_share=end.busy_share_since(start),
        other_cpus=end.other_cpus_since(start),
        api_requests=count_api_requests(simulator) - requests_before,
    )


def warm_up(customer, workflow, worker: CeleryWorker, args) -> None:
    """Run untimed executions in both places, so first-run costs are not timed.

    The first CLI start reads its files from disk and sets up its config
    directory. The worker gets one execution per pool process at once, so
    each pool process usually runs one.
    """
    deadline = time.monotonic() + args.timeout
    print(f"Warming up: {args.concurrency} executions through the worker.", flush=True)
    worker_ids, _ = run_in_workers(
        customer, workflow, args.concurrency, worker, deadline=deadline
    )
    check_executions(worker_ids, WORKERS)
    print("Warming up: 1 execution in-process.", flush=True)
    process_ids = run_in_process(
        customer, workflow, 1, run_timeout=args.run_timeout, deadline=deadline
    )
    check_executions(process_ids, IN_PROCESS)


# Checks and statistics -------------------------------------------------


def check_executions(execution_ids: list[int], mode: str) -> int:
    """Raise BenchmarkError unless every execution succeeded against the simulator.

    Returns how many succeeded. Each must have recorded one API message per
    response of the scenario, and only worker executions have a worker name.
    """
    from agents.models import Execution
    from agents.simulator import scenario_usage

    expected_messages = len(scenario_usage(SCENARIO))
    problems = []
    succeeded = 0
    for execution in Execution.objects.filter(pk__in=execution_ids).order_by("pk"):
        if execution.status != Execution.Status.SUCCEEDED:
            problems.append(
                f"execution {execution.pk} ended {execution.status}: "
                f"{execution.error or '(no error text)'}"
            )
            continue
        succeeded += 1
        if not execution.simulated:
            problems.append(f"execution {execution.pk} is not marked simulated")
        if execution.api_message_count != expected_messages:
            problems.append(
                f"execution {execution.pk} recorded {execution.api_message_count} API "
                f"messages, expected {expected_messages}"
            )
        if (mode == WORKERS) != bool(execution.worker):
            problems.append(
                f"execution {execution.pk} has worker {execution.worker!r} in the "
                f"{mode} phase"
            )
    missing = (
        len(execution_ids) - Execution.objects.filter(pk__in=execution_ids).count()
    )
    if missing:
        problems.append(f"{missing} executions are missing from the database")
    if problems:
        listed = "\n  ".join(problems[:10])
        raise BenchmarkError(
            f"{len(problems)} problems with the {mode} executions "
            f"({succeeded} of {len(execution_ids)} succeeded):\n  {listed}"
        )
    return succeeded


@dataclasses.dataclass(frozen=True)
class PhaseStats:
    """Per-execution times of a phase in seconds, read from the database."""

    succeeded: int
    median_run: float
    median_first_message: float
    peak_running: int


def phase_stats(phase: Phase) -> PhaseStats:
    """Read run times, time to the first API message and peak overlap of a phase.

    A run is `started_at` to `finished_at`. The first API message is
    recorded when its message_start event arrives, so its delay after
    `started_at` is mostly the CLI's start-up.
    """
    from django.db.models import Min

    from agents.models import Execution

    succeeded = check_executions(phase.execution_ids, phase.mode)
    executions = list(
        Execution.objects.filter(pk__in=phase.execution_ids).annotate(
            first_message_at=Min("api_messages__arrived_at")
        )
    )
    runs = [
        (execution.finished_at - execution.started_at).total_seconds()
        for execution in executions
    ]
    first_messages = [
        (execution.first_message_at - execution.started_at).total_seconds()
        for execution in executions
    ]
    # +1 at each start and -1 at each finish. A finish sorts before a start
    # at the same instant.
    events = sorted(
        [(execution.started_at, 1) for execution in executions]
        + [(execution.finished_at, -1) for execution in executions]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return PhaseStats(
        succeeded=succeeded,
        median_run=statistics.median(runs),
        median_first_message=statistics.median(first_messages),
        peak_running=peak,
    )


# Report ----------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, which show other work on the machine."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def cli_version() -> str:
    """Return the version of the CLI bundled with the Agent SDK, which the SDK runs first."""
    import claude_agent_sdk

    bundled = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    if not bundled.exists():
        return "unknown (no bundled CLI)"
    try:
        output = subprocess.run(
            [str(bundled), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return output.strip()


def read_environment() -> dict[str, str]:
    """Return the facts about the machine and software that the results depend on."""
    return {
        "cpus_online": str(os.cpu_count()),
        # What nproc(1) prints: the CPUs this process may run on.
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": metadata.version("celery"),
        "sdk": metadata.version("claude-agent-sdk"),
        "cli": cli_version(),
    }


RESULTS_HEADER = [
    "Mode",
    "Executions",
    "Succeeded",
    "API requests",
    "Seconds",
    "Executions/s",
    "Median run (s)",
    "Median to first API message (s)",
    "Peak running",
    "CPU per execution (s)",
    "Machine CPU busy",
    "Other processes (CPUs)",
]


def format_optional(value: float | None, spec: str) -> str:
    return "unknown" if value is None else format(value, spec)


def result_rows(phases: list[tuple[Phase, PhaseStats]]) -> list[list[str]]:
    return [
        [
            phase.mode,
            str(len(phase.execution_ids)),
            str(stats.succeeded),
            str(phase.api_requests),
            f"{phase.seconds:.1f}",
            f"{phase.rate:.2f}",
            f"{stats.median_run:.2f}",
            f"{stats.median_first_message:.2f}",
            str(stats.peak_running),
            format_optional(phase.cpu_per_execution, ".2f"),
            format_optional(phase.machine_busy_share, ".0%"),
            format_optional(phase.other_cpus, ".2f"),
        ]
        for phase, stats in phases
    ]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(row[column]) for row in [header, *rows])
        for column in range(len(header))
    ]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def reading(phases: list[tuple[Phase, PhaseStats]], args) -> str:
    """Return a plain-language reading of the numbers, built from the numbers."""
    (in_process, in_process_stats), (workers, workers_stats) = phases
    ratio = workers.rate / in_process.rate
    share = in_process_stats.median_first_message / in_process_stats.median_run
    slowdown = workers_stats.median_run / in_process_stats.median_run
    cpus = len(os.sched_getaffinity(0))
    sentences = [
        f"An execution of the `{SCENARIO}` scenario took "
        f"{in_process_stats.median_run:.2f} s in-process (median), {share:.0%} of "
        "it before the first API message arrived. The simulator responds at once, "
        "so that part is mostly the CLI starting, and the CLI's start-up "
        "dominates each run.",
        f"The {args.concurrency} pool processes finished {ratio:.2f} times as many "
        "executions per second as one process running them in turn, against an "
        f"ideal of {args.concurrency}. Through the worker a run took "
        f"{workers_stats.median_run:.2f} s ({slowdown:.2f} times as long), with up "
        f"to {workers_stats.peak_running} running at once.",
    ]
    if in_process.cpu_per_execution is not None and workers.cpu_per_execution:
        sentences.append(
            f"Each execution cost {in_process.cpu_per_execution:.2f} CPU seconds "
            f"in-process and {workers.cpu_per_execution:.2f} through the worker "
            "(the benchmark and worker processes with their CLIs, without "
            f"PostgreSQL and Redis). At that cost {cpus} CPUs allow at most about "
            f"{cpus / workers.cpu_per_execution:.1f} executions per second."
        )
    others = [phase.other_cpus for phase in (in_process, workers)]
    if None not in others and max(others) >= OTHER_CPUS_NOTICEABLE:
        sentences.append(
            f"Other processes kept {others[0]:.2f} CPUs busy on average during the "
            f"in-process phase and {others[1]:.2f} during the worker phase. One "
            "process running executions in turn needs about one CPU, and the pool "
            "processes need more, so that use takes more from the worker phase, "
            "and the ratio on an idle machine is probably higher."
        )
    elif workers.machine_busy_share is not None:
        busy = workers.machine_busy_share
        if busy >= CPU_SATURATED_SHARE:
            sentences.append(
                f"The machine's CPUs were {busy:.0%} busy during the worker phase, "
                "so the CLIs' start-up was bound by CPU, and more pool processes "
                "would not help on this machine."
            )
        else:
            sentences.append(
                f"The machine's CPUs were {busy:.0%} busy during the worker phase, "
                "so something besides CPU limited the rate, probably the CLI's "
                "I/O or the queue."
            )
    return " ".join(sentences)


def markdown_section(
    phases: list[tuple[Phase, PhaseStats]], facts: dict, args, command: str
) -> str:
    (in_process, _), (workers, _) = phases
    ratio = workers.rate / in_process.rate
    cpus = int(facts["cpus"])
    lines = [
        "## Executions per second through Celery workers",
        "",
        f"`benchmarks/worker_throughput.py` runs {args.executions} short simulated "
        f"executions (the simulator's `{SCENARIO}` scenario, one API response) "
        "twice. First they run one after another in the benchmark process "
        "through `agents.runner.run_execution`. Then `agents.jobs.execution_enqueue` "
        "queues them all for one `celery worker --pool prefork --concurrency "
        f"{args.concurrency}` ({args.concurrency} pool processes). Each "
        "execution starts the real Claude Code CLI through the Agent SDK against "
        "the local API simulator, served from the benchmark process. The benchmark "
        "uses its own PostgreSQL database and Redis queue, and sets "
        "AGENTMARGIN_CUSTOMER_CONCURRENCY to the number of executions, so the "
        "per-customer limit holds none back. Before timing, "
        f"{args.concurrency} executions go through the worker and one runs "
        "in-process, untimed. Every execution must end `succeeded` with one "
        "recorded API message.",
        "",
        f"Measured on {datetime.now(UTC).date().isoformat()} with:",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: nproc {facts['cpus']} ({facts['cpus_online']} CPUs online), "
        f"{facts['cpu_model']}.",
        f"- Software: Python {facts['python']}, Django {facts['django']}, Celery "
        f"{facts['celery']}, claude-agent-sdk {facts['sdk']}, CLI {facts['cli']}.",
        f"- Load average before the run: {facts['load_before']}; after: "
        f"{facts['load_after']}.",
        "",
        "Seconds run from creating the first execution to the end of the last. A "
        "run is `started_at` to `finished_at`, and its time to the first API "
        "message ends when that message's first stream event is recorded. Peak "
        "running is the most executions whose runs overlapped. CPU per execution "
        "is the CPU time of the benchmark and worker processes, including the "
        "CLIs they waited for, divided by the executions. Machine CPU busy is "
        "the CPU time of every process on the machine during the phase, as a "
        f"share of {cpus} CPUs. Other processes is the rest of that CPU time, "
        "PostgreSQL and Redis included, as the average number of CPUs it kept "
        "busy.",
        "",
        *markdown_table(
            ["Executions/s in-process", "Executions/s with workers", "Ratio"],
            [[f"{in_process.rate:.2f}", f"{workers.rate:.2f}", f"{ratio:.2f}"]],
        ),
        "",
        *markdown_table(RESULTS_HEADER, result_rows(phases)),
        "",
        reading(phases, args),
    ]
    return "\n".join(lines) + "\n"


# Command line ----------------------------------------------------------


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {number:g}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--executions",
        type=positive_int,
        default=40,
        help="executions timed in each mode (default 40)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=2,
        help="pool processes of the prefork Celery worker (default 2)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=600.0,
        help="seconds each mode, and the warm-up, may take before the benchmark "
        "fails (default 600)",
    )
    parser.add_argument(
        "--run-timeout",
        type=positive_int,
        default=120,
        help="seconds after which a single execution is interrupted, in both modes "
        "(default 120)",
    )
    parser.add_argument(
        "--database",
        default=DEFAULT_BENCH_DATABASE,
        help="name of the database to create, use and drop on the server of "
        f"DATABASE_URL (default {DEFAULT_BENCH_DATABASE})",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="file to write the results to as a markdown section, replacing it",
    )
    return parser.parse_args(argv)


def configure_environment(args, database_url: str, simulator_url: str, tmp: Path):
    """Set the environment that this process's settings and the worker's share.

    Django reads it at setup, and the worker inherits it.
    """
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url,
            "AGENTMARGIN_TASK_QUEUE": f"agentmargin-bench-worker-{os.getpid()}",
            "AGENTMARGIN_TEST_SIMULATOR_URL": simulator_url,
            "AGENTMARGIN_CUSTOMER_CONCURRENCY": str(args.executions),
            "AGENTMARGIN_RUN_TIMEOUT_SECONDS": str(args.run_timeout),
            "AGENTMARGIN_AGENT_CWD": str(tmp / "workspace"),
            "AGENTMARGIN_CLAUDE_CONFIG_DIR": str(tmp / "claude-config"),
            # The runner logs two INFO lines per execution, which would
            # interleave with the progress lines. The worker logs at INFO.
            "LOG_LEVEL": "WARNING",
        }
    )


def raise_system_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from agents.simulator import SimulatorServer

    # SIGTERM ends the run through the finally blocks, so the worker and
    # the database are cleaned up as on Ctrl-C.
    signal.signal(signal.SIGTERM, raise_system_exit)
    database = BenchmarkDatabase(
        os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL), args.database
    )
    facts = read_environment()
    facts["load_before"] = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="worker-throughput-") as tmp,
        SimulatorServer() as simulator,
    ):
        configure_environment(args, database.url, simulator.url, Path(tmp))
        django.setup()
        from agents.runner import resolve_target

        target = resolve_target()
        if not target.simulated:
            raise BenchmarkError(
                f"The API target is {target.description}, not the simulator at "
                f"{simulator.url}. The benchmark runs only against the simulator, "
                "so check that config.settings.test reads AGENTMARGIN_TEST_SIMULATOR_URL."
            )
        check_broker()
        queue = os.environ["AGENTMARGIN_TASK_QUEUE"]
        print(f"Creating database {database.name} and migrating it.", flush=True)
        database.create()
        worker = CeleryWorker(
            queue=queue,
            concurrency=args.concurrency,
            log_path=Path(tmp) / "worker.log",
        )
        try:
            phases = run_all(args, simulator, worker, queue)
        finally:
            clean_up(worker, queue, database)
    facts["load_after"] = load_average()

    (in_process, _), (workers, _) = phases
    print()
    print(text_table(RESULTS_HEADER, result_rows(phases)))
    print()
    print(
        f"{IN_PROCESS}: {in_process.rate:.2f} executions/s; {WORKERS} "
        f"({args.concurrency} prefork pool processes): {workers.rate:.2f} "
        f"executions/s; ratio {workers.rate / in_process.rate:.2f}."
    )
    if args.markdown:
        command = " ".join(
            [
                ".venv/bin/python benchmarks/worker_throughput.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        )
        args.markdown.write_text(
            markdown_section(phases, facts, args, command), encoding="utf-8"
        )
        print(f"Wrote the results to {args.markdown}.")
    return 0


def clean_up(worker: CeleryWorker, queue: str, database: BenchmarkDatabase) -> None:
    """Stop the worker, delete the queue and drop the database, each even if another fails."""
    from django.db import connections

    try:
        worker.stop()
        print("Stopped the Celery worker.", flush=True)
    finally:
        try:
            delete_queue(queue)
            print(f"Deleted queue {queue}.", flush=True)
        finally:
            connections.close_all()
            database.drop()
            print(f"Dropped database {database.name}.", flush=True)


def run_all(args, simulator, worker: CeleryWorker, queue: str):
    """Migrate, start the worker, warm up, time both modes and return (Phase, PhaseStats) pairs."""
    from django.core.management import call_command

    from agents.models import Workflow
    from config.celery import app as celery_app
    from customers.models import Customer

    call_command("migrate", verbosity=0)
    if celery_app.conf.task_default_queue != queue:
        raise BenchmarkError(
            f"Tasks would go to queue {celery_app.conf.task_default_queue!r}, not the "
            f"worker's {queue!r}."
        )
    customer = Customer.objects.create(name="Benchmark", slug="benchmark")
    workflow = Workflow.objects.create(
        slug="benchmark", name="Benchmark", model="claude-sonnet-4-6", max_turns=1
    )
    print(
        f"Starting a Celery worker (prefork, concurrency {args.concurrency}) on "
        f"queue {queue}.",
        flush=True,
    )
    worker.start()
    warm_up(customer, workflow, worker, args)

    print(f"Timing {args.executions} executions {IN_PROCESS}.", flush=True)
    in_process = timed_in_process(customer, workflow, simulator, worker, args)
    print(f"Timing {args.executions} executions through the worker.", flush=True)
    workers = timed_in_workers(customer, workflow, simulator, worker, args)
    return [(phase, phase_stats(phase)) for phase in (in_process, workers)]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"Benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
