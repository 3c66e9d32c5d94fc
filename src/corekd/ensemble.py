"""Training an ensemble: the seeds of one method trained as one batched model (``training.ensemble: seeds``).

:func:`train_ensemble` does what :func:`corekd.training.train_model` does for each of K models, in one loop:

- every member keeps its own random streams, derived from its seed exactly as a separate run derives them: batch
  order, training masks and the method's own draws (NCE donors, ...), drawn in the same order, so member k trains on
  the batches and views the separate run of its seed trains on;
- one step runs every member's batch through one vmapped forward (:class:`corekd.models.stacked.StackedModels`),
  then each member's loss on its own outputs (the method's ``loss``, unchanged, with member k's weights where a loss
  runs the model again), and one backward and one AdamW step for all: AdamW acts element by element, so a member's
  update is the one its own optimiser would make; gradient clipping and the encoders' gradient norms are per member;
- each member is scored on dev after every epoch under its own dev masks, selected and stopped early on its own
  curve: a stopped member is frozen (its selected weights kept) and leaves the batched model, which goes on smaller.

Not bitwise separate training: the batched products sum in another order and dropout masks are drawn for the
stacked tensors (one global stream seeded from the seeds and the method), so the numbers differ within seed noise
(measured: docs/ensemble.md). The same seeds give the same numbers on the same machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from corekd.config import TrainingConfig
from corekd.data.batching import Batch, SplitTensors
from corekd.evaluation.predict import predictions, run_stacked
from corekd.methods.base import Method, StepContext
from corekd.models.model import ERCModel
from corekd.models.stacked import StackedModels
from corekd.seeding import derive_seed, torch_generator
from corekd.training import (
    GRAD_NORM_PREFIX,
    Selection,
    TeacherReference,
    TrainResult,
    dev_score,
    ema_decay,
    set_lr,
)


@dataclass
class _Member:
    """One model of the ensemble: its streams, teacher, training-only module and selection state."""

    seed: int
    model: ERCModel  # the caller's model: it gets the selected weights at the end
    teacher: TeacherReference | None
    auxiliary: torch.nn.Module | None
    shuffle_gen: torch.Generator
    mask_gen: torch.Generator
    method_gen: torch.Generator
    dev_masks: torch.Tensor
    selection: Selection
    score: float | None = None  # the last epoch's dev score


def _per_member_norms(grads: Sequence[torch.Tensor | None], k: int, device: torch.device) -> torch.Tensor:
    """[K] L2 norms of each member's slices of stacked gradients ``[K, ...]`` (a missing gradient counts as 0)."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.zeros(k, device=device)
    per_param = torch.stack([torch.linalg.vector_norm(g.detach().float().reshape(k, -1), dim=1) for g in present])
    return torch.linalg.vector_norm(per_param, dim=0)  # [K]


def _clip_members(grads: Sequence[torch.Tensor | None], max_norm: float, k: int, device: torch.device) -> None:
    """``clip_grad_norm_`` for each member on its own slices (the same coefficient max_norm / (norm + 1e-6), capped
    at 1)."""
    coef = (max_norm / (_per_member_norms(grads, k, device) + 1e-6)).clamp(max=1.0)  # [K]
    for g in grads:
        if g is not None:
            g.mul_(coef.to(g.dtype).view(k, *([1] * (g.dim() - 1))))


