"""Opportunistic micro-batching: concurrent requests with the same options share one model call.

Scoring eight sessions at once costs little more than scoring one (a full-ranking call reads the whole item
matrix, whatever the batch size), so under load the service groups the requests that arrived while the
previous model call ran. Clients that just got their answer usually send their next request within a fraction
of a model call; without waiting for them, 8 busy clients settle into calls of 1 and 7 requests, paying the
matrix twice per round. So the loop waits, at most ``max_wait`` seconds, until as many requests are queued as
the previous call answered. A lone client (previous call: one request) and a request at an idle service are
scored at once.

Model calls run one at a time, by default in the event loop's own thread. On a machine whose cores the clients
share (the 2-core reference machine, load generator included), a separate model thread is a third busy thread
on two cores, and costs tail latency and throughput (benchmarks/results/serve_load-dgn-full-2026-11-29.md against
serve_load-dgn-full-2026-11-29-worker-thread.md). With ``model_thread=True`` calls run in a worker
thread instead, so that the event loop keeps reading and validating requests meanwhile: the better choice
with cores to spare, or when single calls are long (big batches), since an inline call holds the loop.

A session scores the same alone or in a batch (`hiersrec.recommend.Recommender`; up to float rounding in the
last digits, as the padded width changes), so batching does not change an answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hiersrec.recommend import Recommendation, Recommender

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    sessions: Sequence[Sequence[object]]
    exclude: Sequence[Sequence[object]]
    options: dict[str, Any]
    future: asyncio.Future = field(repr=False)

    @property
    def key(self) -> Hashable:
        # Requests are merged only when every shared option is the same.
        return tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in sorted(self.options.items()))


class MicroBatcher:
    """Queue of `recommend_batch` calls, merged per identical options, run one model call at a time.

    Example:
        >>> batcher = MicroBatcher(recommender)  # doctest: +SKIP
        >>> batcher.start()  # inside the running event loop  # doctest: +SKIP
        >>> results = await batcher.recommend([["1", "2"]], [[]], {"k": 10})  # doctest: +SKIP
    """

    def __init__(
        self,
        recommender: Recommender,
        max_sessions: int = 512,
        max_wait: float = 0.002,
        model_thread: bool = False,
    ) -> None:
        """Serve ``recommender`` in merged calls of at most ``max_sessions`` sessions.

        ``max_wait`` bounds the seconds spent waiting for the previous call's clients (0: never wait);
        ``model_thread`` runs the calls in a worker thread rather than in the event loop's thread.
        """
        self.recommender = recommender
        self.max_sessions = max_sessions
        self.max_wait = max_wait
        self._last_requests = 0  # requests answered by the previous model call
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="hiersrec-model") if model_thread else None
        )

    def start(self) -> None:
        """Start the batching loop in the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop and the worker thread, if any."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def recommend(
        self, sessions: Sequence[Sequence[object]], exclude: Sequence[Sequence[object]], options: dict[str, Any]
    ) -> list[Recommendation]:
        """`Recommender.recommend_batch(sessions, exclude=exclude, **options)`, possibly merged with others."""
        assert self._queue is not None, "MicroBatcher.start() was not called"
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(sessions, exclude, options, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while True:
                while not self._queue.empty():
                    waiting.append(self._queue.get_nowait())
                remaining = deadline - loop.time()
                if len(waiting) >= self._last_requests or remaining <= 0:
                    break
                try:
                    waiting.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            self._last_requests = len(waiting)
            groups: dict[Hashable, list[_Pending]] = {}
            for pending in waiting:
                groups.setdefault(pending.key, []).append(pending)
            for group in groups.values():
                for chunk in self._chunks(group):
                    await self._score(loop, chunk)
                    # Let the loop answer what arrived meanwhile (/health, reading requests) between model calls:
                    # a call scored in the loop's own thread holds it, so back-to-back calls would starve it.
                    await asyncio.sleep(0)

    def _chunks(self, group: list[_Pending]) -> list[list[_Pending]]:
        chunks, current, size = [], [], 0
        for pending in group:
            if current and size + len(pending.sessions) > self.max_sessions:
                chunks.append(current)
                current, size = [], 0
            current.append(pending)
            size += len(pending.sessions)
        return [*chunks, current] if current else chunks

    async def _score(self, loop: asyncio.AbstractEventLoop, chunk: list[_Pending]) -> None:
        sessions = [s for pending in chunk for s in pending.sessions]
        exclude = [e for pending in chunk for e in pending.exclude]
        options = chunk[0].options
        try:
            if self._executor is None:
                results = self.recommender.recommend_batch(sessions, exclude=exclude, **options)
            else:
                results = await loop.run_in_executor(
                    self._executor, lambda: self.recommender.recommend_batch(sessions, exclude=exclude, **options)
                )
        except Exception as error:  # the same options gave every request of the chunk the same error
            for pending in chunk:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        start = 0
        for pending in chunk:
            if not pending.future.done():  # the client may have gone away
                pending.future.set_result(results[start : start + len(pending.sessions)])
            start += len(pending.sessions)
