"""The one training loop: epochs, dev-set selection, early stopping, checkpoints.

Every method trains here; a method only chooses the view and the loss. The loop is given the
train and dev splits only: the test split cannot influence training or model selection.
Determinism: all randomness comes from generators and a forked global RNG seeded from
``(seed, role)``, so the same seed gives the same numbers on the CPU.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from safetensors.torch import save_file

from corekd.config import TrainingConfig
from corekd.data.batching import Batch, SplitTensors
from corekd.errors import CorekdError, from_validation_error
from corekd.evaluation.metrics import (
    LOWER_IS_BETTER,
    classification_metrics,
    regression_metrics,
)
from corekd.evaluation.predict import predict, run_model
from corekd.files import atomic_write, file_sha256, read_json
from corekd.methods.base import Method, StepContext
from corekd.models.model import (
    ARCHITECTURES,
    ERCModel,
    ModelConfig,
    Output,
    build_architecture,
)
from corekd.seeding import derive_seed, torch_generator
from corekd.version import __version__
from corekd.weights import CHECKSUM_FIELD, check_checksum, check_shapes, load_finite


class TeacherReference:
    """The frozen teacher's complete-view outputs for training batches.

    With ``cache=True`` they are computed once over the whole train split (the teacher is frozen
    and in eval mode, and a dialogue's outputs depend on that dialogue only), then sliced per
    batch; otherwise the teacher runs without autograd once per batch.
    """

    def __init__(self, teacher: ERCModel, train: SplitTensors, *, cache: bool, batch_size: int, device):
        self.teacher = teacher.eval().requires_grad_(False)
        self.cached = run_model(teacher, train, None, batch_size, device) if cache else None

    def outputs(self, batch: Batch) -> Output:
        if self.cached is not None:
            u = batch.utt_mask.shape[1]
            rows = batch.index.to(self.cached.logits.device)
            return Output(
                logits=self.cached.logits[rows, :u],
                fused=self.cached.fused[rows, :u],
                states=self.cached.states[rows, :u],
            )
        with torch.inference_mode():
            return self.teacher(batch.complete())


GRAD_NORM_PREFIX = "grad_norm_"  # the history's per-modality encoder gradient norms: grad_norm_<modality>


def modality_parameters(model: ERCModel) -> dict[str, list[torch.nn.Parameter]]:
    """Modality -> the parameters of its encoder that read its features (``model.encoders[m]``), in corpus order.

    The learned missing-modality token is left out: it is trained on the utterances where the modality is absent,
    so its gradient says nothing about how the modality itself is learned. A method's extra modules (decoupled,
    reconstruction) sit on top of these encoders and are not counted.
    """
    return {m: [p for name, p in model.encoders[m].named_parameters() if name != "missing"] for m in model.modalities}


def grad_norms(params: Mapping[str, list[torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """``grad_norm_<m>``: the L2 norm of modality m's encoder gradients as they are now (0-dim tensors, no sync).

    Read-only: called after ``backward`` and before clipping and the optimiser step, it changes no gradient and draws
    no random number. A parameter without a gradient (its modality unused this step) counts as zero.
    """
    out = {}
    for m, group in params.items():
        grads = [p.grad.detach() for p in group if p.grad is not None]
        norm = (
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            if grads
            else torch.zeros((), device=group[0].device if group else None)
        )
        out[GRAD_NORM_PREFIX + m] = norm
    return out


@dataclass
class TrainResult:
    model: ERCModel  # with the selected weights, in eval mode
    best_epoch: int  # the epoch with the best raw dev score
    best_score: float | None  # the raw dev score of the selected epoch (None: undefined on dev, see train_model)
    epochs_run: int
    seconds: float
    # per epoch: mean loss terms, step diagnostics, each modality's mean encoder gradient norm and the dev score
    history: list[dict] = field(default_factory=list)
    selected_epoch: int = 0  # the epoch whose weights were kept (= best_epoch unless training.select_window > 1)


def init_model(
    model_cfg: ModelConfig,
    dims: dict[str, int],
    num_classes: int,
    seed: int,
    role: str,
    kinds: Mapping[str, str] | None = None,
    build: Callable[..., ERCModel] | None = None,
) -> ERCModel:
    """A freshly initialised model; the same (seed, role) gives the same weights (``kinds``: see :class:`ERCModel`).

    ``build`` (a method's ``build_model``; default: the plain :class:`ERCModel`) may return a subclass with extra
    modules: it builds the base model first, so the base weights are the plain model's of the same (seed, role).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", seed, role))
        return (build or ERCModel)(model_cfg, dims, num_classes, kinds=kinds)


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, steps_done: int, steps_per_epoch: int) -> None:
    """``training.schedule``: cosine sets every group's learning rate for the next step; constant leaves it."""
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch)
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * min(steps_done, total) / total))
        for group in optimizer.param_groups:
            group["lr"] = lr


