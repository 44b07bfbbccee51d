"""Measure the import of Claude Code session logs, and a daily report after it.

The benchmark writes a tree of synthetic session logs shaped like Claude
Code's (`projects/<project>/<session>.jsonl` and subagent files), about
1 GB by default, streaming each line to disk. Then, in one run:

1. baseline: read every line of the tree and parse it with `json.loads`;
2. import: `import_claude_logs` (the service behind it) into PostgreSQL;
3. re-import of the same tree, which must record nothing new;
4. a daily report of cost and tokens per model from the stored messages;
5. `ccusage daily --offline --json --breakdown` on the same tree, when a
   ccusage executable is found (`--ccusage`, or `ccusage` on PATH).

The generator counts every distinct response it writes, and the import
must store exactly those, with the largest output count of each.

The benchmark creates its own database (`agentmargin_bench_logs` unless
`--database` names another) on the server of DATABASE_URL, migrates it and
drops it at the end. The tree is written under `--workdir` (default: the
system's temporary folder) and removed at the end unless `--keep-tree`.

    .venv/bin/python benchmarks/import_logs.py --size-mb 1024 \\
        --write-doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import django

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import BenchmarkDatabase, BenchmarkError  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
# The recorder logs one INFO line per session.
os.environ.setdefault("LOG_LEVEL", "WARNING")

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/agentmargin"
DEFAULT_BENCH_DATABASE = "agentmargin_bench_logs"
RESULTS_START = "<!-- import_logs results: start -->"
RESULTS_END = "<!-- import_logs results: end -->"

MEGABYTE = 1_000_000
# Disk kept free beyond the tree itself.
DISK_MARGIN_BYTES = 512 * MEGABYTE

# Model ids as the API reports them, with their share of responses.
MODELS = (
    ("claude-sonnet-4-5-20250929", 0.6),
    ("claude-haiku-4-5-20251001", 0.3),
    ("claude-opus-4-1-20250805", 0.1),
)
PROJECTS = 8
# Prompt size in tokens above which a session's context is compacted.
COMPACT_ABOVE_TOKENS = 160_000
DAYS = 30
FIRST_DAY = datetime(2026, 10, 1, 8, tzinfo=UTC)


@dataclasses.dataclass
class TreeFacts:
    """Counts of the generated tree: the figures the import must reproduce."""

    files: int = 0
    lines: int = 0
    bytes: int = 0
    sessions: int = 0
    responses: int = 0
    block_copies: int = 0
    # Model -> token sums of its distinct responses: input, 5-minute cache
    # writes, cache reads, output.
    tokens: dict[str, list[int]] = dataclasses.field(default_factory=dict)


class LogWriter:
    """Write one session's lines, streaming them to disk, and count them."""

    def __init__(self, path: Path, facts: TreeFacts, session_id: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("w", encoding="utf-8")
        self.facts = facts
        self.session_id = session_id
        facts.files += 1

    def write(self, line: dict) -> None:
        text = json.dumps(line, separators=(",", ":")) + "\n"
        self.handle.write(text)
        self.facts.lines += 1
        self.facts.bytes += len(text.encode("utf-8"))

    def close(self) -> None:
        self.handle.close()


class Generator:
    """Synthetic session logs with the line types and sizes of Claude Code 2.1."""

    def __init__(self, root: Path, seed: int, partial_share: float):
        self.root = root
        self.partial_share = partial_share
        self.random = random.Random(seed)
        words = (
            "def class import return value cost token model session agent cache "
            "request response invoice customer margin review change test file"
        ).split()
        self.text_pool = " ".join(self.random.choice(words) for _ in range(60_000))
        self.facts = TreeFacts()
        self.message_number = 0

    def text(self, size: int) -> str:
        start = self.random.randrange(0, len(self.text_pool) - size)
        return self.text_pool[start : start + size]

    def generate(self, target_bytes: int) -> TreeFacts:
        while self.facts.bytes < target_bytes:
            project = f"-home-dev-project-{self.random.randrange(PROJECTS)}"
            session_id = str(uuid.UUID(int=self.random.getrandbits(128), version=4))
            day = self.random.randrange(DAYS)
            start = FIRST_DAY + timedelta(days=day, minutes=self.random.randrange(600))
            path = self.root / "projects" / project / f"{session_id}.jsonl"
            self.session(path, session_id, start)
            self.facts.sessions += 1
        return self.facts

    def session(self, path: Path, session_id: str, start: datetime) -> None:
        writer = LogWriter(path, self.facts, session_id)
        clock = [start]
        base = {"sessionId": session_id, "version": "2.1.332", "cwd": "/home/dev"}

        writer.write(
            {"type": "queue-operation", "operation": "enqueue", **base, "content": "go"}
        )
        writer.write({"type": "summary", "summary": self.text(60), "leafUuid": "x"})
        for kind in ("environment", "skill_listing", "date", "prompt_snapshot"):
            writer.write(
                {
                    "type": "attachment",
                    "isSidechain": False,
                    "attachment": {"type": kind, "content": self.text(1500)},
                    "timestamp": _stamp(clock[0]),
                    **base,
                }
            )
        writer.write(
            {
                "type": "api-request-shape",
                "shape": {"system": [{"type": "text", "text": self.text(20_000)}]},
                **base,
            }
        )

        turns = self.random.randint(40, 250)
        context = self.random.randint(8_000, 30_000)
        for _ in range(turns):
            context = self.turn(writer, base, clock, context, sidechain=None)
        if self.random.random() < 0.3:
            self.subagent(path, session_id, base, clock)
        writer.write(
            {"type": "cost-state", "totalCostUSD": 1.23, "modelUsage": {}, **base}
        )
        writer.close()

    def subagent(self, path: Path, session_id: str, base: dict, clock) -> None:
        agent_id = f"a{self.random.getrandbits(56):014x}"
        sub_path = path.parent / session_id / "subagents" / f"agent-{agent_id}.jsonl"
        writer = LogWriter(sub_path, self.facts, session_id)
        context = self.random.randint(5_000, 12_000)
        for _ in range(self.random.randint(3, 10)):
            context = self.turn(writer, base, clock, context, sidechain=agent_id)
        writer.close()

    def turn(self, writer, base, clock, context, *, sidechain) -> int:
        """Write one request and response; return the context size after it."""
        clock[0] += timedelta(seconds=self.random.randint(5, 90))
        side = {"isSidechain": sidechain is not None}
        if sidechain:
            side["agentId"] = sidechain
        writer.write(
            {
                "type": "api-request-blob",
                "message": {"role": "user", "content": self.text(4000)},
                **base,
                **side,
            }
        )
        writer.write({"type": "api-request", "params": {"max_tokens": 32000}, **base})

        model = self.pick_model()
        self.message_number += 1
        message_id = f"msg_bench{self.message_number:012d}"
        request_id = f"req_bench{self.message_number:012d}"
        written = self.random.randint(100, 3000)
        fresh = self.random.randint(3, 400)
        output = self.random.randint(20, 2500)
        blocks = self.random.choice((1, 1, 2, 3))
        # Some copies were written while the response streamed, with a
        # smaller output count than the last.
        partial = blocks > 1 and self.random.random() < self.partial_share
        for index in range(blocks):
            copy_output = output
            if partial and index < blocks - 1:
                copy_output = self.random.randint(1, output)
            usage = {
                "input_tokens": fresh,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": context,
                "output_tokens": copy_output,
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {
                    "ephemeral_1h_input_tokens": 0,
                    "ephemeral_5m_input_tokens": written,
                },
            }
            block_type = "text" if index == 0 else "tool_use"
            writer.write(
                {
                    "parentUuid": None,
                    "type": "assistant",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [{"type": block_type, "text": self.text(600)}],
                        "stop_reason": "tool_use",
                        "usage": usage,
                    },
                    "requestId": request_id,
                    "timestamp": _stamp(clock[0] + timedelta(milliseconds=index)),
                    "uuid": str(uuid.UUID(int=self.random.getrandbits(128))),
                    **base,
                    **side,
                }
            )

        self.facts.responses += 1
        self.facts.block_copies += blocks - 1
        totals = self.facts.tokens.setdefault(model, [0, 0, 0, 0])
        for position, value in enumerate((fresh, written, context, output)):
            totals[position] += value

        writer.write(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "content": self.text(self.random.randint(500, 12_000)),
                        }
                    ],
                },
                "timestamp": _stamp(clock[0]),
                **base,
                **side,
            }
        )
        if self.random.random() < 0.2:
            writer.write({"type": "last-prompt", "lastPrompt": "go", **base})
        context += fresh + written
        if context > COMPACT_ABOVE_TOKENS:
            # Claude Code compacts the conversation before the 200k-token
            # context window is full, and the prompt starts small again.
            context = self.random.randint(15_000, 30_000)
        return context

    def pick_model(self) -> str:
        roll = self.random.random()
        for model, share in MODELS:
            if roll < share:
                return model
            roll -= share
        return MODELS[0][0]


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Timed steps -----------------------------------------------------------


