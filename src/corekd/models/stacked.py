"""K models of one architecture run as one: an ensemble with parameters stacked ``[K, ...]`` under ``torch.func.vmap``.

Each member keeps its own weights (a slice of every stacked parameter) and reads its own batch: the K batches
(other dialogues, other lengths, other masks) are padded to the largest and stacked, ``[K, B, U, ...]``, and one
vmapped forward runs all members (one batched product per layer instead of K small ones). Padding never reaches a
real position (padded rows and utterances are what the models already treat as padding) and each member's outputs
are cut back to its own batch's shape. The recurrences run unrolled (:func:`corekd.models.recurrent.gru_scan`):
``vmap`` has no batching rule for ``aten::gru``. Dropout draws differ between members (``randomness="different"``).

Not every model can be vmapped: a sequence encoder selects its rows with a data-dependent shape, so a model reading
the frames of a sequence modality is refused (:func:`stack_problem`); ``sequence_encoder: mean`` is accepted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from corekd.data.batching import Batch
from corekd.models.model import ERCModel, Output
from corekd.models.recurrent import unroll_recurrences

TensorDict = dict[str, Any]  # a Batch's tensor fields (dict fields nested), stacked [K, ...]


def stack_problem(model: ERCModel) -> str | None:
    """Why ``model``'s architecture cannot run as a stacked ensemble (None: it can)."""
    frames = [m for m, k in model.kinds.items() if k == "sequence"]
    if frames and model.cfg.sequence_encoder != "mean":
        return (
            f"the sequence modalities {frames} are read frame by frame (model.sequence_encoder "
            f"'{model.cfg.sequence_encoder}'), which selects rows with a data-dependent shape that torch.func.vmap "
            "cannot batch; train them separately (training.ensemble: none) or use sequence_encoder: mean"
        )
    return None


def _pad_to(t: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """``t`` zero-padded (False for bool) at the end of its leading dims up to ``sizes``."""
    pad: list[int] = []
    for dim in reversed(range(t.dim())):
        pad += [0, (sizes[dim] - t.shape[dim]) if dim < len(sizes) else 0]
    return F.pad(t, pad) if any(pad) else t


def stack_batches(batches: Sequence[Batch]) -> tuple[TensorDict, tuple[str, ...]]:
    """K batches -> their tensors padded to the largest (rows B, utterances U, frames F) and stacked ``[K, ...]``.

    Padded rows and utterances have ``utt_mask``, ``mask`` and ``avail`` False, as padding has.
    """
    first = batches[0]
    b = max(x.size for x in batches)
    u = max(int(x.utt_mask.shape[1]) for x in batches)
    f = {m: max(int(x.frames[m].shape[2]) for x in batches) for m in first.frames}

    def stacked(name: str, m: str | None, *extra: int) -> torch.Tensor:
        get = (lambda x: getattr(x, name)) if m is None else (lambda x: getattr(x, name)[m])
        return torch.stack([_pad_to(get(x), (b, u, *extra)) for x in batches])

    out: TensorDict = {}
    for fld in fields(Batch):
        value = getattr(first, fld.name)
        if fld.name == "modalities" or value is None:
            continue
        if fld.name == "index":
            out["index"] = torch.stack([_pad_to(x.index, (b,)) for x in batches])
        elif isinstance(value, dict):
            framed = fld.name in ("frames", "frame_mask")  # [B, U, F, ...]: frames padded too
            out[fld.name] = {m: stacked(fld.name, m, *((f[m],) if framed else ())) for m in value}
        else:
            out[fld.name] = stacked(fld.name, None)
    return out, first.modalities


def unstack_batch(tensors: TensorDict, modalities: tuple[str, ...]) -> Batch:
    """The :class:`Batch` of one member's tensors (inside ``vmap``: its slice of :func:`stack_batches`)."""
    return Batch(modalities=modalities, **{k: v for k, v in tensors.items()})


class _Bound(nn.Module):
    """Runs a function of the model with the weights ``functional_call`` puts in: one member's, for its loss."""

    def __init__(self, model: ERCModel):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[ERCModel], Any]) -> Any:
        return fn(self.model)


