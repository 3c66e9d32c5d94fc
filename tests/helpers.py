"""Small helpers shared by test modules (fixtures live in conftest.py)."""

import copy
import json
import math

from safetensors.numpy import load_file, save_file

# A whole corpus in milliseconds: 14 short dialogues, small feature dims.
TINY_SYNTH = dict(n_dialogues=14, mean_length=10, length_std=3, min_length=4, max_length=16,
                  dims={"l": 12, "a": 10, "v": 16}, latent_dim=4)



def quick_config(**extra):
    """A whole ``corekd run`` in about a second: tiny corpus, one seed, one student, one epoch."""
    cfg = {
        "name": "quick", "seeds": [0], "device": "cpu",
        "data": {"source": "synthetic", "synth": dict(TINY_SYNTH)},
        "model": {"hidden": 16, "heads": 2},
        "training": {"epochs": 1, "patience": 1, "batch_size": 4},
        # No figures unless a test asks (drawing them is most of a tiny run's time; test_analyses.py draws them).
        "evaluation": {"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False},
        "methods": [{"name": "no_kd"}],
    }
    cfg.update(copy.deepcopy(extra))
    return cfg


def edit_meta(folder, fn):
    """Apply ``fn`` to a saved corpus's parsed corpus.json and write it back."""
    meta = json.loads((folder / "corpus.json").read_text())
    fn(meta)
    (folder / "corpus.json").write_text(json.dumps(meta))


def edit_features(folder, fn):
    """Apply ``fn`` to a saved corpus's feature tensors (a dict) and write them back."""
    tensors = load_file(str(folder / "features.safetensors"))
    fn(tensors)
    save_file(tensors, str(folder / "features.safetensors"))


def edit_weights(folder, fn):
    """Apply ``fn`` to a checkpoint's or bundle's weights (a dict of tensors), write them back and record their new
    checksum in model.json: a well-formed artefact holding these weights."""
    import hashlib

    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    weights = load_torch(str(folder / "model.safetensors"))
    fn(weights)
    save_torch(weights, str(folder / "model.safetensors"))
    info = json.loads((folder / "model.json").read_text())
    info["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(info))


def loss_before_and_after_one_step(name, splits, options=None, *, lr=1e-3, seed=0):
    """A method's loss on a fixed batch before and after one optimisation step of the real ``Trainer.step``.

    Tiny model without dropout; a freshly initialised teacher (cached complete-view outputs) when the
    method needs one; the method's view (masks, NCE draws, ...) is drawn from the same fixed streams
    for all three evaluations, so the batch, view and randomness are identical. Returns (before, after, trainer).
    """
    import torch

    from corekd.config import TrainingConfig
    from corekd.methods import method_class
    from corekd.models.model import ModelConfig
    from corekd.seeding import torch_generator
    from corekd.training import TeacherReference, Trainer, init_model

    train = splits["train"]
    dims = {m: int(x.shape[-1]) for m, x in train.features.items()}
    num_classes = int(train.labels.max()) + 1 if train.targets is None else 1
    model_cfg = ModelConfig(hidden=16, heads=2, dropout=0.0)
    cls = method_class(name)
    method = cls(cls.Options(**(options or {})), TrainingConfig().missing)
    teacher = None
    if method.needs_teacher:
        teacher = TeacherReference(init_model(model_cfg, dims, num_classes, seed, "teacher"), train, cache=True,
                                   batch_size=8, device=torch.device("cpu"))
    trainer = Trainer(method, init_model(model_cfg, dims, num_classes, seed, "student", build=method.build_model),
                      TrainingConfig(lr=lr, weight_decay=0.0), seed=seed, device=torch.device("cpu"), teacher=teacher)
    batch = train.batch(list(range(min(4, len(train)))))

    def fixed_streams():
        trainer.mask_gen = torch_generator("one-step-mask", seed)
        trainer.method_gen = torch_generator("one-step-method", seed)

    trainer.model.train()
    fixed_streams()
    with torch.no_grad():
        before = float(trainer.loss(batch)[0])
    fixed_streams()
    trainer.step(batch)
    fixed_streams()
    with torch.no_grad():
        after = float(trainer.loss(batch)[0])
    return before, after, trainer


def as_interchange(dialogue, corpus, mask=None):
    """A corpus ``Dialogue`` as an interchange-format mapping; ``mask`` [U, M] bool (default: what it has) drops modalities."""
    mods = corpus.modality_names
    utterances = []
    for i, uid in enumerate(dialogue.utterance_ids):
        u = {"id": uid, "speaker": dialogue.speakers[i], "label": corpus.labels[int(dialogue.labels[i])]}
        for j, m in enumerate(mods):
            keep = dialogue.available[i, j] if mask is None else mask[i, j] and dialogue.available[i, j]
            if keep:
                u[m] = dialogue.features[m][i].tolist()
        utterances.append(u)
    return {"dialogue_id": dialogue.id, "split": dialogue.split, "utterances": utterances}


# ------------------------------------------------------------------ hand computation for the loss tests
def build_method(name, **options):
    """A registered method with these options (training missing: the defaults)."""
    from corekd.data.protocols import TrainingMissing
    from corekd.methods import method_class

    cls = method_class(name)
    return cls(cls.Options(**options), TrainingMissing())


def py_softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def py_ce(logits, label, smoothing=0.0):
    """(1 - e) * -log p[label] + e * mean_c(-log p[c]), in plain Python."""
    log_p = [math.log(p) for p in py_softmax(logits)]
    return -(1 - smoothing) * log_p[label] - smoothing * sum(log_p) / len(log_p)


def py_kd(student, teacher, t):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), in plain Python."""
    ps, pt = py_softmax([v / t for v in student]), py_softmax([v / t for v in teacher])
    return t * t * sum(q * math.log(q / p) for p, q in zip(ps, pt))


def made_up_batch(avail, mask, labels, utt, mods=("l", "a", "v")):
    """A batch of made-up tensors ``[B, U, M]`` masks: features are never read by the losses under test."""
    import torch

    from corekd.data.batching import Batch

    b, u, m = avail.shape
    mods = tuple(mods[:m])
    return Batch(features={k: torch.zeros(b, u, 1) for k in mods}, mask=mask & avail, avail=avail,
                 speakers=torch.zeros(b, u, dtype=torch.long), labels=labels.clone(), utt_mask=utt.clone(), modalities=mods,
                 index=torch.arange(b))
