"""Padded tensors for a split, and the one place batches are built.

A split is collated once into padded tensors (``[N, U, ...]``, N dialogues, U the longest);
a batch is an index selection trimmed to its own longest dialogue. Missingness applied by a
protocol is a *view*: :meth:`Batch.view` zeroes the features where the mask is 0 and carries
the mask with it, so the model is told what is missing instead of guessing from zeros.

Sequence modalities (``kind: "sequence"``) keep their frames flat in the split (``[T_m, D_m]``
plus each utterance's first frame and frame count), so a split costs what its frames cost; a
batch pads them to its own longest utterance, ``Batch.frames[m]`` ``[B, U, F, D_m]`` with
``Batch.frame_mask[m]`` ``[B, U, F]`` (True: a real frame the view shows). Intra-modality frame
missing is a view too (:meth:`Batch.drop_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from corekd.data.corpus import Corpus, Dialogue
from corekd.errors import CorekdError


@dataclass
class Batch:
    features: dict[str, torch.Tensor]  # m -> [B, U, D_m] float (zero where mask is 0)
    mask: torch.Tensor  # [B, U, M] bool: modality observed in this view (always within avail)
    avail: torch.Tensor  # [B, U, M] bool: modality present in the data (False on padding)
    speakers: torch.Tensor  # [B, U] long: speaker index within the dialogue (0, 1, ...)
    labels: torch.Tensor  # [B, U] long (0 on padding; use utt_mask)
    utt_mask: torch.Tensor  # [B, U] bool: real utterance (not padding)
    modalities: tuple[str, ...]
    index: torch.Tensor  # [B] long: dialogue positions in the split these rows came from
    # Sequence modalities only: m -> [B, U] long, frames per utterance the data has (0 where missing or padding).
    frame_lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    targets: torch.Tensor | None = None  # [B, U] float32: regression targets (sentiment); None for classification
    # Sequence modalities only: m -> [B, U, F, D_m] float frames padded to the batch's longest utterance (zeros where
    # frame_mask is False), and m -> [B, U, F] bool, the frames this view shows (real, modality observed, not dropped).
    # ``features[m]`` of a sequence modality is the mean over the frames the view shows.
    frames: dict[str, torch.Tensor] = field(default_factory=dict)
    frame_mask: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.utt_mask.shape[0])

    def view(self, mask: torch.Tensor) -> Batch:
        """The same utterances seen through ``mask`` [B, U, M] (intersected with what the data has)."""
        mask = mask.to(self.avail.device, torch.bool) & self.avail
        feats = {m: x * mask[..., j, None].to(x.dtype) for j, (m, x) in enumerate(self.features.items())}
        if not self.frames:
            return replace(self, features=feats, mask=mask)
        frames, frame_mask = {}, {}
        for m, x in self.frames.items():
            shown = mask[..., self.modalities.index(m)]  # [B, U]
            frames[m] = x * shown[..., None, None].to(x.dtype)  # [B, U, F, D]
            frame_mask[m] = self.frame_mask[m] & shown[..., None]  # [B, U, F]
        return replace(self, features=feats, mask=mask, frames=frames, frame_mask=frame_mask)

    def drop_frames(self, keep: dict[str, torch.Tensor]) -> Batch:
        """The same view with some frames of sequence modalities hidden (intra-modality frame missing).

        ``keep``: m -> [B, U, F'] bool (F' >= the batch's F: masks drawn for a whole split are sliced); a modality
        not in ``keep`` keeps its frames. An observed modality always keeps at least one frame: where ``keep``
        would hide every frame of an utterance the view observes, its first shown frame stays (the protocols'
        masks never ask for that). Hidden frames are zeroed and ``features[m]`` becomes the mean over the frames
        left; ``mask`` and ``avail`` do not change.
        """
        unknown = set(keep) - set(self.frames)
        if unknown:
            raise ValueError(
                f"drop_frames: {sorted(unknown)} are not sequence modalities of this batch ({sorted(self.frames)})"
            )
        frames, frame_mask, features = dict(self.frames), dict(self.frame_mask), dict(self.features)
        for m, k in keep.items():
            shown = self.frame_mask[m]  # [B, U, F]
            f = shown.shape[-1]
            if k.shape[:-1] != shown.shape[:-1] or k.shape[-1] < f:
                raise ValueError(
                    f"drop_frames: keep['{m}'] has shape {list(k.shape)}; expected [B, U, >= {f}] "
                    f"for frames {list(shown.shape)}"
                )
            kept = shown & k[..., :f].to(shown.device, torch.bool)  # [B, U, F]
            first = shown & (shown.cumsum(-1) == 1)  # [B, U, F]: each utterance's first shown frame
            kept = kept | (first & ~kept.any(-1, keepdim=True))
            x = self.frames[m] * kept[..., None].to(self.frames[m].dtype)  # [B, U, F, D]
            frames[m], frame_mask[m] = x, kept
            features[m] = x.sum(2) / kept.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)  # [B, U, D]
        return replace(self, features=features, frames=frames, frame_mask=frame_mask)

    def hide_features(self, keep: dict[str, torch.Tensor], fill: dict[str, torch.Tensor] | None = None) -> Batch:
        """The same view with some feature dimensions of vector modalities hidden (feature missing, ``features:p``).

        ``keep``: m -> [B, U, D_m] bool, the dimensions kept (vector modalities only); hidden dimensions take
        ``fill[m]`` [D_m] (the model's standardisation mean, so the standardised input is 0 there; default 0).
        Entries the view does not observe stay 0; ``mask`` and ``avail`` do not change.
        """
        unknown = set(keep) - set(self.features)
        if unknown or set(keep) & set(self.frames):
            raise ValueError(f"hide_features: {sorted(set(keep))} must be vector modalities of this batch")
        features = dict(self.features)
        for m, k in keep.items():
            x = self.features[m]  # [B, U, D]
            k = k.to(x.device, torch.bool)
            if k.shape != x.shape:
                raise ValueError(f"hide_features: keep['{m}'] has shape {list(k.shape)}; expected {list(x.shape)}")
            value = torch.zeros((), dtype=x.dtype, device=x.device) if fill is None else fill[m].to(x)
            shown = self.mask[..., self.modalities.index(m), None]  # [B, U, 1]
            features[m] = torch.where(k | ~shown, x, value)
        return replace(self, features=features)

    @staticmethod
    def stack(batches: list[Batch]) -> Batch:
        """Several views of the same rows, one after another along B: [k*B, U, ...] (one forward for all)."""
        first = batches[0]

        def cat(get):
            return torch.cat([get(b) for b in batches])

        def cat_frames(get):  # views of other rows may be padded to other lengths: pad to the longest
            parts = [get(b) for b in batches]
            f = max(p.shape[2] for p in parts)
            return torch.cat([torch.nn.functional.pad(p, (0, 0) * (p.dim() - 3) + (0, f - p.shape[2])) for p in parts])

        return Batch(
            features={m: cat(lambda b, m=m: b.features[m]) for m in first.features},
            mask=cat(lambda b: b.mask),
            avail=cat(lambda b: b.avail),
            speakers=cat(lambda b: b.speakers),
            labels=cat(lambda b: b.labels),
            utt_mask=cat(lambda b: b.utt_mask),
            modalities=first.modalities,
            index=cat(lambda b: b.index),
            frame_lengths={m: cat(lambda b, m=m: b.frame_lengths[m]) for m in first.frame_lengths},
            targets=None if first.targets is None else cat(lambda b: b.targets),
            frames={m: cat_frames(lambda b, m=m: b.frames[m]) for m in first.frames},
            frame_mask={m: cat_frames(lambda b, m=m: b.frame_mask[m]) for m in first.frame_mask},
        )

    def complete(self) -> Batch:
        """The view with everything the data has."""
        return self.view(self.avail)

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(
            self,
            features={m: move(x) for m, x in self.features.items()},
            mask=move(self.mask),
            avail=move(self.avail),
            speakers=move(self.speakers),
            labels=move(self.labels),
            utt_mask=move(self.utt_mask),
            index=move(self.index),
            frame_lengths={m: move(x) for m, x in self.frame_lengths.items()},
            targets=None if self.targets is None else move(self.targets),
            frames={m: move(x) for m, x in self.frames.items()},
            frame_mask={m: move(x) for m, x in self.frame_mask.items()},
        )


@dataclass
class SplitTensors:
    """All dialogues of one split, padded to the longest: the source every batch is sliced from."""

    name: str
    modalities: tuple[str, ...]
    features: dict[str, torch.Tensor]  # m -> [N, U, D_m]
    avail: torch.Tensor  # [N, U, M] bool
    speakers: torch.Tensor  # [N, U] long
    labels: torch.Tensor  # [N, U] long
    utt_mask: torch.Tensor  # [N, U] bool
    lengths: torch.Tensor  # [N] long
    dialogue_ids: list[str]
    utterance_ids: list[list[str]]
    frame_lengths: dict[str, torch.Tensor] = field(default_factory=dict)  # sequence modalities: m -> [N, U] long
    targets: torch.Tensor | None = None  # [N, U] float32 sentiment for regression (0 on padding); None otherwise
    # Sequence modalities: m -> [T_m, D_m] the split's frames, flat (only utterances whose m is available), and
    # m -> [N, U] long, the row of each utterance's first frame in it (0 where it has none).
    frame_data: dict[str, torch.Tensor] = field(default_factory=dict)
    frame_start: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return "classification" if self.targets is None else "regression"

    @classmethod
    def from_dialogues(
        cls, name: str, dialogues: list[Dialogue], corpus: Corpus, task: str = "classification"
    ) -> SplitTensors:
        """``task="regression"``: the dialogues' ``sentiment`` becomes ``targets`` (every utterance must have one)."""
        mods = corpus.modality_names
        n = len(dialogues)
        u_max = max((len(d) for d in dialogues), default=1)
        feats = {m: np.zeros((n, u_max, corpus.modalities[m].dim), dtype=np.float32) for m in mods}
        avail = np.zeros((n, u_max, len(mods)), dtype=bool)
        speakers = np.zeros((n, u_max), dtype=np.int64)
        labels = np.zeros((n, u_max), dtype=np.int64)
        utt_mask = np.zeros((n, u_max), dtype=bool)
        targets = np.zeros((n, u_max), dtype=np.float32) if task == "regression" else None
        frame_lengths = {
            m: np.zeros((n, u_max), dtype=np.int64) for m in mods if corpus.modalities[m].kind == "sequence"
        }
        frame_start = {m: np.zeros((n, u_max), dtype=np.int64) for m in frame_lengths}
        frame_rows: dict[str, list[np.ndarray]] = {m: [] for m in frame_lengths}
        frame_count = {m: 0 for m in frame_lengths}
        for i, d in enumerate(dialogues):
            for m, lengths in frame_lengths.items():
                flat, lens = d.frames[m]  # [F, D], [U]
                lengths[i, : len(d)] = lens
                frame_start[m][i, : len(d)] = frame_count[m] + np.concatenate([[0], np.cumsum(lens)[:-1]])
                frame_rows[m].append(flat)
                frame_count[m] += int(lens.sum())
            u = len(d)
            for m in mods:
                feats[m][i, :u] = d.features[m]
            avail[i, :u] = d.available
            order: dict[str, int] = {}
            speakers[i, :u] = [order.setdefault(s, len(order)) for s in d.speakers]
            labels[i, :u] = d.labels
            utt_mask[i, :u] = True
            if targets is not None:
                if d.sentiment is None or np.isnan(d.sentiment).any():
                    raise CorekdError(
                        f"dialogue '{d.id}' has an utterance without 'sentiment'; the regression task "
                        "needs one on every utterance",
                        field="sentiment",
                    )
                targets[i, :u] = d.sentiment
        return cls(
            name=name,
            modalities=mods,
            features={m: torch.from_numpy(x) for m, x in feats.items()},
            avail=torch.from_numpy(avail),
            speakers=torch.from_numpy(speakers),
            labels=torch.from_numpy(labels),
            utt_mask=torch.from_numpy(utt_mask),
            lengths=torch.tensor([len(d) for d in dialogues], dtype=torch.long),
            dialogue_ids=[d.id for d in dialogues],
            utterance_ids=[list(d.utterance_ids) for d in dialogues],
            frame_lengths={m: torch.from_numpy(x) for m, x in frame_lengths.items()},
            targets=None if targets is None else torch.from_numpy(targets),
            frame_data={
                m: torch.from_numpy(
                    np.ascontiguousarray(
                        np.concatenate(rows, axis=0) if rows else np.zeros((0, corpus.modalities[m].dim)),
                        dtype=np.float32,
                    )
                )
                for m, rows in frame_rows.items()
            },
            frame_start={m: torch.from_numpy(x) for m, x in frame_start.items()},
        )

    @classmethod
    def from_corpus(cls, corpus: Corpus, split: str, task: str = "classification") -> SplitTensors:
        return cls.from_dialogues(split, corpus.split(split), corpus, task)

    def __len__(self) -> int:
        return len(self.dialogue_ids)

    @property
    def num_utterances(self) -> int:
        return int(self.lengths.sum())

    @property
    def sequence_modalities(self) -> tuple[str, ...]:
        return tuple(self.frame_lengths)

    def frame_presence(self) -> dict[str, torch.Tensor]:
        """m -> [N, U, F_max] bool: the frames the data has (F_max: the split's longest utterance, at least 1)."""
        out = {}
        for m, lens in self.frame_lengths.items():
            f = max(1, int(lens.max())) if lens.numel() else 1
            out[m] = torch.arange(f)[None, None, :] < lens[..., None]
        return out

    def _frames(self, m: str, index: torch.Tensor, u: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` (trimmed to ``u`` utterances) of sequence modality ``m``: ([B, U, F, D] frames, [B, U, F] bool)."""
        lens = self.frame_lengths[m][index, :u]  # [B, U]
        f = max(1, int(lens.max())) if lens.numel() else 1
        present = torch.arange(f)[None, None, :] < lens[..., None]  # [B, U, F]
        data = self.frame_data[m]  # [T, D]
        if len(data) == 0:
            return data.new_zeros((*present.shape, data.shape[-1])), present
        rows = (self.frame_start[m][index, :u, None] + torch.arange(f)).masked_fill(~present, 0)  # [B, U, F]
        frames = data[rows.clamp(max=len(data) - 1)] * present[..., None].to(data.dtype)  # [B, U, F, D]
        return frames, present

    def batch(self, index: torch.Tensor | list[int], device: torch.device | str | None = None) -> Batch:
        """Rows ``index`` as a complete-view batch, trimmed to its longest dialogue."""
        index = torch.as_tensor(index, dtype=torch.long)
        u = int(self.lengths[index].max())
        avail = self.avail[index, :u]
        batch = Batch(
            features={m: x[index, :u] for m, x in self.features.items()},
            mask=avail,
            avail=avail,
            speakers=self.speakers[index, :u],
            labels=self.labels[index, :u],
            utt_mask=self.utt_mask[index, :u],
            modalities=self.modalities,
            index=index,
            frame_lengths={m: x[index, :u] for m, x in self.frame_lengths.items()},
            targets=None if self.targets is None else self.targets[index, :u],
        )
        if self.frame_lengths:
            parts = {m: self._frames(m, index, u) for m in self.frame_lengths}
            batch.frames = {m: x for m, (x, _) in parts.items()}
            batch.frame_mask = {m: present for m, (_, present) in parts.items()}
        return batch.to(device) if device is not None else batch

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        bucket: int = 0,
    ):
        """Yield batches of ``batch_size`` dialogues (shuffled with ``generator`` when asked).

        ``bucket`` > 1 (with ``shuffle``): length bucketing. The shuffled order is cut into pools of
        ``bucket`` batches' worth of dialogues; each pool is sorted by dialogue length (ties keep the
        shuffled order) and cut into batches, and the order of all batches is shuffled. Batches then
        hold dialogues of similar length, so less of each is padding (a batch is as long as its
        longest dialogue). 0 or 1: plain shuffled batches.
        """
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        if shuffle and bucket > 1:
            for index in length_bucketed(order, self.lengths, batch_size, bucket, generator):
                yield self.batch(index, device)
            return
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start : start + batch_size], device)


def length_bucketed(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, bucket: int, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """[N] shuffled row order, [N] lengths -> batches of rows: pools of ``bucket`` batches sorted by length, cut,
    then the batches shuffled (see :meth:`SplitTensors.batches`)."""
    pool = batch_size * bucket
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), pool):
        rows = order[start : start + pool]
        rows = rows[torch.sort(lengths[rows], stable=True).indices]  # [P], shortest first
        batches += list(rows.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
