"""Facts the agents app announces, for apps that must not be imported here.

Both signals are sent after the database transaction that recorded the fact
has committed, so a receiver always reads committed rows.
"""

from django.dispatch import Signal

# Sent with `execution_id` and `update` (an agents.recorder.MessageUpdate)
# each time an API message is stored or its counts change. Sent twice per
# API response on the recording path, so its receivers are cached per
# sender. connect() and disconnect() clear the cache.
api_message_recorded = Signal(use_caching=True)

# Sent with `execution_id` and `status` once an execution reaches a final
# status.
execution_finished = Signal()

# Sent with `execution_id` and `customer_id` when the sweeper finds a running
# execution whose worker stopped sending heartbeats and marks it
# interrupted.
execution_stalled = Signal()
