"""The micro-batcher: requests that arrive within a short window are decoded in one ``generate`` call.

One worker thread owns the model. It waits for a request, keeps collecting for ``window_ms``
(or until ``max_batch`` requests wait), then splits what it has into groups that can share a
``generate`` call: the same decoding settings and the same :meth:`AdapterRegistry.group_key`
(every mixable LoRA adapter and the bare base share one key, so they decode together with
``adapter_names=[...]``; every other adapter gets a group of its own). Groups run oldest first,
each in batches of at most ``max_batch`` rows.

Each request keeps its own tokenization (the adapter's ``max_source_length`` and
``source_prefix``); rows are padded to the longest in the batch and masked, so a row's summary
is the one it gets alone (``tests/test_serving.py`` checks this with beam search).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from peftsum.errors import PeftsumError
from peftsum.generation.decode import GenerationSettings

DEFAULT_WINDOW_MS = 5.0
"""How long the worker keeps collecting after the first request of a batch arrives."""

DEFAULT_MAX_BATCH = 16
"""Requests per ``generate`` call at most."""

DEFAULT_MAX_QUEUE = 256
"""Requests waiting or decoding at most; more are refused with 503."""


class QueueFull(PeftsumError):
    """The server holds ``max_queue`` requests already (HTTP 503)."""


@dataclass
class Job:
    """One summary request travelling from the HTTP handler to the worker and back.

    Attributes:
        text: the article.
        adapter: ``adapter_id`` (``__base__`` for the bare base).
        settings: decoding settings (part of the group key).
        loop: the event loop of the handler waiting for it.
        future: resolved with the summary (or an exception) on ``loop``.
        tokens: for streaming requests, an ``asyncio.Queue`` receiving ``(token_id, text_delta)``.
        cancelled: set when the client went away; the worker drops the job or stops its rows.
        arrived / started / finished: ``time.perf_counter()`` stamps.
        batch_size: requests in the ``generate`` call that decoded it.
        input_tokens / generated_tokens: article tokens kept and summary tokens produced.
    """

    text: str
    adapter: str
    settings: GenerationSettings
    loop: Any
    future: Any
    tokens: Any = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    batch_size: int = 0
    input_tokens: int = 0
    generated_tokens: int = 0

    def _deliver(self, setter, value) -> None:
        def _set():
            if not self.future.done():
                setter(value)

        self.loop.call_soon_threadsafe(_set)

    def resolve(self, summary: str) -> None:
        """Hand the summary to the waiting handler (thread-safe)."""
        self._deliver(self.future.set_result, summary)

    def fail(self, exc: BaseException) -> None:
        """Hand an exception to the waiting handler (thread-safe)."""
        self._deliver(self.future.set_exception, exc)

    def push_token(self, token_id: int, text: str) -> None:
        """Stream one token to the handler (thread-safe; no-op for non-streaming requests)."""
        if self.tokens is not None:
            self.loop.call_soon_threadsafe(self.tokens.put_nowait, (token_id, text))


def _stopping_class():
    from transformers import StoppingCriteria

    class CancelledRows(StoppingCriteria):
        """Stops the rows (and beams) of requests whose client went away; other rows go on."""

        def __init__(self, jobs: list[Job]):
            self.jobs = jobs

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            flags = torch.tensor([j.cancelled.is_set() for j in self.jobs], device=input_ids.device)
            return flags.repeat_interleave(max(input_ids.shape[0] // len(self.jobs), 1))

    return CancelledRows


def _streamer_class():
    from transformers.generation.streamers import BaseStreamer

    class RowStreamer(BaseStreamer):
        """Sends each new token of a greedy batch to its request (``Job.push_token``) as text deltas."""

        def __init__(self, jobs: list[Job], tokenizer):
            self.jobs, self.tok = jobs, tokenizer
            self.ids: list[list[int]] = [[] for _ in jobs]
            self.text = ["" for _ in jobs]
            self.done = [False for _ in jobs]
            self.first = True

        def put(self, value):
            if self.first:  # the decoder start tokens
                self.first = False
                return
            for i, token in enumerate(value.reshape(-1).tolist()):
                if self.done[i] or self.jobs[i].tokens is None:
                    continue
                if token in (self.tok.eos_token_id, self.tok.pad_token_id):
                    self.done[i] = True
                    continue
                self.ids[i].append(token)
                text = self.tok.decode(self.ids[i], skip_special_tokens=True)
                self.jobs[i].push_token(token, text[len(self.text[i]):])
                self.text[i] = text

        def end(self):
            pass

    return RowStreamer


class MicroBatcher:
    """Collects requests for ``window_ms`` and decodes them in mixed-adapter batches on one worker thread.

    Args:
        registry: the :class:`~peftsum.serving.registry.AdapterRegistry`.
        metrics: the :class:`~peftsum.serving.metrics.ServerMetrics` (batch sizes, queue depth, loads).
        window_ms: collection window after the first waiting request, milliseconds (0 = no wait).
        max_batch: requests per ``generate`` call at most.
        max_queue: requests waiting or decoding at most (:class:`QueueFull` beyond).
    """

    def __init__(self, registry, metrics, window_ms: float = DEFAULT_WINDOW_MS, max_batch: int = DEFAULT_MAX_BATCH,
                 max_queue: int = DEFAULT_MAX_QUEUE):
        self.registry, self.metrics = registry, metrics
        self.window_s = max(float(window_ms), 0.0) / 1000.0
        self.max_batch, self.max_queue = max(int(max_batch), 1), max(int(max_queue), 1)
        self._pending: deque[Job] = deque()
        self._active = 0  # jobs taken by the worker and not finished
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="peftsum-batcher", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker after the batch in progress; waiting requests fail with a one-line error."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        while self._pending:
            self._pending.popleft().fail(PeftsumError("the server is shutting down"))

    def depth(self) -> int:
        """Requests waiting or decoding now."""
        with self._cond:
            return len(self._pending) + self._active

    def submit(self, job: Job) -> None:
        """Queue a job.

        Raises:
            QueueFull: ``max_queue`` requests are already waiting or decoding.
        """
        with self._cond:
            if len(self._pending) + self._active >= self.max_queue:
                raise QueueFull(f"the server is busy ({self.max_queue} requests queued); retry later")
            self._pending.append(job)
            self.metrics.queue_depth.set(len(self._pending) + self._active)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """Drop a job whose client went away: out of the queue, or its rows stopped if it is decoding."""
        job.cancelled.set()
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                pass
            self.metrics.queue_depth.set(len(self._pending) + self._active)

    # ------------------------------------------------------------------ worker
    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            deadline = self._pending[0].arrived + self.window_s
            while not self._stop and len(self._pending) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            jobs = list(self._pending)
            self._pending.clear()
            self._active += len(jobs)
            return jobs

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            try:
                key = (self.registry.group_key(job.adapter), job.settings)
            except PeftsumError as exc:  # removed while it waited
                job.fail(exc)
                continue
            groups.setdefault(key, []).append(job)
        out = []
        for group in groups.values():  # dicts keep insertion order: oldest group first
            out.extend(group[i:i + self.max_batch] for i in range(0, len(group), self.max_batch))
        return out

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                for batch in self._groups([j for j in jobs if not j.cancelled.is_set()]):
                    batch = [j for j in batch if not j.cancelled.is_set()]
                    if batch:
                        self._decode(batch)
            finally:
                with self._cond:
                    self._active -= len(jobs)
                    self.metrics.queue_depth.set(len(self._pending) + self._active)

    def _decode(self, jobs: list[Job]) -> None:
        try:
            self._generate(jobs)
        except BaseException as exc:  # every waiting request gets the error; the worker lives on
            for job in jobs:
                job.fail(exc if isinstance(exc, PeftsumError) else
                         RuntimeError(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"))

    def _generate(self, jobs: list[Job]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        from peftsum.runtime import autocast_context

        settings = jobs[0].settings
        with self.registry.lock:
            slot, jobs = self._acquire(jobs)
            if not jobs:
                return
            started = time.perf_counter()
            tok = slot.tokenizer
            batch, device = self._encode(jobs, slot)
            names = [j.adapter for j in jobs]
            kwargs = settings.to_kwargs()
            if slot.mixed:
                kwargs["adapter_names"] = names
            if settings.num_beams == 1 and any(j.tokens is not None for j in jobs):
                kwargs["streamer"] = _streamer_class()(jobs, tok)
            for job in jobs:
                job.started, job.batch_size = started, len(jobs)
            self.metrics.batch_size.observe(len(jobs))
            self.metrics.batch_adapters.observe(len(set(names)))
            with torch.inference_mode(), autocast_context(device.type, self.registry.bf16):
                ids = slot.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                          stopping_criteria=StoppingCriteriaList([_stopping_class()(jobs)]),
                                          **kwargs)
        _finish(jobs, ids, tok, streamed="streamer" in kwargs)

    def _acquire(self, jobs: list[Job]):
        """Make the jobs' adapters resident (caller holds the registry lock): ``(slot, jobs that can run)``.

        Jobs whose adapter was removed meanwhile or cannot be reloaded fail; adapter loads, evictions and
        resident MB go to the metrics.
        """
        names = [j.adapter for j in jobs]
        loads_before = {n: self.registry.entries[n].loads for n in set(names) if n in self.registry.entries}
        slot = self.registry.acquire(names)
        if slot.failed:  # removed meanwhile or not reloadable: those requests fail, the others run
            for job in jobs:
                if job.adapter in slot.failed:
                    job.fail(slot.failed[job.adapter])
            jobs = [j for j in jobs if j.adapter not in slot.failed]
        if not jobs:
            return slot, jobs
        for name, before in loads_before.items():
            entry = self.registry.entries.get(name)
            if entry is not None and entry.loads > before:
                self.metrics.adapter_loads.labels(adapter=name).inc(entry.loads - before)
        self.metrics.evictions.set(self.registry.evictions)
        self.metrics.resident_mb.set(self.registry.resident_mb())
        return slot, jobs

    def _encode(self, jobs: list[Job], slot):
        """The padded input batch on the slot's device (each job with its adapter's length and prefix)."""
        tok = slot.tokenizer
        feats = []
        for job in jobs:
            max_len, prefix = self.registry.input_settings(job.adapter)
            enc = tok(prefix + job.text, max_length=max_len, truncation=True)
            job.input_tokens = len(enc["input_ids"])
            feats.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        device = next(slot.model.parameters()).device
        return tok.pad(feats, return_tensors="pt").to(device), device



def _finish(jobs: list[Job], ids, tok, streamed: bool) -> None:
    """Resolve each job with its summary and token count; beam search's streams get the final tokens, in order."""
    texts = [s.strip() for s in tok.batch_decode(ids, skip_special_tokens=True)]
    pad, eos = tok.pad_token_id, tok.eos_token_id
    finished = time.perf_counter()
    for job, row, text in zip(jobs, ids.tolist(), texts):
        body = row[1:]  # after the decoder start token
        job.generated_tokens = sum(1 for t in body if t not in (pad, eos)) + (1 if eos in body else 0)
        job.finished = finished
        if job.tokens is not None and not streamed:  # beam search: the final tokens, in order
            done = ""
            kept = []
            for token in body:
                if token in (pad, eos):
                    break
                kept.append(token)
                now = tok.decode(kept, skip_special_tokens=True)
                job.push_token(token, now[len(done):])
                done = now
        job.resolve(text)
