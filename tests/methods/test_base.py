"""The ``Method`` base class: its defaults and the dev masks it draws."""

import pytest
import torch

from corekd.data.protocols import TrainingMissing
from corekd.methods import Method, TrainView, method_class
from corekd.methods.no_kd import NoKD
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from helpers import split_dims


def test_dev_masks_draw_one_rate_per_dialogue():
    method = method_class("no_kd")(method_class("no_kd").Options(), TrainingMissing(low=0.0, high=0.6))
    avail = torch.ones(12, 400, 3, dtype=torch.bool)
    masks = method.dev_masks(avail, torch_generator("dev"))
    rates = [float((~masks[i]).float().mean()) for i in range(12)]
    assert max(rates) - min(rates) > 0.2  # per dialogue, not one rate for the whole split


CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)


def test_method_defaults(tiny_splits):
    missing = TrainingMissing(low=0.2, high=0.5)
    options = NoKD.Options()
    method = NoKD(options, missing)
    assert method.options is options and method.missing is missing
    dims = split_dims(tiny_splits)
    torch.manual_seed(0)
    built = method.build_model(CFG, dims, 3)
    torch.manual_seed(0)
    plain = ERCModel(CFG, dims, 3)
    assert type(built) is ERCModel and built.num_classes == 3 and built.cfg == CFG and built.dims == dims
    kinds = {"l": "vector", "a": "sequence", "v": "vector"}
    assert method.build_model(CFG, dims, 3, kinds).kinds == kinds
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), plain.state_dict().values()))
    batch = tiny_splits["train"].batch([0, 1, 2])
    view = method.train_view(batch, torch_generator("m"), torch_generator("x"))
    want = missing.masks(batch.avail, torch_generator("m"))
    assert isinstance(view, TrainView) and view.extra == {}
    assert torch.equal(view.batch.mask, want & batch.avail)
    with torch.no_grad():
        assert torch.equal(method.forward(plain, view).logits, plain(view.batch).logits)
    dev = tiny_splits["train"]  # ten dialogues: one rate per row differs from one per split
    assert torch.equal(
        method.dev_masks(dev.avail, torch_generator("d")), missing.masks(dev.avail, torch_generator("d"), per="row")
    )
    assert not torch.equal(
        method.dev_masks(dev.avail, torch_generator("d")), missing.masks(dev.avail, torch_generator("d"))
    )
    assert method.auxiliary(plain) is None
    with pytest.raises(NotImplementedError):
        Method(options, missing).loss(None)
