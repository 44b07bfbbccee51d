"""Preparing a Celery worker process before it runs its first task.

Once Django, the Agent SDK and the price table are loaded, a worker process
has about 300,000 objects that the garbage collector tracks, and they live
as long as the process. Python's full collection walks all of them: about
175 ms of CPU on the 2-CPU development machine with the process alone, and
0.5 to 1.8 seconds of wall time when 16 worker processes share the CPUs. It
runs whenever enough new objects have survived, so sooner or later in the
middle of a recording. `gc.freeze()` moves every object that exists at
that moment out of the collector's reach, so later full collections walk
only what tasks create.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def worker_process_prepare() -> None:
    """Load what every execution needs, then freeze the objects that exist now.

    Called in each pool process when it starts, after Django is set up.
    Reads no database: the ModelPrice overrides load at the first pricing.
    """
    import claude_agent_sdk  # noqa: F401  (the runner imports it on first use)

    import agents.recorder  # noqa: F401
    from agents.pricing import bundled

    bundled.preload()
    # Garbage left by start-up is collected first, or it would never be.
    gc.collect()
    gc.freeze()
    logger.debug("Worker process prepared: %d objects frozen", gc.get_freeze_count())