def ema_decay(cfg: TrainingConfig, steps_done: int) -> float:
    """The weight average's decay after ``steps_done`` steps (warm-up: it grows with the step count, so the average
    leaves the initial weights quickly)."""
    return min(cfg.ema, (1 + steps_done) / (10 + steps_done))


class Trainer:
    """One model, its method, optimiser and named random streams; :meth:`epoch` is one pass over the train split.

    The streams are derived from ``seed``: batch order and training masks are the same for every
    student of a seed (a fair comparison); the method's own draws (e.g. NCE) have their own stream.
    """

    def __init__(
        self,
        method: Method,
        model: ERCModel,
        cfg: TrainingConfig,
        *,
        seed: int,
        device: torch.device,
        teacher: TeacherReference | None = None,
    ):
        if method.needs_teacher and teacher is None:
            raise ValueError(f"method '{method.name}' needs a teacher")
        self.method, self.cfg, self.device, self.teacher = method, cfg, device, teacher
        self.model = model.to(device)
        # A method's training-only module (CorrKD's statistics network): its own seeded initial weights, so the
        # model's are what every student of the seed starts from; a second parameter group of the same optimiser.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed("init", seed, method.name, "auxiliary"))
            self.auxiliary = method.auxiliary(self.model)
        groups = [{"params": list(self.model.parameters())}]
        if self.auxiliary is not None:
            self.auxiliary = self.auxiliary.to(device).train()
            groups.append({"params": list(self.auxiliary.parameters())})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_done = 0
        self.last_stats: dict[str, torch.Tensor] = {}  # the method's diagnostics of the last step (Method.stats)
        # The weight average (training.ema): scored on dev, selected and saved in place of the raw weights.
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if cfg.ema > 0 else None
        self.shuffle_gen = torch_generator("shuffle", seed)
        self.mask_gen = torch_generator("train-mask", seed)
        self.method_gen = torch_generator("method", seed, method.name)
        self.modality_params = modality_parameters(self.model)  # read for the history's grad_norm_<m>

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss on ``batch`` (complete view) under the view it draws from the trainer's streams."""
        method, model = self.method, self.model
        view = method.train_view(batch, self.mask_gen, self.method_gen)
        ctx = StepContext(
            batch=batch,
            view=view,
            output=method.forward(model, view),
            # __init__ refused a method that needs a teacher without one
            teacher=self.teacher.outputs(batch) if method.needs_teacher and self.teacher is not None else None,
            model=model,
            generator=self.method_gen,
            label_smoothing=self.cfg.label_smoothing,
            auxiliary=self.auxiliary,
        )
        total, terms = method.loss(ctx)
        self.last_stats = method.stats(ctx)  # step diagnostics, recorded beside the terms by :meth:`step`
        return total, terms

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch`` (complete view); returns the detached loss terms and step diagnostics."""
        model = self.model
        total, terms = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norms = grad_norms(self.modality_params)  # before clipping: the gradients the loss gave
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
            if self.auxiliary is not None:  # clipped on its own: the model's clipping is what it is for every method
                torch.nn.utils.clip_grad_norm_(self.auxiliary.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.steps_done += 1
        if self.ema_model is not None:
            self._update_average()
        return {k: v.detach() for k, v in {"loss": total, **terms, **self.last_stats, **norms}.items()}

    @property
    def eval_model(self) -> ERCModel:
        """The weights that are scored, selected and saved: the average when ``training.ema`` > 0."""
        return self.ema_model if self.ema_model is not None else self.model

    def _update_average(self) -> None:
        assert self.ema_model is not None  # step() averages only when training.ema > 0
        decay = ema_decay(self.cfg, self.steps_done)
        with torch.no_grad():
            ema: list[torch.Tensor] = [p for p in self.ema_model.parameters()]
            cur = [p.detach() for p in self.model.parameters()]
            torch._foreach_lerp_(ema, cur, 1.0 - decay)
            for b_ema, b in zip(self.ema_model.buffers(), self.model.buffers()):
                b_ema.copy_(b)

    def _set_lr(self, steps_per_epoch: int) -> None:
        set_lr(self.optimizer, self.cfg, self.steps_done, steps_per_epoch)

    def epoch(self, train: SplitTensors) -> dict[str, float]:
        """One shuffled pass over ``train``; the mean of every loss term and of each modality's encoder gradient
        norm ``grad_norm_<m>`` over the steps (one device sync, at the end)."""
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        steps_per_epoch = math.ceil(len(train) / self.cfg.batch_size)
        for batch in train.batches(
            self.cfg.batch_size, shuffle=True, generator=self.shuffle_gen, device=self.device, bucket=self.cfg.bucket
        ):
            self._set_lr(steps_per_epoch)
            for k, v in self.step(batch).items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        return {k: float(v) / steps for k, v in sums.items()}


class Selection:
    """Dev-set selection and early stopping over one model's epochs (the rules :func:`train_model` states).

    :meth:`epoch_done` records an epoch (its history record, checked finite), keeps the weights ``state()`` gives when
    the epoch is selected, and says whether training stops now.
    """

    def __init__(self, cfg: TrainingConfig, where: str):
        self.cfg, self.where = cfg, where  # where: "method M, seed S", named in a divergence error
        self.sign = -1.0 if cfg.select_metric in LOWER_IS_BETTER else 1.0  # sign * score: higher is always better
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_score: float | None = None
        self.best_epoch = 0
        self.raw_best, self.raw_best_epoch, self.selected_curve = -np.inf, 0, -np.inf
        self.scores: list[float | None] = []
        self.history: list[dict] = []

    def epoch_done(
        self, epoch: int, terms: Mapping[str, float], score: float | None, state: Callable[[], dict]
    ) -> bool:
        """Record ``epoch`` (mean loss terms, raw dev ``score``: None where undefined); True: stop training."""
        cfg, sign = self.cfg, self.sign
        record = {"epoch": epoch, **terms, f"dev_{cfg.select_metric}": score}
        self.scores.append(score)
        window = self.scores[-cfg.select_window :]
        # An undefined score is the worst: it, and any trailing mean over it, is never selected.
        curve = None if None in window else float(np.mean(cast(list[float], window)))
        if cfg.select_window > 1:
            record[f"dev_{cfg.select_metric}_smoothed"] = curve
        if not all(v is None or np.isfinite(v) for v in record.values()):
            raise CorekdError(
                f"training diverged at epoch {epoch} ({record}); lower training.lr or check the features",
                field=self.where,
            )
        self.history.append(record)
        if score is not None and sign * score > self.raw_best:
            self.raw_best, self.raw_best_epoch = sign * score, epoch
        if self.best_state is None or (curve is not None and sign * curve > self.selected_curve):
            # The first epoch is kept until a defined score beats it (all undefined: the first, as on ties).
            self.selected_curve = -np.inf if curve is None else sign * curve
            self.best_score, self.best_epoch = (None if score is None else float(score)), epoch
            self.best_state = state()
            return False
        return epoch - self.best_epoch >= cfg.patience

    def result(self, model: ERCModel, seconds: float) -> TrainResult:
        """``model`` with the selected weights, in eval mode, and the training's record."""
        assert self.best_state is not None  # kept at the first epoch (epochs >= 1)
        model.load_state_dict(self.best_state)
        model.eval()
        return TrainResult(
            model,
            self.raw_best_epoch or self.best_epoch,
            self.best_score,
            len(self.history),
            seconds,
            self.history,
            selected_epoch=self.best_epoch,
        )


