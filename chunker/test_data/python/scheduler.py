"""A tiny job scheduler with retry and backoff."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Iterator

DEFAULT_RETRIES = 3


def retry(times: int = DEFAULT_RETRIES):
    """Retries the wrapped function up to `times` times."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for attempt in range(times):
                try:
                    return fn(*args, **kwargs)
                except Exception:
                    if attempt == times - 1:
                        raise
                    time.sleep(2**attempt)

        return wrapper

    return decorator


@dataclasses.dataclass(order=True)
class Job:
    """A job to run at a given time."""

    due: float
    name: str = dataclasses.field(compare=False)
    action: Callable[[], None] = dataclasses.field(compare=False, repr=False)

    @property
    def overdue(self) -> bool:
        return self.due < time.time()


class Scheduler:
    """Runs jobs in due order."""

    # Jobs are kept sorted by due time.
    def __init__(self) -> None:
        self._jobs: list[Job] = []

    def add(self, name: str, delay: float, action: Callable[[], None]) -> Job:
        job = Job(time.time() + delay, name, action)
        self._jobs.append(job)
        self._jobs.sort()
        return job

    @staticmethod
    def describe(job: Job) -> str:
        return f"{job.name} at {{{job.due:.0f}}}"

    def due_jobs(self) -> Iterator[Job]:
        while self._jobs and self._jobs[0].overdue:
            yield self._jobs.pop(0)

    class Stats:
        ran = 0

        def record(self) -> None:
            self.ran += 1


handlers = {"print": lambda job: print(job)}


@retry(times=2)
def run_all(scheduler: Scheduler) -> int:
    count = 0
    for job in scheduler.due_jobs():
        job.action()
        count += 1
    return count


if __name__ == "__main__":
    print(run_all(Scheduler()))
