"""Requests that arrive together go through the model together: a small batching queue with admission control.

    batcher = Batcher(run_group, max_batch=8, window_s=0.2, queue_size=16, session_cap=2)
    ticket = batcher.submit(key, item, session="abc")   # raises QueueFullError when it cannot take it
    result = ticket.result()                              # or the item's own exception

Items with equal keys (for generation: input kinds, outputs, steps, guidance, sampler) are grouped; a group
runs once it holds ``max_batch`` items or its oldest item has waited ``window_s``, oldest group first, on
``workers`` threads. The window is only waited for when others are using the app (another session has an
item in flight or had one finish in the last ``recent_s``, or the session is unknown): one user alone never
waits for company. While sessions that were just served are still expected back (their next request is on
its way: the app is still sending their results), a group waits for them, from when the worker is free, up
to a quarter of the last group's duration (at most ``MAX_WAIT_S``): requests that were batched together stay
together instead of splitting into a few and the rest.

``run_group(key, items, progress)`` returns or yields one result or exception per item, in order; each goes
out to its ticket as soon as it is made. ``progress(step, total)`` reaches every ticket of the group. One
session (one browser tab or API client) has at most ``session_cap`` items waiting or running; the whole queue
at most ``queue_size``. A refusal says when to try again, estimated from how long recent groups took.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from codixr.errors import CoDiXRError

logger = logging.getLogger(__name__)

RunGroup = Callable[[Hashable, list, Callable[[int, int], None]], Iterable[Any]]
WAIT_SHARE = 0.25  # a group waits for returning sessions at most this share of how long the last group took
MAX_WAIT_S = 5.0  # ... and never longer than this


class QueueFullError(CoDiXRError):
    """The app cannot take the request now; ``retry_after_s`` says about when it can."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Ticket:
    """One submitted item: its future result, and the progress of the group it runs in (``(step, total)``, the
    latest in ``progress``, every one in order in ``updates``)."""

    key: Hashable
    item: Any
    session: str | None
    submitted: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    window_s: float = 0.0  # how long it waits for others to join its group
    progress: tuple[int, int] | None = None
    updates: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    batch_size: int = 0

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()