def dev_score(preds, label_names: list[str], metric: str) -> float | None:
    """The dev ``metric`` of predictions (None where undefined on the split, e.g. corr with a constant side)."""
    scores = (
        regression_metrics(preds.y_true, preds.y_pred)
        if preds.task == "regression"
        else classification_metrics(preds.y_true, preds.y_pred, label_names)
    )
    return scores[metric]


def train_model(
    method: Method,
    model: ERCModel,
    train: SplitTensors,
    dev: SplitTensors,
    cfg: TrainingConfig,
    *,
    seed: int,
    label_names: list[str],
    device: torch.device,
    teacher: TeacherReference | None = None,
    eval_batch_size: int = 32,
    on_epoch: Callable[[int, float | None], None] | None = None,
) -> TrainResult:
    """Train ``model`` with ``method`` on ``train``; select the epoch by ``cfg.select_metric`` on ``dev``.

    The selection curve is the dev score, or its trailing mean over ``cfg.select_window`` epochs;
    the epoch with its best value (highest; lowest for ``mae``; the first, on ties) is kept, and training stops ``cfg.patience``
    epochs after it. A score that is undefined on dev (``None``, e.g. ``corr`` when the predictions are constant)
    counts as the worst, and so does a trailing mean over a window holding one; when every epoch's is undefined, the
    first epoch is kept. ``best_epoch`` is the raw dev curve's best, ``selected_epoch`` the kept one.
    """
    start = time.perf_counter()
    trainer = Trainer(method, model, cfg, seed=seed, device=device, teacher=teacher)
    dev_masks = method.dev_masks(dev.avail, torch_generator("dev-mask", seed), dev.modalities)
    selection = Selection(cfg, f"method {method.name}, seed {seed}")
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):  # dropout draws from here, not the caller's RNG
        torch.manual_seed(derive_seed("dropout", seed, method.name))
        for epoch in range(1, cfg.epochs + 1):
            terms = trainer.epoch(train)
            preds = predict(trainer.eval_model, dev, dev_masks, eval_batch_size, device)
            score = dev_score(preds, label_names, cfg.select_metric)
            stop = selection.epoch_done(epoch, terms, score, lambda: copy.deepcopy(trainer.eval_model.state_dict()))
            if on_epoch:
                on_epoch(epoch, score)
            if stop:
                break
    return selection.result(trainer.model, time.perf_counter() - start)


