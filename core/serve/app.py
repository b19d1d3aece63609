"""The ASGI application: OpenAI-compatible endpoints plus steering, styles, read-outs and search.

``create_app(model)`` returns a FastAPI app (run it with uvicorn, or :func:`polysteer.serve.serve`).
Endpoints (all JSON; errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``):

* ``POST /v1/chat/completions``, ``POST /v1/completions`` (``stream: true`` for server-sent
  events ending ``data: [DONE]``), ``GET /v1/models``, ``GET /v1/models/{id}``;
  the extra request field ``steering`` (see :mod:`polysteer.serve.styles`); unknown fields ignored;
* ``GET /v1/styles``, ``GET|PUT|DELETE /v1/styles/{name}``: named styles;
* ``POST /v1/inspect`` ``{"text", "dictionary", "top"}``: features per token;
* ``POST /v1/features/search`` ``{"dictionary", "query" | "similar_to" | "positive"+"negative",
  "top"}``;
* ``GET /health``;
* ``GET /``: the web playground (:mod:`polysteer.serve.playground`) and its ``/v1/playground``
  endpoints.
"""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations (Request)
import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from polysteer.errors import MissingDependencyError
from polysteer.serve.engine import BatchEngine, Job, TextModel, api_error_of
from polysteer.serve.errors import APIError, bad_request
from polysteer.serve.readout import dictionary_for, read_tokens, search
from polysteer.serve.styles import StyleStore, Term, check_name, inline_style, parse_steering
from polysteer.steering.style import Style

PIP = "pip install 'polysteer[serve]'  (fastapi, uvicorn)"


def require_server_packages() -> None:
    """Raise :class:`MissingDependencyError` with the pip command when fastapi or uvicorn is missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"polysteer serve needs {' and '.join(missing)}: {PIP}")


class PreferenceSource(Protocol):
    """Remembered preferences per user (``polysteer.preferences`` provides one)."""

    def observe(self, user: str, text: str, model: Any) -> list:
        """Recognise and save the preferences stated in a user message; advances the user's turn."""

    def style_for(self, user: str) -> tuple[Style | None, list]:
        """The user's active preferences mixed into one style (or None), and the preferences
        (each with ``.name`` and ``.weight``)."""


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; violations are 4xx errors, never a 500 or a hang."""

    max_intensity: float = 4.0
    """Largest ``|intensity|`` (and ``|intensity x weight|`` of a feature) a request may use."""
    max_tokens: int = 512
    """Largest ``max_tokens`` a request may ask for."""
    default_tokens: int = 128
    """``max_tokens`` when a request gives none."""
    max_prompt_tokens: int = 4096
    """Longest prompt, in tokens (a 400 ``context_length_exceeded`` beyond)."""
    max_queue: int = 64
    """Requests waiting or running at once (a 429 beyond)."""
    max_body_bytes: int = 1 << 20
    """Largest request body (a 413 beyond)."""
    max_batch: int = 8
    """Requests sharing one generation."""
    batch_window_s: float = 0.01
    """How long the batcher waits for more requests once one arrived."""


def _now() -> int:
    return int(time.time())


class _Request:
    """Typed access to a JSON body with OpenAI-shaped errors naming the field."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def get(self, key: str, kinds: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise APIError(422, f"{key} has the wrong type (got a boolean)", code="invalid_type",
                           param=key)
        if not isinstance(value, kinds):
            raise APIError(422, f"{key} has the wrong type (got {type(value).__name__})",
                           code="invalid_type", param=key)
        return value


