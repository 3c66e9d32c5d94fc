"""The emotion-recognition model shared by teacher and student (same class, separate weights).

Input standardisation (train statistics held as buffers; identity unless ``data.standardize``)
-> per-modality encoder (chosen by the modality's ``kind``: a vector encoder for one vector per
utterance, a sequence encoder over the frames of a ``sequence`` modality, ``sequence_encoder``)
-> dialogue context (``context``: speaker-aware attention, a
bidirectional speaker-aware GRU, or none), either per modality before fusion or once after it
(``context_over``) -> fusion (``fusion``: the learned-token attention fusion, or the mean /
attention over the observed modalities only) -> classifier. With one context after fusion,
``modality_state`` says what each modality state h_m is: the encoding (the same whatever else the
view hides), the encoding plus an attention over the utterance's observed modalities
(``crossmodal``, the default) or the encoding mixed with the dialogue context (``context``). Every forward returns an
:class:`Output` with the logits, the fused state and one state per modality (``[B, U, M, H]`` in
every configuration); nothing downstream reaches into the model's internals.

Architectures: a method whose student carries extra trainable modules (``decoupled``,
``reconstruction``) builds an :class:`ERCModel` subclass (``Method.build_model``) registered here
with :func:`register_architecture`; checkpoints record its name and options (``architecture`` in
``model.json``) and :func:`build_architecture` rebuilds it. A subclass builds the base model first
(``super().__init__``), then its own modules, so its base weights are those of a plain model
initialised from the same random state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from corekd.data.batching import Batch
from corekd.data.standardize import InputStandardizer
from corekd.models.context import SpeakerContextEncoder
from corekd.models.dropout import Dropout
from corekd.models.encoders import SequenceEncoder, VectorEncoder, masked_frame_mean
from corekd.models.fusion import (
    MaskedFusion,
    ObservedAttentionFusion,
    ObservedMeanFusion,
)
from corekd.models.recurrent import GRUContextEncoder

ContextKind = Literal["attention", "gru", "none"]
ContextOver = Literal["modality", "fused"]
ModalityState = Literal["encoding", "context", "crossmodal"]
VectorEncoderKind = Literal["blocks", "mlp"]
FusionKind = Literal["token", "observed_mean", "observed_attention"]
SequenceKind = Literal["conv", "transformer", "none", "mean"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    hidden: int = Field(128, ge=8, description="width of every state (H)")
    context_layers: int = Field(1, ge=0, description="transformer blocks over the utterance sequence (0 = no context)")
    heads: int = Field(4, ge=1)
    ffn_mult: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    input_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input features")
    max_relative_position: int = Field(8, ge=0, description="relative positions beyond this share one bias")
    speaker_aware: bool = Field(True, description="learned same-speaker/other-speaker attention bias")
    fuse_over: Literal["observed", "all"] = Field(
        "all",
        description="token fusion only: fuse only observed modalities, or also context-derived states of missing ones",
    )
    context: ContextKind = Field(
        "gru", description="dialogue context: speaker-aware attention, bidirectional GRU, or none"
    )
    context_over: ContextOver = Field("fused", description="context per modality before fusion, or once after fusion")
    fusion: FusionKind = Field(
        "observed_mean",
        description="learned-token attention fusion, or mean / attention over the observed modalities only",
    )
    input_norm: bool = Field(False, description="per-utterance LayerNorm over each modality's input features")
    encoder_layers: int = Field(1, ge=1, description="linear -> GELU -> dropout blocks in each modality's encoder")
    sequence_encoder: SequenceKind = Field(
        "conv",
        description="sequence modalities only: conv (temporal convolution), transformer, none (frames read one "
        "by one), or mean (the vector encoder on the mean over the shown frames, the reading before frames were read)",
    )
    sequence_layers: int = Field(1, ge=0, description="sequence modalities: conv or transformer blocks over the frames")
    sequence_kernel: int = Field(3, ge=1, description="sequence_encoder conv: kernel width in frames (odd)")
    sequence_pool: Literal["attention", "mean"] = Field(
        "attention",
        description="sequence modalities: frames -> utterance state by a learned attention over the shown "
        "frames, or their mean (fill-in)",
    )

    modality_state: ModalityState = Field(
        "crossmodal",
        description="what each modality-specific state h_m is (context_over fused only): encoding (the "
        "modality's context-free encoding: the same whatever else the view hides), context (the encoding mixed with "
        "the dialogue context of the fused view, per modality, then fused again for the head), crossmodal (the "
        "encoding plus an attention over the utterance's observed modalities, before fusion; the default, chosen on dev "
        "by the backbone study's stage 8)",
    )
    vector_encoder: VectorEncoderKind = Field(
        "blocks",
        description="vector modalities: blocks (encoder_layers x linear -> GELU -> dropout) or mlp "
        "(linear -> ReLU -> dropout -> linear -> ReLU, the plain model's encoder)",
    )
    input_clip: float = Field(0.0, ge=0, description="clip standardised inputs to [-c, c] (0 = off)")
    context_residual: bool = Field(
        True,
        description="gru context: residual + LayerNorm around the recurrence (false: its dropped-out output "
        "alone, as the plain model)",
    )

    @model_validator(mode="after")
    def _shapes_fit(self) -> ModelConfig:
        if self.modality_state != "encoding" and self.context_over != "fused":
            if "modality_state" in self.model_fields_set:
                raise ValueError(
                    f"modality_state '{self.modality_state}' builds on context_over 'fused' (context_over "
                    "'modality' already gives each modality its own context)"
                )
            self.modality_state = "encoding"  # the default does not apply there: each modality has its own context
        if self.sequence_kernel % 2 == 0:
            raise ValueError(
                f"sequence_kernel ({self.sequence_kernel}) must be odd (a centred window keeps frames in place)"
            )
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.context == "gru" and self.hidden % 2:
            raise ValueError(f"hidden ({self.hidden}) must be even for the bidirectional GRU context")
        return self


@dataclass
class Output:
    logits: torch.Tensor  # [B, U, C]
    fused: torch.Tensor  # [B, U, H]: the state fed to the classifier
    states: torch.Tensor  # [B, U, M, H]: one context-aware state per modality, corpus modality order
    # Auxiliary outputs of an architecture with extra modules (e.g. reconstructions), each [B, ...]: rows first,
    # so that detach / select / split treat them like the fields above. Empty for the plain model.
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def detach(self) -> Output:
        return Output(
            self.logits.detach(),
            self.fused.detach(),
            self.states.detach(),
            {k: v.detach() for k, v in self.extra.items()},
        )

    def select(self, rows: torch.Tensor) -> Output:
        return Output(
            self.logits[rows], self.fused[rows], self.states[rows], {k: v[rows] for k, v in self.extra.items()}
        )

    def split(self, size: int) -> list[Output]:
        """The outputs of a :meth:`Batch.stack` of views, one per view of ``size`` rows."""
        keys = list(self.extra)
        tensors = [self.logits, self.fused, self.states, *(self.extra[k] for k in keys)]
        return [
            Output(parts[0], parts[1], parts[2], dict(zip(keys, parts[3:])))
            for parts in zip(*(t.split(size) for t in tensors))
        ]


def states_depend_on_view(cfg: ModelConfig) -> bool:
    """Whether an observed modality's state h_m can change with what else the view hides (METHOD.md, "Models").

    A context-free encoding cannot: anchoring it to the teacher's (L_mstate) only copies the teacher's encoder.
    """
    if cfg.modality_state != "encoding":
        return True
    if cfg.context_over != "modality":
        return False
    return (
        cfg.context != "none"
        and not (cfg.context == "gru" and cfg.context_layers == 0)
        and not (cfg.context == "attention" and cfg.context_layers == 0)
    )


class CrossModalAttention(nn.Module):
    """[B, U, M, H] modality states -> [B, U, M, H]: each modality's single-head attention over the utterance's
    observed modalities (itself included); a learned modality embedding tells the modalities apart. An utterance
    with nothing observed (padding included) reads zeros."""

    def __init__(self, hidden: int, num_modalities: int):
        super().__init__()
        self.embed = nn.Parameter(torch.zeros(num_modalities, hidden))
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.scale = hidden**-0.5

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # states: [B, U, M, H]; mask: [B, U, M] bool
        q, k, v = self.qkv(states + self.embed).chunk(3, dim=-1)  # 3 x [B, U, M, H]
        scores = torch.einsum("bumh,bukh->bumk", q, k) * self.scale  # [B, U, M, M]
        scores = scores.masked_fill(~mask[:, :, None, :], float("-inf"))
        weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # rows with no observed key -> 0
        read = self.out(torch.einsum("bumk,bukh->bumh", weights, v))  # [B, U, M, H]
        return read * mask.any(-1)[..., None, None].to(read.dtype)  # nothing observed (or padding): 0, not the bias


class ERCModel(nn.Module):
    """``kinds``: m -> "vector" | "sequence" (the corpus's ``ModalitySpec.kind``; None: every modality a vector)."""

    architecture: ClassVar[str] = "erc"  # the name checkpoints record (``build_architecture``)

    def __init__(
        self, cfg: ModelConfig, dims: dict[str, int], num_classes: int, kinds: Mapping[str, str] | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.modalities = tuple(dims)
        self.dims = dict(dims)
        self.kinds = {m: (kinds or {}).get(m, "vector") for m in dims}
        unknown = set(kinds or {}) - set(dims)
        if unknown or any(k not in ("vector", "sequence") for k in self.kinds.values()):
            raise ValueError(f"kinds {kinds} must give vector or sequence for modalities of dims {list(dims)}")
        self.num_classes = num_classes
        self.standardizer = InputStandardizer(dims, cfg.input_clip)
        token = cfg.fusion == "token"

        def encoder(m: str, d: int) -> nn.Module:
            if self.kinds[m] == "sequence" and cfg.sequence_encoder != "mean":
                return SequenceEncoder(
                    d,
                    cfg.hidden,
                    cfg.dropout,
                    cfg.input_dropout,
                    missing_token=token,
                    input_norm=cfg.input_norm,
                    kind=cfg.sequence_encoder,
                    layers=cfg.sequence_layers,
                    kernel=cfg.sequence_kernel,
                    pool=cfg.sequence_pool,
                    heads=cfg.heads,
                    ffn_mult=cfg.ffn_mult,
                )
            return VectorEncoder(
                d,
                cfg.hidden,
                cfg.dropout,
                cfg.input_dropout,
                missing_token=token,
                input_norm=cfg.input_norm,
                layers=cfg.encoder_layers,
                kind=cfg.vector_encoder,
            )

        self.encoders = nn.ModuleDict({m: encoder(m, d) for m, d in dims.items()})
        streams = len(dims) if cfg.context_over == "modality" else 1
        # context_layers 0: no context (the attention encoder keeps its final LayerNorm, as before)
        self.context_kind = "none" if cfg.context == "gru" and cfg.context_layers == 0 else cfg.context
        self.context: SpeakerContextEncoder | GRUContextEncoder | None
        self.fusion: MaskedFusion | ObservedMeanFusion | ObservedAttentionFusion
        if self.context_kind == "attention":
            self.context = SpeakerContextEncoder(
                cfg.hidden,
                cfg.heads,
                cfg.context_layers,
                cfg.ffn_mult,
                cfg.dropout,
                streams,
                cfg.max_relative_position,
                cfg.speaker_aware,
            )
        elif self.context_kind == "gru":
            self.context = GRUContextEncoder(
                cfg.hidden, cfg.context_layers, cfg.dropout, cfg.speaker_aware, residual=cfg.context_residual
            )
            self.stream_embed = nn.Parameter(torch.zeros(streams, cfg.hidden))
        else:
            self.context = None
        if token:
            self.fusion = MaskedFusion(cfg.hidden, len(dims), cfg.dropout, cfg.fuse_over)
        elif cfg.fusion == "observed_mean":
            self.fusion = ObservedMeanFusion()
        else:
            self.fusion = ObservedAttentionFusion(cfg.hidden, len(dims), cfg.dropout)
        self.head = nn.Linear(cfg.hidden, num_classes)
        # View-dependent modality states (built after the head, so the modules above keep their initial weights)
        if cfg.modality_state == "context":
            self.state_mix = nn.ModuleList(nn.Linear(2 * cfg.hidden, cfg.hidden) for _ in dims)
        elif cfg.modality_state == "crossmodal":
            self.cross = CrossModalAttention(cfg.hidden, len(dims))
        self.state_drop = Dropout(cfg.dropout)

    def set_input_statistics(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Standardise inputs with these (train-split) statistics from now on; they are saved with the weights."""
        self.standardizer.set_statistics(stats)

    def _contextualise(self, x: torch.Tensor, mask: torch.Tensor, batch: Batch) -> torch.Tensor:
        # x: [B, U, S, H] (S streams: modalities, or 1 after fusion); mask: [B, U, S] bool -> [B, U, S, H]
        if self.context is None:  # context_kind "none"
            return x
        if self.context_kind == "attention":
            return self.context(x, mask, batch.speakers)
        if self.context_kind == "gru":
            b, u, s, h = x.shape
            seq = (x + self.stream_embed).permute(0, 2, 1, 3).reshape(b * s, u, h)  # [B*S, U, H]
            lengths = batch.utt_mask.sum(1).repeat_interleave(s)  # [B*S]
            speakers = batch.speakers.repeat_interleave(s, dim=0)  # [B*S, U]
            return self.context(seq, lengths, speakers).view(b, s, u, h).permute(0, 2, 1, 3)
        return x

    def architecture_options(self) -> dict[str, Any]:
        """The constructor's keyword arguments beyond (cfg, dims, num_classes, kinds), JSON-serialisable (none here)."""
        return {}

    def _encode(self, batch: Batch, m: str, observed: torch.Tensor) -> torch.Tensor:
        # observed: [B, U] bool -> [B, U, H]
        if self.kinds[m] == "vector":
            return self.encoders[m](self.standardizer(m, batch.features[m], observed), observed)
        if m not in batch.frames:
            raise ValueError(f"modality '{m}' is a sequence, but the batch carries no frames for it")
        shown = batch.frame_mask[m] & observed[..., None]  # [B, U, F]
        frames = self.standardizer(m, batch.frames[m], shown)  # [B, U, F, D]
        if self.cfg.sequence_encoder == "mean":
            return self.encoders[m](masked_frame_mean(frames, shown), observed)
        return self.encoders[m](frames, shown, observed)

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality encodings before any context: (encoded [B, U, M, H], mask [B, U, M] bool, observed and real)."""
        if batch.modalities != self.modalities:
            raise ValueError(f"batch modalities {batch.modalities} != model modalities {self.modalities}")
        mask = batch.mask & batch.utt_mask[..., None]  # [B, U, M]
        encoded = torch.stack(
            [self._encode(batch, m, mask[..., j]) for j, m in enumerate(self.modalities)], dim=2
        )  # [B, U, M, H]
        return encoded, mask

    def forward(self, batch: Batch) -> Output:
        encoded, mask = self.encode(batch)
        return self.readout(encoded, mask, batch)

    def readout(self, encoded: torch.Tensor, mask: torch.Tensor, batch: Batch) -> Output:
        """Context, fusion and head over per-modality states ``encoded`` [B, U, M, H] under ``mask`` [B, U, M].

        ``modality_state`` (context_over fused): ``encoding``: h_m = the encoding, fused = context(fusion(h_m));
        ``crossmodal``: h_m = e_m + drop(attention of e_m over the utterance's observed e_k), then as ``encoding``;
        ``context``: c = context(fusion(e)), h_m = c + drop(GELU(W_m [e_m; c])), fused = fusion(h_m) (the head
        reads the modality states, each formed after the dialogue's fused view).
        """
        kind = self.cfg.modality_state
        if self.cfg.context_over == "modality":
            states = self._contextualise(encoded, mask, batch)  # [B, U, M, H]
            fused = self.fusion(states, mask)  # [B, U, H]
            return Output(logits=self.head(fused), fused=fused, states=states)
        states = (
            encoded if kind != "crossmodal" else encoded + self.state_drop(self.cross(encoded, mask))
        )  # [B, U, M, H]
        fused = self.fusion(states, mask)  # [B, U, H]
        fused = self._contextualise(fused[:, :, None], batch.utt_mask[..., None], batch)[:, :, 0]  # [B, U, H]
        if kind == "context":
            ctx = fused[:, :, None].expand_as(encoded)  # [B, U, M, H]
            mixed = torch.stack(
                [mix(torch.cat([encoded[:, :, j], fused], -1)) for j, mix in enumerate(self.state_mix)], dim=2
            )  # [B, U, M, H]
            states = (ctx + self.state_drop(F.gelu(mixed))) * batch.utt_mask[..., None, None].to(encoded.dtype)
            fused = self.fusion(states, mask)  # [B, U, H]
        return Output(logits=self.head(fused), fused=fused, states=states)


ARCHITECTURES: dict[str, type[ERCModel]] = {ERCModel.architecture: ERCModel}


def register_architecture(cls: type[ERCModel]) -> type[ERCModel]:
    """Make an :class:`ERCModel` subclass rebuildable from a checkpoint by its ``architecture`` name."""
    name = cls.architecture
    if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
        raise ValueError(f"architecture '{name}' is already registered by {ARCHITECTURES[name].__qualname__}")
    ARCHITECTURES[name] = cls
    return cls


def build_architecture(
    name: str,
    options: dict[str, Any],
    cfg: ModelConfig,
    dims: dict[str, int],
    num_classes: int,
    kinds: Mapping[str, str] | None = None,
) -> ERCModel:
    """The model a checkpoint's ``architecture`` entry names (KeyError for an unknown name)."""
    return ARCHITECTURES[name](cfg, dims, num_classes, kinds=kinds, **options)