def parse_baseline(root: Path) -> float:
    """Read every line under `root` and parse it with json.loads; return seconds."""
    started = time.perf_counter()
    for path in sorted(root.rglob("*.jsonl")):
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    json.loads(line)
    return time.perf_counter() - started


def run_import(root: Path):
    from agents.logs.importer import claude_logs_import
    from customers.models import Customer

    customer, _ = Customer.objects.get_or_create(slug="bench", defaults={"name": "B"})
    started = time.perf_counter()
    report = claude_logs_import(paths=[root / "projects"], customer=customer)
    return report, time.perf_counter() - started


def daily_report() -> tuple[list[dict], float]:
    """Return cost and tokens per UTC day and model, and the median time of 3 runs."""
    from django.db.models import Count, Sum
    from django.db.models.functions import TruncDate

    from agents.models import ApiMessage

    times = []
    rows: list[dict] = []
    for _ in range(3):
        started = time.perf_counter()
        rows = list(
            ApiMessage.objects.annotate(day=TruncDate("arrived_at", tzinfo=UTC))
            .values("day", "model")
            .order_by("day", "model")
            .annotate(
                cost=Sum("cost_usd"),
                messages=Count("pk"),
                input=Sum("input_tokens"),
                output=Sum("output_tokens"),
                cache_write=Sum("cache_write_5m_tokens"),
                cache_read=Sum("cache_read_tokens"),
            )
        )
        times.append(time.perf_counter() - started)
    return rows, statistics.median(times)