def create_app(model: Any, *, name: str | None = None, limits: ServeLimits | None = None,
               api_key: str | None = None, styles_dir: Any = None,
               preferences: PreferenceSource | None = None, playground: Any = True) -> Any:
    """A FastAPI app serving ``model`` (a text adapter, e.g. ``polysteer.load_model("smollm2")``).

    ``name``: the model id clients use (default: the adapter's name); ``limits``: see
    :class:`ServeLimits`; ``api_key``: when set, every ``/v1`` request needs
    ``Authorization: Bearer <key>``; ``styles_dir``: where named styles are saved (default
    ``<polysteer home>/serve/styles``); ``preferences``: remembered per-user preferences, applied
    to chat requests that carry a ``user`` field; ``playground``: the web page at ``/`` (a
    :class:`polysteer.serve.PlaygroundConfig` naming its image and voice models, ``True`` for the
    defaults, ``False`` for none).

    The engine's worker thread starts here and stops when the app shuts down (lifespan).
    """
    require_server_packages()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    text_model = TextModel(model, name)
    limits = limits or ServeLimits()
    store = StyleStore(styles_dir)
    engine = BatchEngine(text_model, max_batch=limits.max_batch, max_queue=limits.max_queue,
                         batch_window_s=limits.batch_window_s)
    model_ids = {text_model.name, getattr(model, "name", text_model.name)}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.close, cancel=True)
        for close in app.state.closers:
            close()

    app = FastAPI(title="polysteer", version="1", lifespan=lifespan,
                  description="OpenAI-compatible text generation with per-request steering")
    app.state.engine, app.state.store, app.state.limits = engine, store, limits
    app.state.closers = []

    # -- errors ---------------------------------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, err: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        message = "no such endpoint; see GET /v1/models and docs/serve.md" if err.status_code == 404 \
            else str(err.detail)
        return JSONResponse(APIError(err.status_code, message, code=code).body(),
                            status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(APIError(422, str(err), code="invalid_value").body(), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, err: Exception) -> JSONResponse:
        wrapped = api_error_of(err)
        return JSONResponse(wrapped.body(), status_code=wrapped.status)

    # -- request helpers ------------------------------------------------------------------------
    def authorise(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 api_key.encode()):
            raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    async def body(request: Request) -> _Request:
        authorise(request)
        declared = request.headers.get("content-length")
        too_big = APIError(413, f"request body over {limits.max_body_bytes} bytes",
                           code="request_too_large")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise too_big
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                raise too_big
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise APIError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        return _Request(data)

    def check_model(req: _Request) -> str:
        wanted = req.get("model", str, text_model.name)
        if wanted not in model_ids:
            raise APIError(404, f"model {wanted!r} is not served here; this server serves "
                                f"{text_model.name!r}", code="model_not_found", param="model")
        return text_model.name

    def generation_options(req: _Request) -> dict[str, Any]:
        max_tokens = req.get("max_completion_tokens", int, None)
        max_tokens = req.get("max_tokens", int, max_tokens)
        if max_tokens is None:
            max_tokens = min(limits.default_tokens, limits.max_tokens)
        if not 1 <= max_tokens <= limits.max_tokens:
            raise bad_request(f"max_tokens must be 1..{limits.max_tokens}, got {max_tokens}",
                              "max_tokens", "max_tokens_out_of_range")
        temperature = float(req.get("temperature", (int, float), 0.0))
        top_p = float(req.get("top_p", (int, float), 1.0))
        if not 0.0 <= temperature <= 2.0:
            raise bad_request("temperature must be 0..2 (0: greedy)", "temperature")
        if not 0.0 < top_p <= 1.0:
            raise bad_request("top_p must be in (0, 1]", "top_p")
        n = req.get("n", int, 1)
        if n != 1:
            raise bad_request("only n=1 is supported", "n")
        stop = req.get("stop", (str, list), [])
        stop = [stop] if isinstance(stop, str) else stop
        if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise bad_request("stop must be a string or up to 4 non-empty strings", "stop")
        seed = req.get("seed", int, None)
        return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                "stop": tuple(stop), "seed": seed, "ignore_eos": req.get("ignore_eos", bool, False)}

    def prompt_ids(prompt: Any, param: str) -> list[int]:
        ids = text_model.prompt_ids(prompt)
        if len(ids) > limits.max_prompt_tokens:
            raise bad_request(f"the prompt is {len(ids)} tokens, over the limit of "
                              f"{limits.max_prompt_tokens}", param, "context_length_exceeded")
        if not ids:
            raise bad_request("the prompt is empty", param)
        return ids

    async def on_worker(fn: Any) -> Any:
        try:
            return await asyncio.wrap_future(engine.call(fn))
        except Exception as err:
            raise api_error_of(err) from None

    def steering_summary(terms: list[Term]) -> list[dict[str, Any]]:
        return [{"name": t.label, "intensity": t.intensity} for t in terms]

    # -- models ---------------------------------------------------------------------------------
    def model_card() -> dict[str, Any]:
        return {"id": text_model.name, "object": "model", "created": 0, "owned_by": "polysteer"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorise(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorise(request)
        if model_id not in model_ids:
            raise APIError(404, f"model {model_id!r} is not served here", code="model_not_found",
                           param="model")
        return model_card()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": text_model.name, "load": engine.load}

    # -- completions ----------------------------------------------------------------------------
    async def run_jobs(jobs: list[Job]) -> list[tuple[str, str]]:
        try:
            return list(await asyncio.gather(*(j.result() for j in jobs)))
        finally:
            for job in jobs:
                job.cancel()  # no-op for finished jobs; frees the rows of a request that went away

    def usage(jobs: list[Job]) -> dict[str, int]:
        prompt = sum(len(j.ids) for j in jobs)
        completion = sum(len(j.tokens) for j in jobs)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def stream(job: Job, chunk: Any, final_extra: dict[str, Any], include_usage: bool) -> Any:
        """A streaming response for ``job``; ``chunk(delta_text | None, finish)`` shapes each chunk."""

        async def events() -> AsyncIterator[str]:
            try:
                yield f"data: {json.dumps(chunk(None, None, first=True))}\n\n"
                while True:
                    event = await job.next_event()
                    if event[0] == "delta":
                        yield f"data: {json.dumps(chunk(event[1], None))}\n\n"
                    elif event[0] == "done":
                        last = {**chunk(None, event[1]), **final_extra}
                        if include_usage:
                            last["usage"] = usage([job])
                        yield f"data: {json.dumps(last)}\n\n"
                        break
                    elif event[0] == "error":
                        yield f"data: {json.dumps(event[1].body())}\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                job.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def started(job: Job) -> None:
        """Wait until the job's batch starts (steering validated); raise its error if it fails."""
        try:
            event = await job.next_event()
        except BaseException:
            job.cancel()
            raise
        if event[0] == "error":
            raise event[1]
        if event[0] != "start":  # cannot happen: start comes first; keep the event for the stream
            job.events.put_nowait(event)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = await body(request)
        served = check_model(req)
        messages = req.get("messages", list, None)
        if not messages:
            raise APIError(422, "messages must be a non-empty list of {role, content}",
                           code="invalid_type", param="messages")
        chat = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise APIError(422, f"messages[{i}] must be an object with a role and content",
                               code="invalid_type", param=f"messages[{i}]")
            content = m.get("content") or ""
            if isinstance(content, list):  # [{"type": "text", "text": ...}]
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict)
                                  and p.get("type") == "text" and isinstance(p.get("text"), str))
            if not isinstance(content, str):
                raise APIError(422, f"messages[{i}].content must be a string or text parts",
                               code="invalid_type", param=f"messages[{i}].content")
            chat.append({"role": m["role"], "content": content})
        options = generation_options(req)
        terms = parse_steering(req.data.get("steering"), store, limits.max_intensity)
        user = req.get("user", str, None)
        applied: list[dict[str, Any]] | None = None
        if user and preferences is not None:
            last = next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")

            def remember() -> tuple[Style | None, list]:
                preferences.observe(user, last, model)
                return preferences.style_for(user)

            style, prefs = await on_worker(remember)
            applied = [{"name": p.name, "weight": p.weight} for p in prefs]
            if style is not None:
                terms.append(Term(style, 1.0, "preferences", strict=False))
        job = engine.submit(Job(prompt_ids(chat, "messages"), terms=terms, **options))
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", _now()
        extra: dict[str, Any] = {"steering": steering_summary(terms)}
        if applied is not None:
            extra["preferences_applied"] = applied
        if req.get("stream", bool, False):
            await started(job)
            stream_options = req.get("stream_options", dict, {})

            def chunk(delta: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
                d: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                    {"content": delta} if delta is not None else {})
                return {"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": served, "choices": [{"index": 0, "delta": d, "logprobs": None,
                                                      "finish_reason": finish}]}

            return stream(job, chunk, extra, bool(stream_options.get("include_usage")))
        [(text, finish)] = await run_jobs([job])
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": finish}
        if req.get("return_token_ids", bool, False):
            choice["token_ids"] = list(job.tokens)
        return {"id": cid, "object": "chat.completion", "created": created, "model": served,
                "choices": [choice], "usage": usage([job]), **extra}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = await body(request)
        served = check_model(req)
        prompt = req.get("prompt", (str, list), None)
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise APIError(422, "prompt must be a string or a non-empty list of strings",
                           code="invalid_type", param="prompt")
        if len(prompts) > limits.max_batch:
            raise bad_request(f"at most {limits.max_batch} prompts per request", "prompt")
        options = generation_options(req)
        terms = parse_steering(req.data.get("steering"), store, limits.max_intensity)
        ids = [prompt_ids(p, "prompt") for p in prompts]
        streaming = req.get("stream", bool, False)
        if streaming and len(prompts) > 1:
            raise bad_request("stream one prompt per request", "prompt")
        jobs = []
        try:
            for one in ids:
                jobs.append(engine.submit(Job(one, terms=terms, **options)))
        except APIError:
            for job in jobs:
                job.cancel()
            raise
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", _now()
        extra = {"steering": steering_summary(terms)}
        if streaming:
            await started(jobs[0])

            def chunk(delta: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
                return {"id": cid, "object": "text_completion", "created": created, "model": served,
                        "choices": [{"index": 0, "text": delta or "", "logprobs": None,
                                     "finish_reason": finish}]}

            return stream(jobs[0], chunk, extra,
                          bool(req.get("stream_options", dict, {}).get("include_usage")))
        results = await run_jobs(jobs)
        choices = []
        for i, (job, (text, finish)) in enumerate(zip(jobs, results, strict=True)):
            choice = {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
            if req.get("return_token_ids", bool, False):
                choice["token_ids"] = list(job.tokens)
            choices.append(choice)
        return {"id": cid, "object": "text_completion", "created": created, "model": served,
                "choices": choices, "usage": usage(jobs), **extra}

    # -- styles ---------------------------------------------------------------------------------
    @app.get("/v1/styles")
    async def list_styles(request: Request) -> dict[str, Any]:
        authorise(request)
        return {"object": "list", "data": store.names()}

    @app.get("/v1/styles/{style_name}")
    async def get_style(style_name: str, request: Request) -> dict[str, Any]:
        authorise(request)
        style = store.load(style_name)
        return {"name": style_name, "style": style.to_dict()}

    @app.put("/v1/styles/{style_name}")
    async def put_style(style_name: str, request: Request) -> dict[str, Any]:
        req = await body(request)
        check_name(style_name, "style", "name")
        data = req.data.get("style", req.data)
        style = inline_style(data, "style")
        await on_worker(lambda: engine.validate([Term(style, 1.0, style_name)]))
        path = store.save(style_name, style)
        return {"name": style_name, "saved": True, "file": path.name}

    @app.delete("/v1/styles/{style_name}")
    async def delete_style(style_name: str, request: Request) -> dict[str, Any]:
        authorise(request)
        store.delete(style_name)
        return {"name": style_name, "deleted": True}

    # -- read-outs and search -------------------------------------------------------------------
    def top_of(req: _Request) -> int:
        top = req.get("top", int, 5)
        if not 1 <= top <= 100:
            raise bad_request("top must be 1..100", "top")
        return top

    @app.post("/v1/inspect")
    async def inspect(request: Request) -> dict[str, Any]:
        req = await body(request)
        text = req.get("text", str, None)
        if not text:
            raise APIError(422, "text must be a non-empty string", code="invalid_type", param="text")
        dictionary = check_name(req.get("dictionary", str, None), "dictionary", "dictionary")
        top = top_of(req)
        prompt_ids(text, "text")

        def read() -> list[dict[str, Any]]:
            return read_tokens(model, dictionary_for(model, dictionary), text, top)

        return {"object": "inspection", "dictionary": dictionary, "tokens": await on_worker(read)}

    @app.post("/v1/features/search")
    async def feature_search(request: Request) -> dict[str, Any]:
        req = await body(request)
        dictionary = check_name(req.get("dictionary", str, None), "dictionary", "dictionary")
        query = req.get("query", str, None)
        similar = req.get("similar_to", (int, str), None)
        positive, negative = req.get("positive", list, None), req.get("negative", list, None)
        given = sum(x is not None for x in (query, similar, positive or negative))
        if given != 1:
            raise bad_request("give exactly one of query, similar_to, or positive + negative texts",
                              "query")
        if query is None and similar is None:
            texts = (positive or []) + (negative or [])
            if not positive or not negative or not all(isinstance(t, str) and t for t in texts):
                raise bad_request("positive and negative must both be non-empty lists of texts",
                                  "positive")
            if len(texts) > 64:
                raise bad_request("at most 64 texts in all", "positive")
            for t in texts:
                prompt_ids(t, "positive")
        top = top_of(req)

        def find() -> list[dict[str, Any]]:
            return search(model, dictionary_for(model, dictionary), query=query, similar_to=similar,
                          positive=positive, negative=negative, top=top)

        return {"object": "list", "dictionary": dictionary, "data": await on_worker(find)}

    if playground is not False:
        from polysteer.serve.playground import AppParts, PlaygroundConfig, add_playground

        add_playground(app, AppParts(model, text_model.name, engine, store, limits, authorise, body,
                                     on_worker, prompt_ids),
                       playground if isinstance(playground, PlaygroundConfig) else None)
    return app