# ------------------------------------------------------------------ checkpoints
WEIGHTS_FILE = "model.safetensors"
MODEL_META_FILE = "model.json"


def save_checkpoint(model: ERCModel, folder: str | Path, meta: dict) -> Path:
    """``model.safetensors`` + ``model.json`` (architecture, dims, labels, provenance, the weights' SHA-256), each
    written atomically.

    ``architecture`` names the model class (``erc``, or a method's subclass) and its options, so that
    :func:`load_checkpoint` rebuilds the same modules.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {
        "corekd_version": __version__,
        "model": model.cfg.model_dump(mode="json"),
        "architecture": {"name": model.architecture, "options": model.architecture_options()},
        "dims": model.dims,
        **({"kinds": model.kinds} if any(k != "vector" for k in model.kinds.values()) else {}),
        "num_classes": model.num_classes,
        **meta,
    }
    atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(weights, str(p)))
    info[CHECKSUM_FIELD] = file_sha256(folder / WEIGHTS_FILE)  # verified by load_checkpoint
    atomic_write(folder / MODEL_META_FILE, lambda p: Path(p).write_text(json.dumps(info, indent=2)))
    return folder


class _CheckpointMeta(BaseModel):
    """The fields of a checkpoint's model.json that rebuild the model (the rest is provenance)."""

    model_config = ConfigDict(extra="allow")
    model: dict
    dims: dict[str, Annotated[StrictInt, Field(gt=0)]]
    num_classes: Annotated[StrictInt, Field(gt=0)]
    kinds: dict[str, Literal["vector", "sequence"]] | None = None
    architecture: dict | None = None
    weights_sha256: str | None = None


