"""How the runner hands the SDK's messages to the recorder, without the SDK."""

import threading
from types import SimpleNamespace

from agents.runner import _END, AgentStream


class SettleCounter:
    """Stands in for a StreamRecorder: counts its settle() calls."""

    def __init__(self):
        self.settles = 0

    def settle(self):
        self.settles += 1


def agent_stream(recorder):
    return AgentStream(
        SimpleNamespace(pk=1), target=None, recorder=recorder, timeout_seconds=60
    )


def test_settles_only_when_idle():
    recorder = SettleCounter()
    stream = agent_stream(recorder)
    stream.queue.put("first")
    stream.queue.put("second")
    messages = stream.messages()
    assert next(messages) == "first"
    assert next(messages) == "second"
    # Messages were waiting each time: the writes stay in flight.
    assert recorder.settles == 0
    timer = threading.Timer(0.05, stream.queue.put, ["third"])
    timer.start()
    assert next(messages) == "third"
    timer.join()
    # The queue was empty before "third" arrived.
    assert recorder.settles >= 1
    stream.queue.put(_END)
    assert list(messages) == []
    assert stream.ended