def train_ensemble(
    method: Method,
    models: Sequence[ERCModel],
    train: SplitTensors,
    dev: SplitTensors,
    cfg: TrainingConfig,
    *,
    seeds: Sequence[int],
    label_names: list[str],
    device: torch.device,
    teachers: Sequence[TeacherReference | None] | None = None,
    eval_batch_size: int = 32,
    on_epoch: Callable[[int, float | None], None] | None = None,
) -> list[TrainResult]:
    """Train ``models`` (one per seed of ``seeds``, initialised as separate training initialises them) with
    ``method`` as one ensemble; one :class:`TrainResult` per member, in order (see the module's docstring).

    ``teachers``: each seed's frozen teacher (for a method that needs one). ``on_epoch(epoch, score)`` gets the mean
    dev score of the members still training (None when none is defined).
    """
    start = time.perf_counter()
    k_all = len(models)
    if len(seeds) != k_all or len(set(seeds)) != k_all:
        raise ValueError(f"an ensemble needs one distinct seed per model, got seeds {list(seeds)} for {k_all} models")
    teachers = list(teachers) if teachers is not None else [None] * k_all
    if method.needs_teacher and any(t is None for t in teachers):
        raise ValueError(f"method '{method.name}' needs a teacher for every member")
    members: list[_Member] = []
    for model, seed, teacher in zip(models, seeds, teachers):
        with torch.random.fork_rng(devices=[]):  # as Trainer: the training-only module's own seeded weights
            torch.manual_seed(derive_seed("init", seed, method.name, "auxiliary"))
            auxiliary = method.auxiliary(model)
        members.append(
            _Member(
                seed=seed,
                model=model,
                teacher=teacher if method.needs_teacher else None,
                auxiliary=auxiliary.to(device).train() if auxiliary is not None else None,
                shuffle_gen=torch_generator("shuffle", seed),
                mask_gen=torch_generator("train-mask", seed),
                method_gen=torch_generator("method", seed, method.name),
                dev_masks=method.dev_masks(dev.avail, torch_generator("dev-mask", seed), dev.modalities),
                selection=Selection(cfg, f"method {method.name}, seed {seed}"),
            )
        )
    stacked = StackedModels([m.to(device) for m in models])
    active = list(range(k_all))  # members still training, in the stacked order
    optimizer = _optimizer(stacked, [members[i] for i in active], cfg)
    ema = {n: p.detach().clone() for n, p in stacked.params.items()} if cfg.ema > 0 else None
    encoder_params = {
        m: [n for n in stacked.params if n.startswith(f"encoders.{m}.") and n != f"encoders.{m}.missing"]
        for m in models[0].modalities
    }
    steps_done = 0
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):  # dropout draws from here, not the caller's RNG
        torch.manual_seed(derive_seed("dropout", tuple(seeds), method.name, "ensemble"))
        for epoch in range(1, cfg.epochs + 1):
            group = [members[i] for i in active]
            k = len(group)
            stacked.train()
            for aux in (m.auxiliary for m in group if m.auxiliary is not None):
                aux.train()
            sums: list[dict[str, torch.Tensor]] = [{} for _ in group]
            steps = 0
            streams = [
                train.batches(cfg.batch_size, shuffle=True, generator=m.shuffle_gen, device=device, bucket=cfg.bucket)
                for m in group
            ]
            for batches in zip(*streams, strict=True):  # every member draws the same number of batches per epoch
                set_lr(optimizer, cfg, steps_done, steps_per_epoch)
                terms = _step(method, stacked, group, list(batches), cfg, optimizer, encoder_params, device)
                steps_done += 1
                if ema is not None:
                    decay = ema_decay(cfg, steps_done)
                    with torch.no_grad():
                        names = list(ema)
                        torch._foreach_lerp_(
                            [ema[n] for n in names], [stacked.params[n].detach() for n in names], 1.0 - decay
                        )
                for s, t in zip(sums, terms):
                    for key, v in t.items():
                        s[key] = s.get(key, 0.0) + v
                steps += 1
            outs = run_stacked(stacked, dev, [m.dev_masks for m in group], eval_batch_size, device, ema)
            stopping = []
            for pos, (m, s, out) in enumerate(zip(group, sums, outs)):
                m.score = dev_score(predictions(out, dev), label_names, cfg.select_metric)
                means = {key: float(v) / steps for key, v in s.items()}

                def state(pos: int = pos, avg: dict | None = ema) -> dict[str, torch.Tensor]:
                    weights = stacked.state_dict(pos)
                    return weights if avg is None else {**weights, **{n: t[pos].clone() for n, t in avg.items()}}

                if m.selection.epoch_done(epoch, means, m.score, state):
                    stopping.append(pos)
            if on_epoch:
                defined = [m.score for m in group if m.score is not None]
                on_epoch(epoch, float(np.mean(defined)) if defined else None)
            if stopping:
                keep = [pos for pos in range(k) if pos not in stopping]
                active = [active[pos] for pos in keep]
                if not active:
                    break
                moved = stacked.keep(keep)
                optimizer = _optimizer(stacked, [members[i] for i in active], cfg, optimizer, moved, keep)
                if ema is not None:
                    index = torch.tensor(keep, device=device)
                    ema = {n: t.index_select(0, index) for n, t in ema.items()}
    seconds = (time.perf_counter() - start) / k_all  # the ensemble's time, shared out
    return [m.selection.result(m.model, seconds) for m in members]


