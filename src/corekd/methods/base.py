"""What a method is: a name, its options, the view its model trains on, and its loss.

The one training loop calls ``train_view``, then ``forward`` (the model on that view), then ``loss``;
nothing else differs between methods. Optional hooks: ``build_model`` (a student with modules of its own that
stay part of the model, e.g. the reconstruction student's imputer), ``auxiliary`` (training-only trainable
parts of a loss, never saved, e.g. CorrKD's statistics network) and ``not_applicable`` (evaluation
conditions a method is not scored under, e.g. a student restricted to one modality subset). A new method
is one module with a :class:`Method` subclass decorated with ``@register`` (``corekd.methods.registry``)
and one import line in ``corekd/methods/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from corekd.data.batching import Batch
from corekd.data.protocols import Condition, TrainingMissing
from corekd.models.model import ERCModel, ModelConfig, Output


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class TrainView:
    batch: Batch  # what the model sees this step
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific, e.g. NCE's conflict view


@dataclass
class StepContext:
    """Everything a loss may use for one training step."""

    batch: Batch  # the complete view (what the data has)
    view: TrainView  # what the model saw
    output: Output  # the model on ``view.batch``
    teacher: Output | None  # the frozen teacher on the complete view (detached), if the method needs it
    model: ERCModel  # the model being trained, for methods that need a second forward
    generator: torch.Generator  # the method's own random stream (CPU)
    label_smoothing: float = 0.0  # training.label_smoothing: for the methods' cross-entropy on labels
    auxiliary: torch.nn.Module | None = None  # the method's training-only trainable module (``Method.auxiliary``)


class Method:
    name: ClassVar[str]
    needs_teacher: bool = False  # a method may make this a property of its options
    Options: ClassVar[type[BaseModel]] = NoOptions
    # ``corekd tune``'s search space over this method's own options: option name -> one spec in the YAML format of
    # docs/tune.md ({"float": [low, high]} with optional "log": true, {"int": [low, high]}, {"choice": [...]}).
    # Settings every method shares (training.lr, model.dropout) are the tuner's, not a method's.
    search_space: ClassVar[dict[str, dict]] = {}

    @classmethod
    def inert_options(cls, options: BaseModel) -> set[str]:
        """Options that cannot act under ``options`` (e.g. a stage's sizes when its weight is 0): the tuner does not
        search them, so no trial spends its budget on a setting that changes nothing."""
        return set()

    def __init__(self, options: BaseModel, missing: TrainingMissing):
        self.options = options
        self.missing = missing

    def build_model(
        self, model_cfg: ModelConfig, dims: dict[str, int], num_classes: int, kinds: Mapping[str, str] | None = None
    ) -> ERCModel:
        """The model this method trains (default: the plain :class:`ERCModel`).

        A method whose model carries extra trainable modules (used at inference too) returns a registered
        :class:`ERCModel` subclass (``corekd.models.model.register_architecture``) that builds the base model first,
        then its own modules: called under ``init_model``'s seeded random state, the base weights are then those of
        every other student of the seed. Checkpoints record the subclass, so it loads back as itself.
        """
        return ERCModel(model_cfg, dims, num_classes, kinds)

    def check_modalities(self, modalities: tuple[str, ...]) -> tuple[str, str] | None:
        """Why this method cannot run on a corpus with ``modalities``: (option name, problem), or None."""
        return None

    def check_model(self, model: ModelConfig) -> tuple[str, str] | None:
        """Why this method's options cannot train on a model of settings ``model``: (option name, problem), or None."""
        return None

    def check_task(self, task: str) -> tuple[str, str] | None:
        """Why this method cannot train for ``task`` ("classification" or "regression"): (option, problem), or None."""
        return None

    def forward(self, model: ERCModel, view: TrainView) -> Output:
        """The model on the view (``StepContext.output``): :meth:`forward_input` in, :meth:`forward_output` out."""
        return self.forward_output(model(self.forward_input(view)), view)

    def forward_input(self, view: TrainView) -> Batch:
        """What the model reads this step (default ``view.batch``). A method with extra views (NCE's conflict copy)
        may stack them into the same forward and split the output in :meth:`forward_output`: an ensemble runs every
        member's input in one batched forward, so a method never calls the model here."""
        return view.batch

    def forward_output(self, output: Output, view: TrainView) -> Output:
        """``StepContext.output`` from the model's output on :meth:`forward_input` (extra views' outputs may go into
        ``view.extra``)."""
        return output

    def train_view(self, batch: Batch, mask_generator: torch.Generator, generator: torch.Generator) -> TrainView:
        """The incomplete view this method trains on (default: random missing from ``missing``)."""
        return TrainView(batch.view(self.missing.masks(batch.avail, mask_generator)))

    def dev_masks(
        self, avail: torch.Tensor, generator: torch.Generator, modalities: tuple[str, ...] = ()
    ) -> torch.Tensor:
        """Masks the dev split is scored under for model selection: the training distribution. ``avail`` [N, U, M]
        in the order of ``modalities`` (the corpus's)."""
        return self.missing.masks(avail, generator, per="row")

    def auxiliary(self, model: ERCModel) -> torch.nn.Module | None:
        """A trainable module the loss needs during training only (``StepContext.auxiliary``), or None.

        The trainer builds it once per model from a seeded stream of its own (the student's initial
        weights do not change), moves it to the device and trains it with the model's optimiser; it is
        not part of the model: never evaluated, saved or loaded.
        """
        return None

    def not_applicable(self, condition: Condition, modalities: tuple[str, ...]) -> str | None:
        """Why this method's model is not scored under ``condition`` on a corpus with ``modalities`` (None: it is).

        Such conditions are recorded and reported as "not applicable" with this reason, never as a number.
        """
        return None

    def loss(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def stats(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Diagnostics of one step (scalars, not optimised), averaged per epoch into the training history beside the
        loss terms (e.g. CoRe-KD's realised NCE share). None by default."""
        return {}


# ------------------------------------------------------------------ search-space specs (``corekd tune``)
SPEC_KINDS = ("float", "int", "choice")


def spec_problem(spec: object) -> str | None:
    """What is wrong with one search-space spec (None: it is well formed).

    A spec is ``{"float": [low, high]}`` (optionally ``"log": true``, then low > 0), ``{"int": [low, high]}`` (optionally
    ``"log": true``) or ``{"choice": [v1, v2, ...]}`` (at least one value; values may be lists).
    """
    if not isinstance(spec, dict):
        return f"expected a mapping like {{float: [low, high]}}, got {type(spec).__name__}"
    kinds = [k for k in spec if k in SPEC_KINDS]
    extra = sorted(str(k) for k in spec if k not in (*SPEC_KINDS, "log"))
    if extra or len(kinds) != 1:
        return f"expected exactly one of float, int, choice (and optionally log), got keys {sorted(map(str, spec))}"
    kind, value = kinds[0], spec[kinds[0]]
    if kind == "choice":
        if "log" in spec:
            return "log applies to float and int ranges, not to a choice"
        if not isinstance(value, list) or not value:
            return "choice: expected a non-empty list of values"
        return None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        return f"log: expected true or false, got {log!r}"
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, number) for v in value)
    ):
        return f"{kind}: expected [low, high] ({'integers' if kind == 'int' else 'numbers'}), got {value!r}"
    low, high = value
    if low > high:
        return f"{kind}: low {low} > high {high}"
    if log and low <= 0:
        return f"{kind}: a log range needs low > 0, got {low}"
    return None