def _rebuild(meta: _CheckpointMeta, meta_path: Path) -> Callable[[], ERCModel]:
    """A builder of the model model.json describes; its fields are checked here (one line naming the field)."""
    # Checkpoints written before architectures were recorded hold the plain model.
    arch = meta.architecture or {"name": ERCModel.architecture, "options": {}}
    version = getattr(meta, "corekd_version", "?")
    if arch.get("name") not in ARCHITECTURES:
        raise CorekdError(
            f"unknown model architecture '{arch.get('name')}' (known: {', '.join(sorted(ARCHITECTURES))}; written by "
            f"corekd {version}, this is {__version__})",
            path=meta_path,
            field="architecture.name",
        )
    options = arch.get("options") or {}
    if not isinstance(options, dict):
        raise CorekdError(f"expected an object, got {options!r}", path=meta_path, field="architecture.options")
    # Written before modality states were an option (corekd 0.1 up to issue 28): their states were the encodings.
    settings = {"modality_state": "encoding", **meta.model}
    try:
        cfg = ModelConfig(**settings)
    except ValidationError as exc:
        raise from_validation_error(exc, meta_path, model=ModelConfig, prefix=("model",)) from None

    def build() -> ERCModel:
        try:
            return build_architecture(arch["name"], options, cfg, meta.dims, meta.num_classes, kinds=meta.kinds)
        except (TypeError, ValueError, KeyError) as exc:
            raise CorekdError(
                f"does not describe a model corekd {__version__} can build ({type(exc).__name__}: {exc}; "
                f"written by corekd {version})",
                path=meta_path,
            ) from None

    return build


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ERCModel, dict]:
    """The model of a checkpoint folder (``save_checkpoint``'s, or a bundle's) on ``device``, in eval mode, and its model.json.

    Checked before the weights are loaded: model.json's fields, the weights' checksum, and that the
    header's tensor shapes are the described model's (built on the meta device: nothing allocated);
    then that every weight is finite (see :mod:`corekd.weights`).
    """
    folder = Path(folder)
    meta_path, weights_path = folder / MODEL_META_FILE, folder / WEIGHTS_FILE
    info = read_json(meta_path, f"a checkpoint folder holds {MODEL_META_FILE} and {WEIGHTS_FILE}")
    if not isinstance(info, dict):
        raise CorekdError(f"expected a JSON object, got {type(info).__name__}", path=meta_path)
    try:
        meta = _CheckpointMeta.model_validate(info)
    except ValidationError as exc:
        raise from_validation_error(exc, meta_path, model=_CheckpointMeta) from None
    build = _rebuild(meta, meta_path)
    if not weights_path.is_file():
        raise CorekdError(
            f"file not found (a checkpoint folder holds {MODEL_META_FILE} and {WEIGHTS_FILE})", path=weights_path
        )
    check_checksum(weights_path, meta.weights_sha256, meta_path)
    with torch.device("meta"):  # shapes only: sizes from model.json allocate nothing here
        shapes = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    check_shapes(weights_path, shapes, f"{MODEL_META_FILE} (written by corekd {getattr(meta, 'corekd_version', '?')})")
    weights = load_finite(weights_path, device)
    model = build()
    model.load_state_dict(weights)
    return model.to(device).eval(), info