def run_ccusage(executable: str, root: Path) -> tuple[dict, float]:
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(root)}
    started = time.perf_counter()
    completed = subprocess.run(
        [executable, "daily", "--offline", "--json", "--breakdown"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise BenchmarkError(
            f"ccusage failed with exit status {completed.returncode}: "
            f"{completed.stderr.strip()[:500]}"
        )
    return json.loads(completed.stdout), elapsed


def ccusage_version(executable: str) -> str:
    completed = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=60
    )
    return completed.stdout.strip() or "unknown"


# Checks ----------------------------------------------------------------


def check_import(report, facts: TreeFacts) -> None:
    from django.db.models import Sum

    from agents.models import ApiMessage

    stored = ApiMessage.objects.count()
    if stored != facts.responses:
        raise BenchmarkError(
            f"The import stored {stored} API messages; the tree has "
            f"{facts.responses} distinct responses."
        )
    if report.stats.malformed_lines:
        raise BenchmarkError(
            f"The import found {report.stats.malformed_lines} malformed lines in "
            "a tree that has none."
        )
    for model, expected in facts.tokens.items():
        sums = ApiMessage.objects.filter(model=model).aggregate(
            input=Sum("input_tokens"),
            written=Sum("cache_write_5m_tokens"),
            read=Sum("cache_read_tokens"),
            output=Sum("output_tokens"),
        )
        found = [sums["input"], sums["written"], sums["read"], sums["output"]]
        if found != expected:
            raise BenchmarkError(
                f"Tokens of {model}: stored {found}, generated {expected} "
                "(input, cache writes, cache reads, output)."
            )


# Results ---------------------------------------------------------------


def markdown_results(results: dict, command: str) -> str:
    facts: TreeFacts = results["facts"]
    megabytes = facts.bytes / MEGABYTE
    baseline = results["baseline_seconds"]
    imported = results["import_seconds"]
    lines = [
        RESULTS_START,
        f"Measured on {datetime.now(UTC).date().isoformat()} with `{command}`.",
        "",
        f"- Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{results['postgresql']}.",
        f"- Tree: {megabytes:,.0f} MB in {facts.files:,} files, {facts.lines:,} "
        f"lines, {facts.sessions:,} sessions, {facts.responses:,} distinct API "
        f"responses and {facts.block_copies:,} extra per-block copies; "
        f"{len(MODELS)} models over {DAYS} days. In "
        f"{results['partial_share']:.0%} of the responses with several blocks "
        "the earlier copies carry a smaller output count. Generated in "
        f"{results['generate_seconds']:.0f} s.",
    ]
    if results["size_note"]:
        lines.append(f"- {results['size_note']}")
    lines += [
        "",
        "| step | time (s) | MB/s | lines/s | ratio to baseline |",
        "|---|---:|---:|---:|---:|",
        _row("baseline: read and `json.loads` every line", baseline, facts, baseline),
        _row("import (new database)", imported, facts, baseline),
        _row("re-import (nothing new)", results["reimport_seconds"], facts, baseline),
        "",
        f"- The import stored {results['messages']:,} API messages "
        f"({results['messages'] / imported:,.0f} per second) in "
        f"{results['sessions']:,} executions; it found the tree's "
        f"{facts.responses:,} responses with their token counts, checked per "
        "model. Peak resident memory of the benchmark process, generator, "
        f"baseline and import included: {results['max_rss_mb']:,.0f} MB.",
        f"- Daily report (cost and tokens per UTC day and model, "
        f"{results['report_rows']} rows, SQL over the stored messages): "
        f"{results['report_seconds'] * 1000:,.0f} ms, median of 3.",
    ]
    if results.get("ccusage"):
        ccusage = results["ccusage"]
        lines.append(
            f"- `ccusage daily --offline --json --breakdown` ({ccusage['version']}) "
            f"on the same tree: {ccusage['seconds']:.1f} s, "
            f"{megabytes / ccusage['seconds']:,.1f} MB/s, {ccusage['rows']} day "
            f"and model rows; total cost {ccusage['cost']} USD against our "
            f"{results['our_cost']} USD."
        )
    else:
        lines.append(f"- ccusage: not run ({results['ccusage_note']}).")
    lines.append(RESULTS_END)
    return "\n".join(lines) + "\n"


def _row(label: str, seconds: float, facts: TreeFacts, baseline: float) -> str:
    return (
        f"| {label} | {seconds:,.1f} | {facts.bytes / MEGABYTE / seconds:,.1f} | "
        f"{facts.lines / seconds:,.0f} | {baseline / seconds:.2f} |"
    )


def write_doc(path: Path, block: str) -> None:
    """Replace the results block of `path`, or append one."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find(RESULTS_START)
    end = text.find(RESULTS_END)
    if start != -1 and end != -1:
        text = text[:start] + block.rstrip("\n") + text[end + len(RESULTS_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


def tree_size(requested_bytes: int, workdir: Path) -> tuple[int, str]:
    """Return the size to generate, smaller than requested when the disk is short."""
    free = shutil.disk_usage(workdir).free
    if requested_bytes + DISK_MARGIN_BYTES <= free:
        return requested_bytes, ""
    size = free - DISK_MARGIN_BYTES
    if size < 50 * MEGABYTE:
        raise BenchmarkError(
            f"Only {free / MEGABYTE:,.0f} MB free under {workdir}; the benchmark "
            "needs at least 562 MB. Free some space or pass --workdir."
        )
    note = (
        f"NOTE: {requested_bytes / MEGABYTE:,.0f} MB were requested, but "
        f"{workdir} had {free / MEGABYTE:,.0f} MB free, so the tree is "
        f"{size / MEGABYTE:,.0f} MB."
    )
    return size, note


def find_ccusage(option: str | None) -> tuple[str | None, str]:
    if option:
        return option, ""
    found = shutil.which("ccusage")
    if found:
        return found, ""
    return None, "no ccusage executable found; pass --ccusage PATH"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mb", type=int, default=1024, help="Size of the log tree in MB."
    )
    parser.add_argument("--seed", type=int, default=1, help="Random seed.")
    parser.add_argument(
        "--partial-share",
        type=float,
        default=0.3,
        help="Share of responses with several blocks whose earlier copies carry "
        "a smaller output count (0 to 1). With 0, ccusage and the import count "
        "the same tokens.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="Folder the log tree is written under.",
    )
    parser.add_argument(
        "--keep-tree", action="store_true", help="Do not delete the tree at the end."
    )
    parser.add_argument(
        "--database", default=DEFAULT_BENCH_DATABASE, help="Benchmark database name."
    )
    parser.add_argument("--ccusage", help="Path of a ccusage executable.")
    parser.add_argument(
        "--write-doc", type=Path, help="Write the results into this Markdown file."
    )
    args = parser.parse_args(argv)
    if args.size_mb < 1:
        parser.error("--size-mb must be 1 or more")
    if not 0 <= args.partial_share <= 1:
        parser.error("--partial-share must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size, size_note = tree_size(args.size_mb * MEGABYTE, args.workdir)
    if size_note:
        print(size_note, flush=True)
    ccusage, ccusage_note = find_ccusage(args.ccusage)
    root = Path(tempfile.mkdtemp(prefix="agentmargin-logs-", dir=args.workdir))
    database = BenchmarkDatabase(
        os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL), args.database
    )
    results: dict = {
        "size_note": size_note,
        "ccusage_note": ccusage_note,
        "partial_share": args.partial_share,
    }
    try:
        print(f"Writing {size / MEGABYTE:,.0f} MB of session logs to {root}.")
        started = time.perf_counter()
        facts = Generator(root, args.seed, args.partial_share).generate(size)
        results["generate_seconds"] = time.perf_counter() - started
        results["facts"] = facts
        print(
            f"Wrote {facts.files:,} files, {facts.lines:,} lines, "
            f"{facts.responses:,} responses.",
            flush=True,
        )
        results["baseline_seconds"] = parse_baseline(root)
        print(f"Baseline parse: {results['baseline_seconds']:.1f} s.", flush=True)

        print(f"Creating database {database.name} and migrating it.", flush=True)
        database.create()
        try:
            os.environ["DATABASE_URL"] = database.url
            django.setup()
            from django.core.management import call_command
            from django.db import connection, connections

            call_command("migrate", verbosity=0)
            with connection.cursor() as cursor:
                cursor.execute("SELECT version()")
                results["postgresql"] = cursor.fetchone()[0].split(" on ")[0]
            report, results["import_seconds"] = run_import(root)
            print(f"Import: {results['import_seconds']:.1f} s.", flush=True)
            check_import(report, facts)
            results["messages"] = report.new_messages
            results["sessions"] = len(report.sessions)
            results["our_cost"] = f"{report.priced_cost_usd:.2f}"
            again, results["reimport_seconds"] = run_import(root)
            if again.new_messages:
                raise BenchmarkError(
                    f"The re-import recorded {again.new_messages} new messages."
                )
            print(f"Re-import: {results['reimport_seconds']:.1f} s.", flush=True)
            rows, results["report_seconds"] = daily_report()
            results["report_rows"] = len(rows)
            results["max_rss_mb"] = (
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            connections.close_all()
        finally:
            database.drop()
            print(f"Dropped database {database.name}.", flush=True)

        if ccusage:
            output, seconds = run_ccusage(ccusage, root)
            cost = Decimal(str(output["totals"]["totalCost"]))
            rows = sum(len(day.get("modelBreakdowns", [])) for day in output["daily"])
            results["ccusage"] = {
                "version": ccusage_version(ccusage),
                "seconds": seconds,
                "rows": rows,
                "cost": f"{cost:.2f}",
            }
            print(f"ccusage: {seconds:.1f} s.", flush=True)
    finally:
        if args.keep_tree:
            print(f"Kept the tree at {root}.")
        else:
            shutil.rmtree(root, ignore_errors=True)

    block = markdown_results(
        results,
        " ".join(
            ["benchmarks/import_logs.py", *(sys.argv[1:] if argv is None else argv)]
        ),
    )
    print(block)
    if args.write_doc:
        write_doc(args.write_doc, block)
        print(f"Wrote the results to {args.write_doc}.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"Benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