class Batcher:
    """Groups submitted items by key and runs each group in one ``run_group`` call (see the module docstring)."""

    def __init__(self, run_group: RunGroup, *, max_batch: int = 8, window_s: float = 0.2, queue_size: int = 16,
                 session_cap: int = 2, workers: int = 1, recent_s: float = 10.0) -> None:
        if max_batch < 1 or window_s < 0 or queue_size < 1 or session_cap < 1 or workers < 1:
            raise ValueError("max_batch, queue_size, session_cap and workers must be at least 1, window_s >= 0")
        self._run_group = run_group
        self.max_batch, self.window_s, self.queue_size = max_batch, window_s, queue_size
        self.session_cap, self.workers, self.recent_s = session_cap, workers, recent_s
        self._waiting: list[Ticket] = []  # in arrival order
        self._running = 0
        self._per_session: dict[str, int] = {}  # items in flight per session
        self._finished: dict[str, float] = {}  # when each session's last item finished (monotonic)
        self._group_seconds: float | None = None  # running mean of how long one group takes
        self._last_group_s = 0.0
        self._free_since = 0.0  # when a worker last finished a group (monotonic)
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.groups_run: list[int] = []  # sizes of the groups run so far (for tests and the log)

    # ------------------------------------------------------------------ submitting
    @property
    def in_flight(self) -> int:
        """Items waiting or running."""
        with self._cond:
            return len(self._waiting) + self._running

    def submit(self, key: Hashable, item: Any, session: str | None = None) -> Ticket:
        """Queue ``item`` under ``key``; raises ``QueueFullError`` (saying when to retry) when it cannot."""
        with self._cond:
            if self._closed:
                raise QueueFullError("The app is shutting down: try again once it has restarted.", 30.0)
            ahead = len(self._waiting) + self._running
            if session is not None and self._per_session.get(session, 0) >= self.session_cap:
                wait = self._retry_after(self._per_session[session])
                raise QueueFullError(
                    f"You already have {self._per_session[session]} generation(s) waiting or running (at most "
                    f"{self.session_cap} at a time per user). Try again when one has finished, in about "
                    f"{wait:.0f} s.", wait)
            if ahead >= self.queue_size:
                wait = self._retry_after(ahead)
                raise QueueFullError(
                    f"The app is busy: {ahead} generations are already waiting or running (the queue holds "
                    f"{self.queue_size}). Try again in about {wait:.0f} s.", wait)
            ticket = Ticket(key, item, session)
            ticket.window_s = self.window_s if self._others_active(session, ticket.submitted) else 0.0
            self._waiting.append(ticket)
            if session is not None:
                self._per_session[session] = self._per_session.get(session, 0) + 1
            self._start_workers()
            self._cond.notify_all()
        return ticket

    def _others_active(self, session: str | None, now: float) -> bool:
        """Whether anyone but ``session`` may be about to submit (an unknown session: assume so)."""
        if session is None:
            return True
        self._finished = {s: t for s, t in self._finished.items() if t > now - self.recent_s}
        return any(s != session for s in self._per_session) or any(s != session for s in self._finished)

    def _returning(self, now: float) -> int:
        """Sessions served in the last ``recent_s`` with nothing in flight: their next request may be coming."""
        return sum(1 for s, t in self._finished.items() if t > now - self.recent_s and s not in self._per_session)

    def _max_wait(self) -> float:
        """How long a group may wait for returning sessions once a worker is free."""
        return min(MAX_WAIT_S, max(self.window_s, WAIT_SHARE * self._last_group_s))

    def _retry_after(self, ahead: int) -> float:
        """Seconds until about ``ahead`` items have been served (at least 5 s; 30 s before any group has run)."""
        if self._group_seconds is None:
            return 30.0
        groups = math.ceil(max(ahead, 1) / (self.max_batch * self.workers))
        return max(5.0, math.ceil(groups * self._group_seconds))

    def _start_workers(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name=f"codixr-batcher-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        """Stop taking items; waiting items fail with ``QueueFullError``; running groups finish."""
        with self._cond:
            self._closed = True
            waiting, self._waiting = self._waiting, []
            self._cond.notify_all()
        for ticket in waiting:
            self._release(ticket)
            ticket.future.set_exception(QueueFullError("The app is shutting down: try again once it has "
                                                       "restarted.", 30.0))

    # ------------------------------------------------------------------ running
    def _next_group(self) -> list[Ticket] | None:
        """Wait for the oldest group to be due (see the module docstring); None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._waiting:
                    self._cond.wait()
                    continue
                oldest = self._waiting[0]
                group = [t for t in self._waiting if t.key == oldest.key][:self.max_batch]
                now = time.monotonic()
                waited = now - oldest.submitted
                if oldest.window_s == 0 or len(group) >= self.max_batch:
                    due = 0.0
                elif waited < oldest.window_s:
                    due = oldest.window_s - waited
                elif self._returning(now):
                    due = max(self._free_since, oldest.submitted) + self._max_wait() - now
                else:
                    due = 0.0
                if due <= 0:
                    taken = set(map(id, group))
                    self._waiting = [t for t in self._waiting if id(t) not in taken]
                    self._running += len(group)
                    return group
                self._cond.wait(min(due, 0.25))  # returning sessions expire: look again now and then

    def _work(self) -> None:
        while (group := self._next_group()) is not None:
            started = time.monotonic()
            with self._cond:
                self.groups_run.append(len(group))
            for ticket in group:
                ticket.batch_size = len(group)

            def progress(step: int, total: int, group=group) -> None:
                for ticket in group:
                    ticket.progress = (step, total)
                    ticket.updates.put((step, total))

            delivered = 0
            try:  # each result goes out as soon as it is made: the first users need not wait for the last
                for result in self._run_group(group[0].key, [t.item for t in group], progress):
                    if delivered == len(group):
                        raise RuntimeError(f"run_group made more results than the {len(group)} items")
                    self._deliver(group[delivered], result)
                    delivered += 1
                if delivered != len(group):
                    raise RuntimeError(f"run_group made {delivered} results for {len(group)} items")
            except BaseException as exc:  # noqa: BLE001 - every ticket must get an outcome
                for ticket in group[delivered:]:
                    self._deliver(ticket, exc)
            seconds = time.monotonic() - started
            with self._cond:
                self._group_seconds = seconds if self._group_seconds is None else \
                    0.7 * self._group_seconds + 0.3 * seconds
                self._last_group_s, self._free_since = seconds, time.monotonic()
                self._cond.notify_all()
            logger.info("ran a group of %d in %.2f s (%d waiting)", len(group), seconds, len(self._waiting))

    def _deliver(self, ticket: Ticket, result: Any) -> None:
        with self._cond:
            self._running -= 1
        self._release(ticket)
        if isinstance(result, BaseException):
            ticket.future.set_exception(result)
        else:
            ticket.future.set_result(result)

    def _release(self, ticket: Ticket) -> None:
        if ticket.session is None:
            return
        with self._cond:
            self._finished[ticket.session] = time.monotonic()
            left = self._per_session.get(ticket.session, 1) - 1
            if left > 0:
                self._per_session[ticket.session] = left
            else:
                self._per_session.pop(ticket.session, None)
