"""The request and response schema of ``corekd serve`` and the parsing of a request body, without torch.

:class:`BodyValidator` turns a request body (bytes) into compact numpy arrays, or into the error answer
(``{"detail": [{"loc", "field", "msg", "type"}], "errors"}``). It imports only pydantic and numpy, so the
service can run it in worker processes (:mod:`corekd.serving.app`): parsing a large body holds the GIL
for as long as it takes (pydantic builds one Python float per number), which in a thread of the server's
own process would stall every other request, ``/healthz`` included.

The schema says exactly what the handler accepts: numbers are strict (no strings, no booleans), finite
and within float32's range (what the model reads); an utterance has at least one modality that is not
null; a list of dialogues has 1 to ``max_dialogues`` of them; a dialogue 1 to ``max_utterances``
utterances. One rule stays outside JSON Schema: utterance ids are unique within a dialogue (a duplicate
gets 422).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    confloat,
    create_model,
    model_validator,
)

from corekd.errors import format_loc

DEFAULT_MAX_BODY_BYTES = 16 * 2**20
DEFAULT_MAX_DIALOGUES = 64
DEFAULT_MAX_UTTERANCES = 1000
MAX_ERRORS_SHOWN = 20
FLOAT32_MAX = float(np.finfo(np.float32).max)

# A JSON number the model can read: strict (a string or a boolean is refused), finite, within float32's range.
ModelFloat = confloat(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)

VECTOR_TAG, FRAMES_TAG = "one vector", "list of frames"  # union branch names; left out of the locs errors name


def reads_frames(spec: Mapping) -> bool:
    """Whether a modality spec (``Bundle.modalities[m]``) is read frame by frame (``input: "frames"``).

    The one definition of the rule (:mod:`corekd.serving.dialogue` and the predictor re-export it); here, at the
    bottom of the serving package, so that the request schema applies it without importing torch."""
    return spec.get("input") == "frames"


class _UtteranceBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    modality_names: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_modality(self):
        if all(getattr(self, m) is None for m in self.modality_names):
            raise ValueError(f"no modality given; expected at least one of {', '.join(self.modality_names)}")
        return self


def _vector_or_frames(value) -> str:
    """Which branch a sequence modality's value takes: frames when its first element is a list."""
    return FRAMES_TAG if isinstance(value, list) and value and isinstance(value[0], list) else VECTOR_TAG


def _at_least_one_modality(names: tuple[str, ...]):
    """JSON Schema of the model validator above: some modality is present and not null."""

    def extra(schema: dict) -> None:
        schema["anyOf"] = [{"required": [m], "properties": {m: {"not": {"type": "null"}}}} for m in names]

    return extra


def request_models(modalities: dict[str, dict], max_utterances: int = DEFAULT_MAX_UTTERANCES):
    """The pydantic models ``Utterance`` and ``Dialogue`` of this bundle's request body."""
    fields: dict[str, Any] = {
        "id": (
            Annotated[str, Field(min_length=1, strict=True)] | None,
            Field(None, description="utterance id, unique within the dialogue (default: its index)"),
        ),
        "speaker": (
            Annotated[str, Field(strict=True)] | None,
            Field(None, description="speaker name (default: one speaker for the dialogue)"),
        ),
    }
    for m, spec in modalities.items():
        dim = int(spec["dim"])
        bound = float(spec.get("max_abs", FLOAT32_MAX))  # values farther from the training data are refused
        number = ModelFloat if bound >= FLOAT32_MAX else confloat(strict=True, allow_inf_nan=False, ge=-bound, le=bound)
        vector = Annotated[list[number], Field(min_length=dim, max_length=dim)]  # type: ignore[valid-type]
        kind = spec.get("kind", "vector")
        annotation: Any  # a type built at run time (the bundle's dims)
        if (
            kind == "sequence"
        ):  # one vector or a list of frames, told apart by the first element (errors name one branch)
            annotation = Annotated[
                Annotated[vector, Tag(VECTOR_TAG)] | Annotated[list[vector], Field(min_length=1), Tag(FRAMES_TAG)],
                Discriminator(_vector_or_frames),
            ]
        else:
            annotation = vector
        if reads_frames(spec):
            what = (
                f"a list of frames, each of {dim} numbers (the model reads them frame by frame); a list of {dim} "
                "numbers is one frame"
            )
        else:
            what = f"{dim} numbers" + (" or a list of frames of that dim (averaged)" if kind == "sequence" else "")
        limit = (
            ""
            if bound >= FLOAT32_MAX
            else (f"; each value within ±{bound:.6g} (farther from the training data than the model can read)")
        )
        fields[m] = (
            annotation | None,
            Field(None, description=f"modality '{m}': {what}{limit}; leave out (or null) where missing"),
        )
    names = tuple(modalities)
    base = type(
        "_Utterance",
        (_UtteranceBase,),
        {  # the base's config plus the schema of its validator
            "model_config": ConfigDict(
                extra="forbid", allow_inf_nan=False, json_schema_extra=_at_least_one_modality(names)
            ),
            "modality_names": names,
            "__module__": __name__,
        },
    )
    utterance: Any = create_model("Utterance", __base__=base, **fields)
    dialogue = create_model(
        "Dialogue",
        __config__=ConfigDict(extra="forbid"),
        dialogue_id=(Annotated[str, Field(min_length=1, strict=True)], ...),
        utterances=(Annotated[list[utterance], Field(min_length=1, max_length=max_utterances)], ...),
    )
    return utterance, dialogue


