"""Runner threads kept for the next task: why an Atelier worker never runs a batch on a fresh thread.

CUDA libraries keep per-thread state. cuDNN's convolution autotuning cache (torch.backends.cudnn.benchmark) is
thread_local in PyTorch, so a new thread per batch times every convolution again. On an H200, a classroom server
that started a thread per batch made 1.1 SD1.5 images/s (512x512, 20 steps, batching off), four fifths of its
time in the VAE decode's convolutions, which take ~11 ms an image once tuned.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Runners:
    """Daemon threads that run one task each at a time and are kept for the next: an idle one takes the next task,
    a new one starts only when all are busy (so with one batch at a time, one thread runs them all).
    Daemon threads: a batch stuck in a remote worker never holds up an exit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._running = 0
        self._done = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        with self._lock:
            self._running += 1
            if self._idle == 0:
                thread = threading.Thread(target=self._loop, name=f"{self.name}-{len(self._threads) + 1}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._tasks.put(lambda: fn(*args))

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the submitted tasks to finish; True if they all did."""
        with self._done:
            return self._done.wait_for(lambda: self._running == 0, timeout)

    def _loop(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            except Exception:  # the tasks report their own errors; a runner outlives any of them
                log.exception("A task on %s failed.", threading.current_thread().name)
            with self._done:
                self._running -= 1
                self._idle += 1
                self._done.notify_all()
