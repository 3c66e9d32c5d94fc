"""The HTTP service of ``corekd serve``: FastAPI, one model loaded once, inference off the event loop.

Endpoints: ``POST /v1/predict`` (one dialogue, or a list of them), ``GET /v1/model`` (labels,
modalities with dims, kinds, dataset cards and extractor settings, the service's limits),
``GET /healthz``; OpenAPI at ``/docs`` (``/openapi.json``).

Requests are validated by pydantic models built from the bundle (dims, kinds and modality names
are the model's; a ``sequence`` modality takes one vector or a list of frames, kept as frames for a
model that reads them and averaged otherwise, see :mod:`corekd.serving.predictor`): unknown fields, a wrong dim, NaN/inf, an empty dialogue, an utterance with no
modality, too many dialogues, a malformed body, a value too far from the training data -> 422; a body over
``max_body_bytes`` -> 413. No NaN leaves the service: an output that is not finite is a 422 naming the dialogue,
and ``/healthz`` answers 503 when the model cannot answer a dialogue of training means (checked at start-up).
Every error answer is ``{"detail": [{"loc": [...], "field": "body.utterances[0].l", "msg", "type"}]}``.

Inference runs in a worker thread (the model is only read, so concurrent requests share it).
With ``batching=True`` concurrent requests are gathered for up to ``batch_wait_ms`` (or until
``max_batch`` dialogues) and run as one padded forward by :class:`DynamicBatcher`.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Any, ClassVar, Optional, Union

import anyio
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, confloat, create_model,
                      model_validator)

from corekd import __version__
from corekd.errors import CorekdError, _format_loc
from corekd.serving.predictor import Predictor, reads_frames

DEFAULT_MAX_BODY_BYTES = 16 * 2**20
DEFAULT_MAX_DIALOGUES = 64
DEFAULT_MAX_UTTERANCES = 1000
MAX_ERRORS_SHOWN = 20

FiniteFloat = confloat(allow_inf_nan=False)


class _UtteranceBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    modality_names: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_modality(self):
        if all(getattr(self, m) is None for m in self.modality_names):
            raise ValueError(f"no modality given; expected at least one of {', '.join(self.modality_names)}")
        return self


VECTOR_TAG, FRAMES_TAG = "one vector", "list of frames"  # union branch names; left out of the fields errors name


def _vector_or_frames(value) -> str:
    """Which branch a sequence modality's value takes: frames when its first element is a list."""
    return FRAMES_TAG if isinstance(value, list) and value and isinstance(value[0], list) else VECTOR_TAG


def request_models(modalities: dict[str, dict], max_utterances: int = DEFAULT_MAX_UTTERANCES):
    """The pydantic models ``Utterance`` and ``Dialogue`` of this bundle's request body."""
    fields: dict[str, Any] = {
        "id": (Optional[Annotated[str, Field(min_length=1)]], Field(None, description="utterance id (default: its index)")),
        "speaker": (Optional[str], Field(None, description="speaker name (default: one speaker for the dialogue)")),
    }
    for m, spec in modalities.items():
        dim = int(spec["dim"])
        vector = Annotated[list[FiniteFloat], Field(min_length=dim, max_length=dim)]
        kind = spec.get("kind", "vector")
        if kind == "sequence":  # one vector or a list of frames, told apart by the first element (errors name one branch)
            annotation = Annotated[Union[Annotated[vector, Tag(VECTOR_TAG)],
                                         Annotated[list[vector], Field(min_length=1), Tag(FRAMES_TAG)]],
                                   Discriminator(_vector_or_frames)]
        else:
            annotation = vector
        if reads_frames(spec):
            what = (f"a list of frames, each of {dim} numbers (the model reads them frame by frame); a list of {dim} "
                    "numbers is one frame")
        else:
            what = f"{dim} numbers" + (" or a list of frames of that dim (averaged)" if kind == "sequence" else "")
        fields[m] = (Optional[annotation], Field(None, description=f"modality '{m}': {what}; leave out where missing"))
    utterance = create_model("Utterance", __base__=_UtteranceBase, **fields)
    utterance.modality_names = tuple(modalities)
    dialogue = create_model(
        "Dialogue",
        __config__=ConfigDict(extra="forbid"),
        dialogue_id=(Annotated[str, Field(min_length=1)], ...),
        utterances=(Annotated[list[utterance], Field(min_length=1, max_length=max_utterances)], ...),
    )
    return utterance, dialogue