class StackedModels:
    """K models of one architecture and shape as one ensemble (``params`` and ``buffers``: name -> ``[K, ...]``).

    The stacked parameters are leaves an optimiser trains; member ``k``'s weights are their ``[k]`` slices. A
    template copy of the first model (recurrences unrolled) gives the modules ``functional_call`` runs.
    """

    def __init__(self, models: Sequence[ERCModel]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        problem = stack_problem(models[0])
        if problem:
            raise ValueError(problem)
        shapes = {k: v.shape for k, v in models[0].state_dict().items()}
        for m in models[1:]:
            if type(m) is not type(models[0]) or {k: v.shape for k, v in m.state_dict().items()} != shapes:
                raise ValueError("the members of an ensemble must be models of one architecture and shape")
        self.template: ERCModel = copy.deepcopy(models[0])
        unroll_recurrences(self.template)
        params, buffers = stack_module_state(list(models))  # leaves [K, ...] (requires_grad as the models' were)
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        self.training = True

    @property
    def size(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def train(self, mode: bool = True) -> StackedModels:
        self.training = mode
        self.template.train(mode)
        return self

    def eval(self) -> StackedModels:
        return self.train(False)

    def forward(self, batches: Sequence[Batch], params: dict[str, torch.Tensor] | None = None) -> list[Output]:
        """Member k on ``batches[k]`` for every member at once: K outputs, each of its own batch's shape.

        ``params``: stacked weights to run instead of :attr:`params` (e.g. their moving average)."""
        if len(batches) != self.size:
            raise ValueError(f"{len(batches)} batches for an ensemble of {self.size}")
        tensors, modalities = stack_batches(batches)
        template = self.template

        def one(params: dict, buffers: dict, member: TensorDict) -> tuple:
            out = functional_call(template, (params, buffers), (unstack_batch(member, modalities),))
            return out.logits, out.fused, out.states, out.extra

        logits, fused, states, extra = vmap(one, randomness="different")(
            self.params if params is None else params, self.buffers, tensors
        )
        outs = []
        for k, batch in enumerate(batches):
            b, u = batch.size, int(batch.utt_mask.shape[1])
            outs.append(
                Output(
                    logits[k, :b, :u],
                    fused[k, :b, :u],
                    states[k, :b, :u],
                    {name: value[k, :b, :u] for name, value in extra.items()},  # every architecture's: [B, U, ...]
                )
            )
        return outs

    def member_tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers by name (slices: gradients reach the stacked leaves)."""
        return {**{n: p[k] for n, p in self.params.items()}, **{n: b[k] for n, b in self.buffers.items()}}

    def call_member(self, k: int, fn: Callable[[ERCModel], Any]) -> Any:
        """``fn(model)`` with the template holding member k's weights (a loss that runs the model again, or reads
        one of its modules, reads member k's)."""
        bound = _Bound(self.template)
        return functional_call(bound, {f"model.{n}": t for n, t in self.member_tensors(k).items()}, (fn,))

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as a detached copy, in the key order of the model's own ``state_dict``."""
        tensors = self.member_tensors(k)
        return {n: tensors[n].detach().clone() for n in self.template.state_dict()}

    def member(self, k: int) -> ERCModel:
        """A model of its own holding member k's weights (the recurrence back in its ``nn.GRU`` form)."""
        model = copy.deepcopy(self.template)
        unroll_recurrences(model, False)
        model.load_state_dict(self.state_dict(k))
        return model

    def keep(self, members: Sequence[int]) -> dict[torch.Tensor, torch.Tensor]:
        """Keep only ``members`` (in that order): new stacked leaves; returns old leaf -> new leaf (for optimiser
        state)."""
        index = torch.tensor(list(members), device=next(iter(self.params.values())).device)
        moved: dict[torch.Tensor, torch.Tensor] = {}
        for name, p in self.params.items():
            new = p.detach().index_select(0, index).clone().requires_grad_(p.requires_grad)
            moved[p] = new
            self.params[name] = new
        self.buffers = {n: b.index_select(0, index).clone() for n, b in self.buffers.items()}
        return moved
