"""The batching engine: one worker thread runs every forward pass; requests with different styles
share a batch.

Requests become :class:`Job` s in a queue. The worker takes the oldest job, waits a short window
(``batch_window_s``) for more to arrive, and runs up to ``max_batch`` jobs that can share a
generation (same ``max_tokens`` and sampling settings, so schedules see the same step clock) in one
``generate`` call, each row with its own steering: ``steer(model, [(style, row_intensities), ...])``
(per-row intensities are 0 on every other row, which leaves those rows bit-identical). Each job's
prompt is tokenized alone and left-padded in the batch, so a greedy answer is the one the request
gets alone. Tokens are streamed to each request as they are generated; a row whose request is
cancelled (a client that went away) or finished stops there, and the generation ends when every
row has.

The worker also runs the other model calls (feature read-outs, preference recognition) between
batches, so nothing else ever touches the model while it generates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import itertools
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from polysteer.errors import (
    ConfigError,
    DictionaryMismatchError,
    PolysteerError,
    RegistryError,
    SteeringError,
)
from polysteer.serve.errors import APIError
from polysteer.serve.styles import Term
from polysteer.steering.runtime import SteeringWarning, steer

log = logging.getLogger("polysteer.serve")


class TextModel:
    """The parts of a text adapter the server uses: prompts to token ids, ids to text.

    The adapter must have ``encode(prompt, chat=...)`` returning ``input_ids`` and a ``tokenizer``
    (as the text plugin's ``TransformersAdapter``), and its ``generate`` must pass ``streamer`` and
    ``stopping_criteria`` on to the model's ``generate`` (as transformers' does).
    """

    def __init__(self, adapter: Any, name: str | None = None):
        if getattr(adapter, "modality", None) != "text" or not hasattr(adapter, "encode") or \
                getattr(adapter, "tokenizer", None) is None:
            raise ConfigError(f"polysteer serve serves text models with a tokenizer; "
                              f"{getattr(adapter, 'name', adapter)!r} is a "
                              f"{getattr(adapter, 'modality', '?')} model without one. Serve "
                              "smollm2 or a transformers model folder")
        self.adapter = adapter
        self.name = name or adapter.name
        self.tokenizer = adapter.tokenizer
        self.lock = threading.Lock()  # fast tokenizers must not be used from two threads at once
        eos = getattr(getattr(adapter.model, "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos = frozenset(eos)
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (min(self.eos) if self.eos else 0)
        self.chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def device(self) -> torch.device:
        return next(self.adapter.model.parameters()).device

    def prompt_ids(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """Token ids of a plain text (no template) or a chat (the chat template, if the tokenizer
        has one; else the messages' contents, one per line)."""
        chat = not isinstance(prompt, str)
        if chat and not self.chat_template:
            prompt, chat = "\n".join(m["content"] for m in prompt), False
        with self.lock:
            encoded = self.adapter.encode(prompt, chat=chat)
        return encoded["input_ids"][0].tolist()

    def decode(self, ids: Sequence[int]) -> str:
        with self.lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)


