"""Small helpers shared by test modules (fixtures live in conftest.py)."""

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

# The repository root (configs/, benchmarks/, ../shared/ are found from it).
ROOT = Path(__file__).resolve().parents[1]

# A whole corpus in milliseconds: 14 short dialogues, small feature dims.
TINY_SYNTH = dict(
    n_dialogues=14,
    mean_length=10,
    length_std=3,
    min_length=4,
    max_length=16,
    dims={"l": 12, "a": 10, "v": 16},
    latent_dim=4,
)

# The tiny corpus with frame sequences: l and a as sequences, v stays a vector (a mixed corpus), short utterances.
TINY_FRAMES = dict(
    TINY_SYNTH,
    frames={
        "enabled": True,
        "modalities": ["l", "a"],
        "mean_frames": {"l": 3, "a": 4},
        "max_frames": 7,
        "signal_share": {"l": 0.5, "a": 0.5},
    },
)


def quick_config(**extra):
    """A whole ``corekd run`` in about a second: tiny corpus, one seed, one student, one epoch."""
    cfg = {
        "name": "quick",
        "seeds": [0],
        "device": "cpu",
        "data": {"source": "synthetic", "synth": dict(TINY_SYNTH)},
        "model": {"hidden": 16, "heads": 2},
        "training": {"epochs": 1, "patience": 1, "batch_size": 4},
        # No figures unless a test asks (drawing them is most of a tiny run's time; test_analyses.py draws them).
        "evaluation": {"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False},
        "methods": [{"name": "no_kd"}],
    }
    cfg.update(copy.deepcopy(extra))
    return cfg


def corpus_dims(corpus):
    """Each modality's feature size, from a corpus: the ``dims`` a model is built with."""
    return {m: s.dim for m, s in corpus.modalities.items()}


def split_dims(splits):
    """Each modality's feature size, from the train split's tensors (``[B, U, D]`` or ``[B, U, F, D]``)."""
    return {m: int(x.shape[-1]) for m, x in splits["train"].features.items()}


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
        teacher = TeacherReference(
            init_model(model_cfg, dims, num_classes, seed, "teacher"),
            train,
            cache=True,
            batch_size=8,
            device=torch.device("cpu"),
        )
    trainer = Trainer(
        method,
        init_model(model_cfg, dims, num_classes, seed, "student", build=method.build_model),
        TrainingConfig(lr=lr, weight_decay=0.0),
        seed=seed,
        device=torch.device("cpu"),
        teacher=teacher,
    )
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
    return Batch(
        features={k: torch.zeros(b, u, 1) for k in mods},
        mask=mask & avail,
        avail=avail,
        speakers=torch.zeros(b, u, dtype=torch.long),
        labels=labels.clone(),
        utt_mask=utt.clone(),
        modalities=mods,
        index=torch.arange(b),
    )


# ------------------------------------------------------------------ made-up input files
MANIFEST_COLUMNS = [
    "dialogue_id",
    "utterance_id",
    "speaker",
    "label",
    "split",
    "text",
    "audio_path",
    "video_path",
    "sentiment",
]


def write_manifest(path, rows, columns=MANIFEST_COLUMNS):
    """A media manifest (CSV) with these columns; a row's missing fields are empty, other keys left out."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
    return path


def mmsa_pickle(rng, aligned: bool):
    """MMSA's layout: {'train','valid','test'} of dicts of [N, T, D] arrays, ids 'video$_$clip'."""
    data = {}
    videos = {"train": ["vidA", "vidB", "vidC"], "valid": ["vidD"], "test": ["vidE", "vidF"]}
    for split, vids in videos.items():
        ids = []
        for v in vids:
            ids += [f"{v}$_${c}" for c in (10, 2, 1)]  # clips out of order: 10 must come after 2
        n = len(ids)
        t_len, a_len, v_len = (6, 6, 6) if aligned else (5, 8, 7)
        part = {
            "id": np.array(ids, dtype=object),
            "raw_text": [f"clip {i}" for i in range(n)],
            "text": rng.normal(size=(n, t_len, 4)).astype(np.float32),
            "audio": rng.normal(size=(n, a_len, 3)).astype(np.float32),
            "vision": rng.normal(size=(n, v_len, 2)).astype(np.float32),
            "regression_labels": np.round(rng.uniform(-3, 3, n), 1).astype(np.float32),
            "annotations": ["Positive"] * n,
        }
        part["audio"][0, 0, 1] = -np.inf  # COVAREP's log of silence
        if aligned:
            part["text"][1, :2] = 0.0  # zero padding at the front of clip row 1
        else:
            part["audio_lengths"] = np.array([(i % a_len) + 1 for i in range(n)])
            part["vision_lengths"] = np.array([v_len] * (n - 1) + [0])  # last clip: no face found
        data[split] = part
    return data


# ------------------------------------------------------------------ losses of whole methods
def method_loss(method, batch, splits, corpus, targets=None):
    """A method's (loss, terms) on ``batch`` with seeded tiny student and teacher models, and their outputs: the view
    and the models come from fixed streams, so the same call gives the same numbers."""
    import torch

    from corekd.methods.base import StepContext
    from corekd.models.model import ERCModel, ModelConfig
    from corekd.seeding import torch_generator

    dims = corpus_dims(corpus)
    classes = 1 if targets is not None else len(corpus.labels)
    torch.manual_seed(0)
    student = ERCModel(ModelConfig(hidden=16, heads=2), dims, classes)
    teacher = ERCModel(ModelConfig(hidden=16, heads=2), dims, classes)
    view = method.train_view(batch, torch_generator("m"), torch_generator("x"))
    out = method.forward(student, view)
    with torch.no_grad():
        t_out = teacher(batch.complete())
    ctx = StepContext(
        batch=batch,
        view=view,
        output=out,
        teacher=t_out if method.needs_teacher else None,
        model=student,
        generator=torch_generator("x"),
        auxiliary=method.auxiliary(student),
    )
    return method.loss(ctx), out, t_out


# A made-up step for CorrKD's and contrastive_view's losses by hand: two dialogues of two utterances (the second
# has one), one modality, three classes.
C_UTT = [[True, True], [True, False]]  # [B, U]; the second dialogue has one utterance
C_LABELS = [[2, 0], [2, 0]]
C_S_LOGITS = [[[0.0, 0.0, math.log(2.0)], [math.log(2.0), 0.0, 0.0]], [[0.0, math.log(2.0), 0.0], [9.0, 0.0, 0.0]]]
C_T_LOGITS = [[[0.0, 0.0, math.log(2.0)], [0.0, 0.0, math.log(2.0)]], [[0.0, 0.0, math.log(6.0)], [0.0, 0.0, 0.0]]]
C_S_FUSED = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [5.0, -5.0]]]
C_T_FUSED = [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 7.0]]]