def _error(status: int, errors: list[dict]) -> JSONResponse:
    detail = []
    for e in errors[:MAX_ERRORS_SHOWN]:
        loc = [p for p in e.get("loc", ()) if p not in (VECTOR_TAG, FRAMES_TAG)]
        detail.append({"loc": ["body", *loc], "field": _format_loc(("body", *loc)), "msg": e.get("msg", ""),
                       "type": e.get("type", "value_error")})
    return JSONResponse({"detail": detail, "errors": len(errors)}, status_code=status)


class DynamicBatcher:
    """Gathers concurrent requests into one forward: waits up to ``wait_s`` for more after the first, up to ``max_batch`` dialogues."""

    def __init__(self, run, max_batch: int, wait_s: float):
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # forwards run
        self.requests = 0  # requests served

    async def submit(self, dialogues: list) -> list:
        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((dialogues, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.wait_s
            while size < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
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


def create_app(predictor: Predictor, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_dialogues: int = DEFAULT_MAX_DIALOGUES, max_utterances: int = DEFAULT_MAX_UTTERANCES,
               batching: bool = False, max_batch: int = 32, batch_wait_ms: float = 5.0) -> FastAPI:
    """The service for ``predictor`` (see the module docstring)."""
    _, dialogue_model = request_models(predictor.modalities, max_utterances)
    single = TypeAdapter(dialogue_model)
    many = TypeAdapter(Annotated[list[dialogue_model], Field(min_length=1, max_length=max_dialogues)])
    settings = {"max_body_bytes": max_body_bytes, "max_dialogues": max_dialogues, "max_utterances": max_utterances,
                "batching": batching, "max_batch": max_batch, "batch_wait_ms": batch_wait_ms}
    app = FastAPI(title="corekd", version=__version__,
                  description="Emotion recognition in conversations with missing modalities: a corekd student.")
    app.state.predictor = predictor
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

    @app.post("/v1/predict")
    async def predict(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, [{"loc": (), "msg": f"request body of {declared} bytes exceeds the limit of {max_body_bytes} "
                                 "bytes (corekd serve --max-body-bytes)", "type": "body_too_large"}])
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(413, [{"loc": (), "msg": f"request body exceeds the limit of {max_body_bytes} bytes "
                                     "(corekd serve --max-body-bytes)", "type": "body_too_large"}])
            chunks.append(chunk)
        body = b"".join(chunks)
        is_list = body.lstrip()[:1] == b"["
        try:
            parsed = (many if is_list else single).validate_json(body)
        except ValidationError as exc:
            return _error(422, exc.errors(include_url=False))
        dialogues_in = parsed if is_list else [parsed]
        try:
            dialogues = [predictor.parse({"dialogue_id": d.dialogue_id, "utterances": [u.__dict__ for u in d.utterances]},
                                         f"[{i}]" if is_list else "")
                         for i, d in enumerate(dialogues_in)]
        except CorekdError as exc:  # what the schema cannot say (duplicate utterance ids, a value too far out)
            return _error(422, [{"loc": (exc.field or "",), "msg": exc.detail, "type": "value_error"}])
        try:
            if app.state.batcher is not None:
                results = await app.state.batcher.submit(dialogues)
            else:
                results = await anyio.to_thread.run_sync(predictor.predict_many, dialogues)
        except CorekdError as exc:  # the model cannot answer (a non-finite output): the message names the dialogue
            return _error(422, [{"loc": (), "msg": str(exc), "type": "value_error"}])
        answer = [{"dialogue_id": d.id, "utterances": rows} for d, rows in zip(dialogues, results)]
        return answer if is_list else answer[0]

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        body = TypeAdapter(Union[dialogue_model, list[dialogue_model]]).json_schema(
            ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(body.pop("$defs", {}))
        schema["paths"]["/v1/predict"]["post"]["requestBody"] = {
            "required": True, "description": "one dialogue, or a list of dialogues",
            "content": {"application/json": {"schema": body}},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


SETTINGS_ENV = "COREKD_SERVE_SETTINGS"


def app_from_env() -> FastAPI:
    """The app of ``corekd serve`` (an import-string factory, so uvicorn can start several workers)."""
    from corekd.serving.predictor import load

    settings = json.loads(os.environ[SETTINGS_ENV])
    predictor = load(settings.pop("model"), device=settings.pop("device", "cpu"), runtime=settings.pop("runtime", "torch"))
    return create_app(predictor, **settings)