@dataclass
class Job:
    """One generation request: a prompt's ids, its limits and steering, and its event stream.

    Events (read with :meth:`next_event`): ``("start",)`` when its batch starts, ``("delta", text)``
    for new text, ``("done", finish_reason)`` at the end, ``("error", APIError)`` instead.
    """

    ids: list[int]
    max_tokens: int
    terms: list[Term] = field(default_factory=list)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: str = ""
    finish: str | None = None
    number: int = 0

    def __post_init__(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self.events is None:
            self.events = asyncio.Queue()

    def key(self) -> tuple:
        """Jobs with equal keys can share a generation."""
        sampling = (self.temperature, self.top_p, self.seed) if self.temperature > 0 else None
        return self.max_tokens, sampling, self.ignore_eos

    def emit(self, *event: Any) -> None:
        """Hand an event to the request's event loop (from any thread)."""
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody is listening
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """The client went away: stop generating for this job (frees its row and its slot)."""
        self.cancelled.set()

    async def next_event(self) -> tuple:
        return await self.events.get()

    async def result(self) -> tuple[str, str]:
        """Wait for the end: ``(text, finish_reason)``; raises the job's :class:`APIError`."""
        while True:
            event = await self.next_event()
            if event[0] == "error":
                raise event[1]
            if event[0] == "done":
                return self.text, event[1]


class _Streamer:
    """Receives each step's new tokens from ``generate`` (transformers' streamer protocol)."""

    def __init__(self, engine: BatchEngine, jobs: list[Job]):
        self.engine, self.jobs, self.started = engine, jobs, False

    def put(self, value: torch.Tensor) -> None:
        if not self.started:  # the first call hands over the prompts
            self.started = True
            for job in self.jobs:
                job.emit("start")
            return
        for job, token in zip(self.jobs, value.view(-1).tolist(), strict=False):
            if job.finish is None:
                self.engine.advance(job, int(token))

    def end(self) -> None:
        pass


class _Stopper:
    """Marks rows whose job finished or was cancelled as done (transformers' stopping criteria)."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **_: Any) -> torch.Tensor:
        done = [job.finish is not None or job.cancelled.is_set() for job in self.jobs]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class BatchEngine:
    """The worker thread and its queue; see the module docstring.

    ``submit(job)`` queues a generation (a 429 when ``max_queue`` jobs are waiting or running, a 503
    once closing); ``call(fn)`` runs ``fn()`` on the worker between batches and returns a future.
    """

    def __init__(self, model: TextModel, *, max_batch: int = 8, max_queue: int = 64,
                 batch_window_s: float = 0.01):
        self.model = model
        self.max_batch, self.max_queue, self.batch_window_s = max_batch, max_queue, batch_window_s
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._counter = itertools.count()
        self._validated: dict[int, Any] = {}
        self.batches: list[int] = []  # size of every batch run (for tests and the load benchmark)
        context = contextvars.copy_context()  # the plugin manager in use where the engine is made
        self._thread = threading.Thread(target=context.run, args=(self._work,),
                                        name="polysteer-serve-engine", daemon=True)
        self._thread.start()

    # -- the request side (event-loop thread) ---------------------------------------------------
    @property
    def load(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._waiting) + sum(j.finish is None and not j.cancelled.is_set()
                                            for j in self._running)

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._closed:
                raise APIError(503, "the server is shutting down; retry on another instance",
                               code="shutting_down")
            self._waiting = deque(j for j in self._waiting if not j.cancelled.is_set())
            busy = len(self._waiting) + sum(j.finish is None and not j.cancelled.is_set()
                                            for j in self._running)
            if busy >= self.max_queue:
                raise APIError(429, f"the server is busy ({busy} requests waiting or running, the "
                                    f"limit is {self.max_queue}); retry shortly",
                               code="queue_full")
            job.number = next(self._counter)
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn()`` on the worker thread (between batches); a future of its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                future.set_exception(APIError(503, "the server is shutting down",
                                              code="shutting_down"))
                return future
            self._calls.append((fn, future))
            self._cond.notify_all()
        return future

    def close(self, *, cancel: bool = True, timeout: float | None = 30.0) -> None:
        """Stop taking work; fail what waits; cancel (or let finish) what runs; join the worker."""
        with self._cond:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            calls, self._calls = list(self._calls), deque()
            running = list(self._running)
            self._cond.notify_all()
        error = APIError(503, "the server is shutting down", code="shutting_down")
        for job in waiting:
            job.emit("error", error)
        for _, future in calls:
            future.set_exception(error)
        if cancel:
            for job in running:
                job.cancel()
        self._thread.join(timeout)

    # -- the worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._calls and not self._closed:
                    self._cond.wait()
                if self._calls:
                    fn, future = self._calls.popleft()
                    batch = None
                elif self._waiting:
                    deadline = time.monotonic() + self.batch_window_s
                    while len(self._waiting) < self.max_batch and not self._closed and \
                            not self._calls and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                    batch = self._take()
                    self._running = batch
                else:  # closed and drained
                    return
            if batch is None:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as err:  # handed to the caller
                        future.set_exception(err)
                continue
            try:
                self._generate(batch)
            finally:
                with self._cond:
                    self._running = []

    def _take(self) -> list[Job]:
        """The oldest live job and the next ones that can share its generation."""
        live = [j for j in self._waiting if not j.cancelled.is_set()]
        if not live:
            self._waiting.clear()
            return []
        key = live[0].key()
        batch = [j for j in live if j.key() == key][: self.max_batch]
        chosen = set(map(id, batch))
        self._waiting = deque(j for j in live if id(j) not in chosen)
        return batch

    def validate(self, terms: Sequence[Term]) -> None:
        """Compile each term's style on the model once (unknown dictionaries or features, models
        that do not match): an :class:`APIError` naming the problem. Runs on the worker."""
        for term in terms:
            if id(term.style) in self._validated and self._validated[id(term.style)] is term.style:
                continue
            try:
                with warnings.catch_warnings():  # what does not apply is refused below, not warned
                    warnings.simplefilter("ignore", SteeringWarning)
                    with steer(self.model.adapter, [(term.style, [0.0])]) as run:
                        skipped = run.skipped
            except FileNotFoundError as err:
                raise APIError(404, f"steering {term.label!r}: {err}", code="dictionary_not_found",
                               param="steering") from None
            except (SteeringError, ConfigError, RegistryError, DictionaryMismatchError) as err:
                raise APIError(400, f"steering {term.label!r}: {err}", code="invalid_steering",
                               param="steering") from None
            if skipped and term.strict:  # a request's steering must act on the served model, all of it
                reasons = "; ".join(f"{name}: {why}" for name, why in skipped)
                raise APIError(400, f"steering {term.label!r} does not apply to the served model "
                               f"({reasons})", code="invalid_steering", param="steering")
            if len(self._validated) > 512:
                self._validated.clear()
            self._validated[id(term.style)] = term.style

    def _generate(self, jobs: list[Job]) -> None:
        ready = []
        for job in jobs:
            if job.cancelled.is_set():
                continue
            try:
                self.validate(job.terms)
            except APIError as err:
                job.finish = "error"
                job.emit("error", err)
                continue
            ready.append(job)
        if not ready:
            return
        self.batches.append(len(ready))
        model, first = self.model, ready[0]
        width = max(len(j.ids) for j in ready)
        ids = torch.tensor([[model.pad] * (width - len(j.ids)) + j.ids for j in ready])
        mask = torch.tensor([[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in ready])
        pairs: dict[int, tuple[Any, list[float]]] = {}
        for row, job in enumerate(ready):
            for term in job.terms:
                style, values = pairs.setdefault(id(term.style), (term.style, [0.0] * len(ready)))
                values[row] += term.intensity
        options: dict[str, Any] = {"max_new_tokens": first.max_tokens,
                                   "streamer": _Streamer(self, ready),
                                   "stopping_criteria": [_Stopper(ready)]}
        if first.ignore_eos:
            options["min_new_tokens"] = first.max_tokens
        if first.temperature > 0:
            options.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        inputs = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device)}
        try:
            context = steer(model.adapter, list(pairs.values())) if pairs else contextlib.nullcontext()
            with context:
                model.adapter.generate(inputs, **options)
        except Exception as err:  # a failure of the model itself: every row learns of it
            log.exception("generation failed")
            failure = err if isinstance(err, APIError) else APIError(
                500, f"generation failed: {type(err).__name__}: {err}", code="generation_failed")
            for job in ready:
                if job.finish is None:
                    job.finish = "error"
                    job.emit("error", failure)
            return
        for job in ready:
            if job.finish is None:
                job.finish = "cancelled" if job.cancelled.is_set() else "length"
            self.flush(job)
            job.emit("done", job.finish)

    # -- text of one row ------------------------------------------------------------------------
    def advance(self, job: Job, token: int) -> None:
        """A new token for ``job``: update its text and send what is safe to send."""
        if job.cancelled.is_set():
            job.finish = "cancelled"
            return
        if token in self.model.eos:
            job.finish = "stop"
            return
        job.tokens.append(token)
        self._update(job)
        if job.finish is None and len(job.tokens) >= job.max_tokens:
            job.finish = "length"

    def _update(self, job: Job) -> None:
        text = self.model.decode(job.tokens)
        hits = [text.find(s) for s in job.stop if s in text]
        if hits:
            text, job.finish = text[: min(hits)], "stop"
        job.text = text
        if job.finish is None:
            hold = max((len(s) for s in job.stop), default=1) - 1  # a stop string may be starting
            text = text[: len(text) - hold] if hold else text
            text = text.rstrip("\ufffd")  # half a multi-byte character
        if text.startswith(job.sent) and len(text) > len(job.sent):
            job.emit("delta", text[len(job.sent):])
            job.sent = text

    def flush(self, job: Job) -> None:
        """Send whatever text of a finished job was held back."""
        if job.text.startswith(job.sent) and len(job.text) > len(job.sent):
            job.emit("delta", job.text[len(job.sent):])
            job.sent = job.text


def api_error_of(err: BaseException) -> APIError:
    """A polysteer error raised by a model call as an :class:`APIError` (400, or 404 for files)."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, FileNotFoundError):
        return APIError(404, str(err), code="not_found")
    if isinstance(err, PolysteerError | ValueError):
        return APIError(400, str(err), code="invalid_value")
    return APIError(500, f"{type(err).__name__}: {err}", code="internal_error")
