"""The emotion-recognition model shared by teacher and student (same class, separate weights).

Per-modality encoder -> speaker-aware dialogue-context encoder (masks respected) -> mask-aware
fusion -> classifier. Every forward returns an :class:`Output` with the logits, the fused state
and one state per modality; nothing downstream reaches into the model's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from corekd.data.batching import Batch
from corekd.models.context import SpeakerContextEncoder
from corekd.models.encoders import VectorEncoder
from corekd.models.fusion import MaskedFusion


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
        "all", description="fuse only observed modalities, or also context-derived states of missing ones"
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "ModelConfig":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


@dataclass
class Output:
    logits: torch.Tensor  # [B, U, C]
    fused: torch.Tensor  # [B, U, H]: the state fed to the classifier
    states: torch.Tensor  # [B, U, M, H]: one context-aware state per modality, corpus modality order

    def detach(self) -> "Output":
        return Output(self.logits.detach(), self.fused.detach(), self.states.detach())

    def select(self, rows: torch.Tensor) -> "Output":
        return Output(self.logits[rows], self.fused[rows], self.states[rows])


class ERCModel(nn.Module):
    def __init__(self, cfg: ModelConfig, dims: dict[str, int], num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.modalities = tuple(dims)
        self.dims = dict(dims)
        self.num_classes = num_classes
        self.encoders = nn.ModuleDict({m: VectorEncoder(d, cfg.hidden, cfg.dropout, cfg.input_dropout) for m, d in dims.items()})
        self.context = SpeakerContextEncoder(
            cfg.hidden, cfg.heads, cfg.context_layers, cfg.ffn_mult, cfg.dropout,
            len(dims), cfg.max_relative_position, cfg.speaker_aware,
        )
        self.fusion = MaskedFusion(cfg.hidden, len(dims), cfg.dropout, cfg.fuse_over)
        self.head = nn.Linear(cfg.hidden, num_classes)

    def forward(self, batch: Batch) -> Output:
        if batch.modalities != self.modalities:
            raise ValueError(f"batch modalities {batch.modalities} != model modalities {self.modalities}")
        mask = batch.mask & batch.utt_mask[..., None]  # [B, U, M]
        encoded = torch.stack(
            [self.encoders[m](batch.features[m], mask[..., j]) for j, m in enumerate(self.modalities)], dim=2
        )  # [B, U, M, H]
        states = self.context(encoded, mask, batch.speakers)  # [B, U, M, H]
        fused = self.fusion(states, mask)  # [B, U, H]
        return Output(logits=self.head(fused), fused=fused, states=states)
