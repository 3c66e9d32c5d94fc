"""The HTTP service of ``corekd serve``: FastAPI, one model loaded once; the event loop only moves bytes.

Endpoints: ``POST /v1/predict`` (one dialogue, or a list of them), ``GET /v1/model`` (labels,
modalities with dims, kinds, dataset cards and extractor settings, the service's limits),
``GET /healthz``; OpenAPI at ``/docs`` (``/openapi.json``), documenting every answer (200, 413, 415, 422).

Requests are validated by pydantic models built from the bundle (:mod:`corekd.serving.schema`: dims,
kinds and modality names are the model's; numbers strict, finite, within float32's range; a
``sequence`` modality takes one vector or a list of frames, kept as frames for a model that reads
them and averaged otherwise, see :mod:`corekd.serving.predictor`): unknown fields, a wrong dim, a
string or boolean for a number, NaN/inf, an empty dialogue, an utterance with no modality, an empty
list or too many dialogues, duplicate utterance ids, a value too far from the training data (its
standardised value beyond the predictor's limit), a malformed body -> 422; a body that is not
declared ``application/json`` (missing or another content type) -> 415; a body over
``max_body_bytes`` -> 413. No NaN leaves the service: an output that is not finite is a 422 naming the
dialogue, and ``/healthz`` answers 503 when the model cannot answer a dialogue of training means
(checked at start-up). Every error answer is
``{"detail": [{"loc": ["body", ...], "field": "body.utterances[0].l", "msg", "type"}], "errors": n}``,
one ``loc`` format for the schema's errors and corekd's own checks.

Off the event loop: a body is parsed and validated in a worker thread, or, over
``parse_in_process_bytes``, in one of ``parse_workers`` worker processes (parsing holds the GIL for as
long as it takes, which in a thread would stall every other request, ``/healthz`` included); the
model runs in a worker thread (it is only read, so concurrent requests share it); the answer is
serialised in a worker thread, in chunks. With ``batching=True`` concurrent requests are gathered for
up to ``batch_wait_ms`` (or until ``max_batch`` dialogues) and run as one padded forward by
:class:`DynamicBatcher`.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from typing import Union

import anyio
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, TypeAdapter

from corekd.errors import CorekdError
from corekd.serving.dialogue import parse_dialogue
from corekd.serving.predictor import Predictor
from corekd.serving.schema import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DIALOGUES,
    DEFAULT_MAX_UTTERANCES,
    FRAMES_TAG,
    MAX_ERRORS_SHOWN,
    VECTOR_TAG,
    BodyValidator,
    ErrorAnswer,
    body_annotations,
    error_answer,
    error_entry,
    field_to_loc,
    init_worker,
    prediction_models,
    request_models,
    unpack,
    validate_in_worker,
)
from corekd.version import __version__

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DIALOGUES",
    "DEFAULT_MAX_UTTERANCES",
    "FRAMES_TAG",
    "MAX_ERRORS_SHOWN",
    "VECTOR_TAG",
    "DynamicBatcher",
    "app_from_env",
    "create_app",
    "request_models",
]

DEFAULT_PARSE_WORKERS = min(2, os.cpu_count() or 1)
DEFAULT_PARSE_IN_PROCESS_BYTES = 256 * 2**10  # parsing this much holds the GIL ~15 ms: a thread is fine below it
SERIALISE_ROWS = 256  # rows serialised per call: each call holds the GIL briefly
JSON_TYPES = ("application/json",)


def _error(status: int, entries: list[dict]) -> JSONResponse:
    return JSONResponse(error_answer(entries), status_code=status)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class _Refused(Exception):
    def __init__(self, status: int, entries: list[dict]):
        super().__init__(status)
        self.status, self.entries = status, entries


class ParsePool:
    """Worker processes that parse request bodies (:class:`~corekd.serving.schema.BodyValidator`), started on first
    use from a forkserver that imports only :mod:`corekd.serving.schema` (no torch)."""

    def __init__(self, modalities: dict, max_dialogues: int, max_utterances: int, workers: int):
        self.args = (modalities, max_dialogues, max_utterances)
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        if self.pool is None:
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["corekd.serving.schema"])
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker, initargs=self.args)
        return self.pool

    def start(self) -> None:
        """Start the forkserver and the workers now (blocking: call it from a thread)."""
        pool = self._get()
        for future in [pool.submit(len, b"") for _ in range(self.workers)]:
            future.result()

    async def __call__(self, body: bytes) -> tuple:
        # submit() may start processes (a blocking handshake with the forkserver): done in a thread, not the loop
        submit = lambda: self._get().submit(validate_in_worker, body)  # noqa: E731
        try:
            return await asyncio.wrap_future(await anyio.to_thread.run_sync(submit))
        except BrokenProcessPool:  # a worker died (e.g. killed): start fresh ones and try once more
            self.close(wait=False)
            return await asyncio.wrap_future(await anyio.to_thread.run_sync(submit))

    def close(self, wait: bool = True) -> None:
        """Stop the workers (``wait``: until they have exited)."""
        if self.pool is not None:
            self.pool.shutdown(wait=wait, cancel_futures=True)
            self.pool = None


def _dialogue_inputs(packed: list, is_list: bool, predictor: Predictor) -> list:
    """Packed dialogues -> DialogueInputs (corekd's own checks: duplicate ids, frames); errors with the schema's locs."""
    modalities = predictor.modalities
    out = []
    for i, p in enumerate(packed):
        try:
            # the values' bound is the schema's (Predictor.value_bounds); predict_many checks each dialogue once more
            out.append(parse_dialogue(unpack(p, modalities), modalities))
        except CorekdError as exc:
            raise _Refused(
                422, [error_entry(((i,) if is_list else ()) + field_to_loc(exc.field), exc.detail, "value_error")]
            ) from None
    return out


def _serialise(dialogues: list, results: list, is_list: bool) -> bytes:
    """The answer as JSON bytes, a few hundred rows per ``json.dumps`` call; a non-finite output -> 422."""
    parts = []
    for i, (d, rows) in enumerate(zip(dialogues, results)):
        chunks = []
        for start in range(0, len(rows), SERIALISE_ROWS):
            try:
                chunks.append(json.dumps(rows[start : start + SERIALISE_ROWS], allow_nan=False)[1:-1])
            except ValueError:
                raise _Refused(
                    422,
                    [
                        error_entry(
                            (i,) if is_list else (),
                            f"the model's output for dialogue '{d.id}' "
                            "is not finite (NaN or infinity); check its input values",
                            "non_finite_output",
                        )
                    ],
                ) from None
        parts.append('{"dialogue_id": ' + json.dumps(d.id) + ', "utterances": [' + ", ".join(chunks) + "]}")
    text = "[" + ", ".join(parts) + "]" if is_list else parts[0]
    return text.encode("utf-8")


class DynamicBatcher:
    """Gathers concurrent requests into one forward: waits up to ``wait_s`` for more after the first, up to ``max_batch`` dialogues."""

    def __init__(self, run, max_batch: int, wait_s: float):
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # forwards run
        self.requests = 0  # requests served

    async def submit(self, dialogues: list) -> list:
        queue = self.queue  # None exactly when the task is (both are set together)
        if queue is None or self.task is None or self.task.done():
            queue = self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop(queue))
        future = asyncio.get_running_loop().create_future()
        await queue.put((dialogues, future))
        return await future

    async def _loop(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.wait_s
            while size < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                items.append(item)
                size += len(item[0])
            everything = [d for dialogues, _ in items for d in dialogues]
            try:
                results = await anyio.to_thread.run_sync(self.run, everything)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.requests += len(items)
            start = 0
            for dialogues, future in items:
                if not future.done():
                    future.set_result(results[start : start + len(dialogues)])
                start += len(dialogues)


def create_app(
    predictor: Predictor,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_dialogues: int = DEFAULT_MAX_DIALOGUES,
    max_utterances: int = DEFAULT_MAX_UTTERANCES,
    batching: bool = False,
    max_batch: int = 32,
    batch_wait_ms: float = 5.0,
    parse_workers: int = DEFAULT_PARSE_WORKERS,
    parse_in_process_bytes: int = DEFAULT_PARSE_IN_PROCESS_BYTES,
) -> FastAPI:
    """The service for ``predictor`` (see the module docstring). ``parse_workers=0``: every body parsed in a thread."""
    bounds = predictor.value_bounds()  # the schema states the values the predictor's check accepts
    modalities = {m: {**spec, "max_abs": bounds[m]} for m, spec in predictor.modalities.items()}
    validator = BodyValidator(modalities, max_dialogues, max_utterances)
    parse_pool = ParsePool(modalities, max_dialogues, max_utterances, parse_workers) if parse_workers > 0 else None
    settings = {
        "max_body_bytes": max_body_bytes,
        "max_dialogues": max_dialogues,
        "max_utterances": max_utterances,
        "batching": batching,
        "max_batch": max_batch,
        "batch_wait_ms": batch_wait_ms,
        "parse_workers": parse_workers,
        "parse_in_process_bytes": parse_in_process_bytes,
    }

    @asynccontextmanager
    async def lifespan(_app):
        if parse_pool is not None:
            await anyio.to_thread.run_sync(parse_pool.start)
        yield
        if parse_pool is not None:  # not waiting: the workers also exit when the server process does
            parse_pool.close(wait=False)

    app = FastAPI(
        title="corekd",
        version=__version__,
        lifespan=lifespan,
        description="Emotion recognition in conversations with missing modalities: a corekd student.",
    )
    app.state.predictor = predictor
    app.state.parse_pool = parse_pool
    app.state.batcher = DynamicBatcher(predictor.predict_many, max_batch, batch_wait_ms / 1000) if batching else None

    health = predictor.self_check()  # None: the model answers (a dialogue of training means)

    @app.get("/healthz")
    async def healthz():
        if health is not None:
            return JSONResponse({"status": "unavailable", "detail": health}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info() -> dict:
        return {**predictor.describe(), "service": settings}

    async def parse(body: bytes) -> tuple:
        if parse_pool is not None and len(body) > parse_in_process_bytes:
            return await parse_pool(body)
        return await anyio.to_thread.run_sync(validator, body)

    @app.post("/v1/predict")
    async def predict(request: Request):
        if not _is_json(request.headers.get("content-type")):
            got = request.headers.get("content-type")
            return _error(
                415,
                [
                    error_entry(
                        ("content-type",),
                        "expected Content-Type: application/json, got " + (repr(got) if got else "none"),
                        "unsupported_media_type",
                        root="header",
                    )
                ],
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(
                413,
                [
                    error_entry(
                        (),
                        f"request body of {declared} bytes exceeds the limit of "
                        f"{max_body_bytes} bytes (corekd serve --max-body-bytes)",
                        "body_too_large",
                    )
                ],
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(
                    413,
                    [
                        error_entry(
                            (),
                            f"request body exceeds the limit of {max_body_bytes} bytes (corekd serve --max-body-bytes)",
                            "body_too_large",
                        )
                    ],
                )
            chunks.append(chunk)
        parsed = await parse(b"".join(chunks))
        if parsed[0] == "error":
            return JSONResponse(parsed[2], status_code=parsed[1])
        _, is_list, packed = parsed
        try:
            dialogues = await anyio.to_thread.run_sync(_dialogue_inputs, packed, is_list, predictor)
            try:
                if app.state.batcher is not None:
                    results = await app.state.batcher.submit(dialogues)
                else:
                    results = await anyio.to_thread.run_sync(predictor.predict_many, dialogues)
            except CorekdError as exc:  # the model cannot answer (a non-finite output): the message names the dialogue
                raise _Refused(
                    422,
                    [error_entry((), f"{exc.field}: {exc.detail}" if exc.field else exc.detail, "non_finite_output")],
                ) from None
            content = await anyio.to_thread.run_sync(_serialise, dialogues, results, is_list)
        except _Refused as exc:
            return _error(exc.status, exc.entries)
        return Response(content, media_type="application/json")

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})

        def component(annotation) -> dict:
            body = TypeAdapter(annotation).json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a named component, referenced
                components[annotation.__name__] = body
                return {"$ref": f"#/components/schemas/{annotation.__name__}"}
            return body

        single, many = body_annotations(modalities, max_dialogues, max_utterances)
        _, answer = prediction_models(predictor.task, predictor.labels)
        # unions of the models built at run time (from the bundle), written as typing.Union
        request_type = Union[single, many]  # type: ignore[valid-type]  # noqa: UP007
        answer_type = Union[answer, list[answer]]  # type: ignore[valid-type]  # noqa: UP007
        error = {"description": "", "content": {"application/json": {"schema": component(ErrorAnswer)}}}
        operation = schema["paths"]["/v1/predict"]["post"]
        operation["requestBody"] = {
            "required": True,
            "description": "one dialogue, or a list of 1 to max_dialogues dialogues "
            "(utterance ids must be unique within a dialogue)",
            "content": {"application/json": {"schema": component(request_type)}},
        }
        operation["responses"] = {
            "200": {
                "description": "per dialogue, one row per utterance (a list of them for a list of dialogues)",
                "content": {"application/json": {"schema": component(answer_type)}},
            },
            "413": {**error, "description": "the body is larger than max_body_bytes"},
            "415": {**error, "description": "the body is not declared as JSON (Content-Type: application/json)"},
            "422": {
                **error,
                "description": "the body is not valid JSON, does not match the schema, repeats an "
                "utterance id within a dialogue, or the model's output is not finite",
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to customise the schema
    return app


SETTINGS_ENV = "COREKD_SERVE_SETTINGS"


def tune_gc() -> None:
    """The server process's garbage collector, tuned so that a collection never stalls the event loop for long.

    A large request makes hundreds of thousands of objects (rows, dicts); CPython's full collection walks every
    live object, the model's included, while holding the GIL (measured: 180-400 ms). So: everything loaded at
    start-up (torch, the model) is frozen out of collections (``gc.freeze``), and full collections are made rare
    (``gc.set_threshold(10000, 10, 1000)``); reference counting still frees all acyclic garbage at once, and the
    young generations still collect cycles.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10000, 10, 1000)


def app_from_env() -> FastAPI:
    """The app of ``corekd serve`` (an import-string factory, so uvicorn can start several workers)."""
    from corekd.serving.predictor import load

    settings = json.loads(os.environ[SETTINGS_ENV])
    predictor = load(
        settings.pop("model"), device=settings.pop("device", "cpu"), runtime=settings.pop("runtime", "torch")
    )
    app = create_app(predictor, **settings)
    tune_gc()
    return app