def body_annotations(modalities: dict[str, dict], max_dialogues: int, max_utterances: int):
    """(one dialogue, a list of dialogues): the two forms of ``POST /v1/predict``'s body."""
    _, dialogue = request_models(modalities, max_utterances)
    return dialogue, Annotated[list[dialogue], Field(min_length=1, max_length=max_dialogues)]  # type: ignore[valid-type]


# ------------------------------------------------------------------ the answers
class ErrorEntry(BaseModel):
    loc: list[str | int] = Field(description='where: "body" (or "header"), then keys and list indices')
    field: str = Field(description="the same place as one string, e.g. body.utterances[2].a")
    msg: str
    type: str


class ErrorAnswer(BaseModel):
    """Every error answer (413, 415, 422): the first errors and how many there were."""

    detail: list[ErrorEntry]
    errors: int


def prediction_models(task: str, labels: list[str]):
    """The pydantic models of ``POST /v1/predict``'s 200 answer (one dialogue; the list form is a list of them)."""
    row_fields: dict[str, Any] = {
        "dialogue_id": (str, ...),
        "utterance_id": (str, ...),
        "modalities": (list[str], Field(..., description="the modalities observed for this utterance")),
    }
    if task == "classification":
        row_fields["prediction"] = (str, Field(..., description="the most probable label, one of " + ", ".join(labels)))
        row_fields["probabilities"] = (
            dict[str, float],
            Field(..., description="label -> probability (an ensemble bundle: the mean over its members)"),
        )
        row_fields["spread"] = (
            dict[str, float] | None,
            Field(
                None,
                description="ensemble bundles only: label -> the std of that probability over the members "
                "(population std, ddof 0)",
            ),
        )
    else:
        row_fields["prediction"] = (
            float,
            Field(..., description="the predicted sentiment score (an ensemble bundle: the mean over its members)"),
        )
        row_fields["spread"] = (
            float | None,
            Field(None, description="ensemble bundles only: the std of the score over the members (ddof 0)"),
        )
    row_fields["members"] = (
        int | None,
        Field(None, description="ensemble bundles only: how many models answered (the bundle's members)"),
    )
    row = create_model("PredictionRow", **row_fields)
    answer = create_model("DialoguePrediction", dialogue_id=(str, ...), utterances=(list[row], ...))
    return row, answer


def error_entry(loc: tuple | list, msg: str, type_: str, root: str = "body") -> dict:
    """One entry of ``detail``: ``loc`` without the union branch names, from ``root``; ``field`` the same as text."""
    loc = [root, *(p for p in loc if p not in (VECTOR_TAG, FRAMES_TAG))]
    return {"loc": loc, "field": format_loc(tuple(loc)), "msg": msg, "type": type_}


def error_answer(entries: list[dict]) -> dict:
    return {"detail": entries[:MAX_ERRORS_SHOWN], "errors": len(entries)}


