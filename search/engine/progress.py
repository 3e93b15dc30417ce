"""What a long step after the trials is doing: a line when it starts and one when it ends.

Tune's own table shows the trials; after them come steps that take from seconds to minutes (testing
each winner, the repeats, writing the exports and the report), and a user should see each of them.
``--verbose 0`` silences these lines as it silences Tune's table.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator


class Progress:
    """Prints step lines unless ``quiet``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """``what ...`` now, ``what: done in N s`` when the block ends (or ``failed after`` if it raises)."""
        started = time.perf_counter()
        self.say(f"{what} ...")
        try:
            yield
        except BaseException:
            self.say(f"{what}: failed after {time.perf_counter() - started:.1f} s")
            raise
        self.say(f"{what}: done in {time.perf_counter() - started:.1f} s")


TIMELINE = "HPSEARCH_TIMELINE"  # a file where a benchmark (benchmarks/startup_steps.py) reads when each start-up step ended


def mark(event: str) -> None:
    """Append ``event`` and the time to the file ``$HPSEARCH_TIMELINE`` names, if it names one: the steps of a
    search's start, as the benchmark measures them (trial processes append theirs too)."""
    path = os.environ.get(TIMELINE)
    if path:
        with open(path, "a") as f:  # one short appended line: whole even with several processes writing
            f.write(json.dumps({"event": event, "at": time.time(), "pid": os.getpid()}) + "\n")
