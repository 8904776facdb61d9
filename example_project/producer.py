"""A producer in the style of Kafka's: sends are buffered, a background thread flushes batches.

``send()`` only enqueues (from any thread, from async code too: it never blocks).
The flush thread, started with ``django_graceful.start_thread``, writes a batch when
it holds ``BATCH_SIZE`` messages or when the oldest has waited ``LINGER`` seconds,
like ``batch.size`` and ``linger.ms``. When the shutdown sets its stop event it
flushes everything it still holds, then returns: nothing sent before the stop is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

logger = logging.getLogger("example_project")

BATCH_SIZE = 50
LINGER = 1.0


class Producer:
    def __init__(self, batch_size: int = BATCH_SIZE, linger: float = LINGER) -> None:
        self.batch_size = batch_size
        self.linger = linger
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.sent = 0
        self.delivered = 0
        self.batches = 0
        self.closed = False
        self._lock = threading.Lock()  # a send either makes the last flush or is refused

    def send(self, message: str) -> None:
        """Enqueue one message; the flush thread delivers it. After the last flush
        there is no one left to deliver it: like a closed Kafka producer, refuse it."""
        with self._lock:
            if not self.closed:
                self.sent += 1
                self._queue.put(message)
                return
        logger.warning("producer: closed, message not sent: %s", message)

    def run(self, stop: threading.Event) -> None:
        """The flush loop: ``target`` of ``start_thread``."""
        logger.info("producer: flush thread started")
        batch: list[str] = []
        oldest = 0.0
        while not stop.is_set():
            wait = self.linger if not batch else max(0.0, oldest + self.linger - time.monotonic())
            try:
                message = self._queue.get(timeout=min(wait, 0.2))  # 0.2: notice stop soon
            except queue.Empty:
                pass
            else:
                if not batch:
                    oldest = time.monotonic()
                batch.append(message)
            if len(batch) >= self.batch_size or (
                batch and time.monotonic() - oldest >= self.linger
            ):
                self._flush(batch)
                batch = []
        # Stopping: what is queued joins the batch, and all of it is written.
        with self._lock:
            self.closed = True
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._flush(batch, last=True)
        logger.info(
            "producer: stopped; %d of %d messages delivered in %d batches",
            self.delivered,
            self.sent,
            self.batches,
        )

    def _flush(self, batch: list[str], *, last: bool = False) -> None:
        if not batch:
            return
        time.sleep(0.01)  # the network round trip to the brokers
        self.delivered += len(batch)
        self.batches += 1
        logger.info(
            "producer: flushed %d message(s)%s", len(batch), " (last batch)" if last else ""
        )


producer = Producer()
