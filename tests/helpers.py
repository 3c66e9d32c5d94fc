"""Small helpers shared by test modules (fixtures live in conftest.py)."""

import copy
import json

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
        "evaluation": {"batch_size": 8, "random_rates": [0.0, 0.5]},
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
