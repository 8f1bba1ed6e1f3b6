"""A local worker for the Ray tests: no model, a few milliseconds per part, and a way to die on purpose.

Each part's payload is (model, text, how long to sleep, die): "die" kills the actor's process in the middle of the
batch, as `kill -9` would (os._exit: no cleanup, no answer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from atelier.server.scheduler import Batch


class StubWorker:
    batch_images = 4

    def __init__(self, emit) -> None:
        self.emit, self.models = emit, set()

    def loaded(self) -> set[str]:
        return set(self.models)

    def run(self, batch: Batch) -> Sequence[str]:
        results = []
        for step, part in enumerate(batch.parts):
            model, text, seconds, die = part.payload
            if model not in self.models:
                self.emit(("loading", model))
                self.models.add(model)
            self.emit(("step", part.job_id, step))
            time.sleep(seconds)
            if die and (die == "always" or not os.path.exists(die)):
                if die != "always":
                    open(die, "w").close()
                os._exit(9)
            if text == "raise":
                raise ValueError("this part's input is bad")
            results.append(f"{text}@{os.getpid()}")
        return results


def make_stub(emit) -> StubWorker:
    return StubWorker(emit)