def made_up_context(method, auxiliary, label_smoothing=0.0):
    """A step on the made-up two-dialogue batch above (``[2, 2]`` utterances, one modality, 3 classes): student and
    teacher logits ``C_S_LOGITS`` / ``C_T_LOGITS`` and fused states ``C_S_FUSED`` / ``C_T_FUSED``."""
    import torch

    from corekd.methods.base import StepContext, TrainView
    from corekd.models.model import Output
    from corekd.seeding import torch_generator

    utt, labels = torch.tensor(C_UTT), torch.tensor(C_LABELS)
    batch = made_up_batch(utt[..., None].expand(2, 2, 1).clone(), utt[..., None].expand(2, 2, 1).clone(), labels, utt)
    out = Output(logits=torch.tensor(C_S_LOGITS), fused=torch.tensor(C_S_FUSED), states=torch.zeros(2, 2, 1, 2))
    teacher = Output(logits=torch.tensor(C_T_LOGITS), fused=torch.tensor(C_T_FUSED), states=torch.zeros(2, 2, 1, 2))
    return StepContext(
        batch=batch,
        view=TrainView(batch),
        output=out,
        teacher=teacher,
        model=None,
        generator=torch_generator("unused"),
        label_smoothing=label_smoothing,
        auxiliary=auxiliary,
    )
