"""Length-bucketed training batches (``training.bucket``): hand-checked pools, every dialogue once, seeded."""

from __future__ import annotations

import torch

from corekd.config import TrainingConfig, TrainingMissing
from corekd.data.batching import length_bucketed
from corekd.methods.registry import method_class
from corekd.models.model import ModelConfig
from corekd.seeding import torch_generator
from corekd.training import Trainer, init_model


def test_pools_are_sorted_by_length_and_cut_into_batches_then_the_batches_are_shuffled():
    order = torch.tensor([5, 0, 3, 1, 4, 2, 6])  # a shuffled order of 7 rows
    lengths = torch.tensor([10, 40, 20, 30, 50, 20, 60])  # row -> length; rows 2 and 5 tie at 20
    batches = length_bucketed(order, lengths, batch_size=2, bucket=2, generator=torch.Generator().manual_seed(0))
    # pool 1 = rows 5, 0, 3, 1 -> by length 0 (10), 5 (20), 3 (30), 1 (40); pool 2 = rows 4, 2, 6 -> 2 (20), 4 (50), 6 (60)
    want = [[0, 5], [3, 1], [2, 4], [6]]
    got = [b.tolist() for b in batches]
    assert sorted(got) == sorted(want)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist()
    assert got == [want[i] for i in perm]


def test_ties_keep_the_shuffled_order():
    lengths = torch.tensor([7, 7, 7, 7])
    for order in (torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])):
        batches = length_bucketed(order, lengths, batch_size=4, bucket=1, generator=None)
        assert [b.tolist() for b in batches] == [order.tolist()]


def test_bucketed_batches_visit_every_dialogue_once_with_less_padding(tiny_splits):
    train = tiny_splits["train"]
    plain = list(train.batches(3, shuffle=True, generator=torch.Generator().manual_seed(1)))
    bucketed = list(train.batches(3, shuffle=True, generator=torch.Generator().manual_seed(1), bucket=4))
    assert sorted(i for b in bucketed for i in b.index.tolist()) == list(range(len(train)))
    assert len(bucketed) == len(plain)  # the same number of steps per epoch
    for b in bucketed:  # each batch is trimmed to its own longest dialogue
        assert b.utt_mask.shape[1] == int(train.lengths[b.index].max())
    # one pool holds every dialogue here (10 <= 3 * 4): batches are contiguous runs of the length order
    runs = sorted((int(train.lengths[b.index].min()), int(train.lengths[b.index].max())) for b in bucketed)
    assert all(hi <= nxt_lo for (_, hi), (nxt_lo, _) in zip(runs, runs[1:]))
    positions = lambda bs: sum(b.utt_mask.shape[1] for b in bs)  # noqa: E731
    assert positions(bucketed) <= positions(plain)


def test_bucket_0_and_1_are_the_plain_shuffle(tiny_splits):
    train = tiny_splits["train"]
    plain = [b.index.tolist() for b in train.batches(3, shuffle=True, generator=torch.Generator().manual_seed(2))]
    for bucket in (0, 1):
        got = [
            b.index.tolist()
            for b in train.batches(3, shuffle=True, generator=torch.Generator().manual_seed(2), bucket=bucket)
        ]
        assert got == plain
    unshuffled = [b.index.tolist() for b in train.batches(3, bucket=4)]  # no shuffle: split order, no bucketing
    assert unshuffled == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_the_trainer_steps_on_bucketed_batches_of_its_own_stream_when_asked(tiny_corpus, tiny_splits):
    train = tiny_splits["train"]
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    cls = method_class("no_kd")
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    trainer = Trainer(
        cls(cls.Options(), TrainingMissing()),
        model,
        TrainingConfig(batch_size=3, bucket=4),
        seed=3,
        device=torch.device("cpu"),
    )
    seen = []
    trainer.step = lambda batch: (seen.append(batch.index.tolist()), {"loss": torch.tensor(1.0)})[1]
    trainer.epoch(train)
    want = [b.index.tolist() for b in train.batches(3, shuffle=True, generator=torch_generator("shuffle", 3), bucket=4)]
    plain = [b.index.tolist() for b in train.batches(3, shuffle=True, generator=torch_generator("shuffle", 3))]
    assert seen == want and seen != plain