def _optimizer(
    stacked: StackedModels,
    group: list[_Member],
    cfg: TrainingConfig,
    previous: torch.optim.AdamW | None = None,
    moved: dict[torch.Tensor, torch.Tensor] | None = None,
    keep: list[int] | None = None,
) -> torch.optim.AdamW:
    """AdamW over the stacked weights and each member's training-only module (a group each); with ``previous``,
    its state carried over to the members ``keep`` (stacked moments sliced, ``moved``: old leaf -> new leaf)."""
    groups = [{"params": list(stacked.params.values())}]
    groups += [{"params": list(m.auxiliary.parameters())} for m in group if m.auxiliary is not None]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if previous is None:
        return optimizer
    assert moved is not None and keep is not None
    optimizer.param_groups[0]["lr"] = previous.param_groups[0]["lr"]
    for g in optimizer.param_groups[1:]:
        g["lr"] = previous.param_groups[0]["lr"]
    index = None
    for old, new in moved.items():
        state = previous.state.get(old)
        if state:
            index = index if index is not None else torch.tensor(keep, device=old.device)
            optimizer.state[new] = {
                key: (v.index_select(0, index) if key != "step" else v.clone()) for key, v in state.items()
            }
    for m in group:  # a kept member's training-only module keeps its moments
        if m.auxiliary is not None:
            for p in m.auxiliary.parameters():
                if p in previous.state:
                    optimizer.state[p] = previous.state[p]
    return optimizer


def _step(
    method: Method,
    stacked: StackedModels,
    group: list[_Member],
    batches: list[Batch],
    cfg: TrainingConfig,
    optimizer: torch.optim.AdamW,
    encoder_params: dict[str, list[str]],
    device: torch.device,
) -> list[dict[str, torch.Tensor]]:
    """One optimisation step of every member on its batch; each member's detached loss terms, step diagnostics and
    encoder gradient norms (as :meth:`corekd.training.Trainer.step` returns them)."""
    k = len(group)
    views = [method.train_view(b, m.mask_gen, m.method_gen) for b, m in zip(batches, group)]
    outs = stacked.forward([method.forward_input(v) for v in views])
    total = torch.zeros((), device=device)
    recorded = []
    for pos, (m, batch, view, out) in enumerate(zip(group, batches, views, outs)):
        output = method.forward_output(out, view)
        teacher = m.teacher.outputs(batch) if method.needs_teacher and m.teacher is not None else None

        def member_loss(model: ERCModel, m=m, batch=batch, view=view, output=output, teacher=teacher):
            ctx = StepContext(
                batch=batch,
                view=view,
                output=output,
                teacher=teacher,
                model=model,
                generator=m.method_gen,
                label_smoothing=cfg.label_smoothing,
                auxiliary=m.auxiliary,
            )
            loss, terms = method.loss(ctx)
            return loss, terms, method.stats(ctx)

        loss, terms, stats = stacked.call_member(pos, member_loss)
        total = total + loss
        recorded.append({"loss": loss, **terms, **stats})
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    norms = {
        GRAD_NORM_PREFIX + mod: _per_member_norms([stacked.params[n].grad for n in names], k, device)
        for mod, names in encoder_params.items()
    }
    if cfg.grad_clip > 0:
        _clip_members([p.grad for p in stacked.params.values()], cfg.grad_clip, k, device)
        for m in group:
            if m.auxiliary is not None:
                torch.nn.utils.clip_grad_norm_(m.auxiliary.parameters(), cfg.grad_clip)
    optimizer.step()
    return [
        {**{key: v.detach() for key, v in rec.items()}, **{name: n[pos] for name, n in norms.items()}}
        for pos, rec in enumerate(recorded)
    ]