_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def field_to_loc(field: str | None) -> tuple:
    """``utterances[3].a[2]`` -> ``("utterances", 3, "a", 2)`` (a :class:`~corekd.errors.CorekdError` field as a loc)."""
    if not field:
        return ()
    return tuple(int(index) if index else key for key, index in _PATH_PART.findall(field))


# ------------------------------------------------------------------ parsing a body
class BodyValidator:
    """A request body -> ``("ok", is_list, packed dialogues)`` or ``("error", status, answer)``.

    A packed dialogue is ``(dialogue_id, ids, speakers, {m: (rows, data)})``: per utterance ``rows[k]`` is -1
    (missing), 0 (one vector) or the number of frames; ``data`` the float32 values of every present utterance,
    one after the other. Compact and quick to send between processes (:func:`unpack`).
    """

    def __init__(self, modalities: dict[str, dict], max_dialogues: int, max_utterances: int):
        self.modalities = {m: dict(spec) for m, spec in modalities.items()}
        single, many = body_annotations(self.modalities, max_dialogues, max_utterances)
        self.single, self.many = TypeAdapter(single), TypeAdapter(many)

    def __call__(self, body: bytes) -> tuple:
        is_list = body.lstrip()[:1] == b"["
        try:
            parsed = (self.many if is_list else self.single).validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            return (
                "error",
                422,
                error_answer(
                    [error_entry(e.get("loc", ()), e.get("msg", ""), e.get("type", "value_error")) for e in errors]
                ),
            )
        dialogues = parsed if is_list else [parsed]
        return "ok", is_list, [self._pack(d) for d in dialogues]

    def _pack(self, dialogue) -> tuple:
        ids, speakers = [], []
        values: dict[str, tuple[list[int], list[np.ndarray]]] = {m: ([], []) for m in self.modalities}
        for u in dialogue.utterances:
            ids.append(u.id)
            speakers.append(u.speaker)
            for m in self.modalities:
                value = getattr(u, m)
                rows, data = values[m]
                if value is None:
                    rows.append(-1)
                    continue
                x = np.asarray(value, dtype=np.float32)
                rows.append(0 if x.ndim == 1 else len(x))
                data.append(x.ravel())
        packed = {
            m: (np.asarray(rows, dtype=np.int32), np.concatenate(data) if data else np.zeros(0, np.float32))
            for m, (rows, data) in values.items()
        }
        return dialogue.dialogue_id, ids, speakers, packed


def unpack(packed: tuple, modalities: dict[str, dict]) -> dict:
    """A packed dialogue (:class:`BodyValidator`) -> the dialogue mapping ``parse_dialogue`` reads (arrays as values)."""
    did, ids, speakers, features = packed
    utterances = [{"id": i, "speaker": s} for i, s in zip(ids, speakers)]
    for m, (rows, data) in features.items():
        dim, offset = int(modalities[m]["dim"]), 0
        for u, n in zip(utterances, rows.tolist()):
            if n < 0:
                continue
            size = dim * max(n, 1)
            chunk = data[offset : offset + size]
            u[m] = chunk if n == 0 else chunk.reshape(n, dim)
            offset += size
    return {"dialogue_id": did, "utterances": utterances}


_WORKER: BodyValidator | None = None


def init_worker(modalities: dict[str, dict], max_dialogues: int, max_utterances: int, nice: int = 10) -> None:
    """Process-pool initializer: this worker's validator, at a lower CPU priority than the server (``nice``), so
    that parsing a large body never takes the CPU from the event loop that answers every other request."""
    global _WORKER
    import multiprocessing
    import os
    import threading

    parent = multiprocessing.parent_process()  # the server that asked for this worker (a forkserver's child knows it)
    if parent is not None and parent.sentinel is not None:

        def exit_with_parent() -> None:  # a server killed (or exiting without shutting the pool down) leaves no worker
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(0)

        threading.Thread(target=exit_with_parent, daemon=True, name="corekd-parse-watch").start()
    if nice:
        try:
            os.nice(nice)
        except OSError:  # not allowed here: parse at the server's priority
            pass
    _WORKER = BodyValidator(modalities, max_dialogues, max_utterances)


def validate_in_worker(body: bytes) -> tuple:
    """:class:`BodyValidator` of this worker (:func:`init_worker`) on ``body``."""
    assert _WORKER is not None, "init_worker (the pool's initializer) runs before any task"
    return _WORKER(body)
