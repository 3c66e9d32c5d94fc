"""Study configs (``configs/*_study.yaml``): a base run fragment, candidates merged into it, corpora.

A study file is not a run config: it expands into one :class:`~corekd.config.RunConfig` per
(corpus, candidate). ``benchmarks/backbone_study.py`` runs them; :func:`expand_study` validates
every one (errors name the study file).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from corekd.config import RunConfig, validate_config
from corekd.data.protocols import Condition
from corekd.errors import CorekdError

STUDY_KEYS = {"seeds", "threads", "methods", "method_options", "corpora", "base", "candidates", "criterion"}


def is_study(raw: object) -> bool:
    return isinstance(raw, dict) and "candidates" in raw


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: nested mappings merge, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def candidate_methods(study: dict, candidate: str) -> list[str]:
    return (study["candidates"][candidate] or {}).get("methods", study["methods"])


def candidate_config(study: dict, corpus: str, candidate: str) -> dict:
    """The raw run config of one (corpus, candidate): the base (unless ``replace_base``) + the candidate's overrides;
    a candidate's ``methods`` replaces the study's list; ``method_options`` (method name -> options), the study's
    merged with the candidate's, sets the methods' options."""
    over = dict(study["candidates"][candidate] or {})
    replace = over.pop("replace_base", False)
    over.pop("students_from", None)
    methods = over.pop("methods", study["methods"])
    options = merge(study.get("method_options") or {}, over.pop("method_options", {}))  # method name -> options
    cfg = merge({} if replace else study["base"], over)
    return merge(cfg, {
        "name": f"study-{corpus}-{candidate}", "seeds": study["seeds"], "device": "cpu", "threads": study["threads"],
        "data": {"source": "synthetic", "synth": study["corpora"][corpus] or {}},
        "methods": [{"name": m, **({"options": options[m]} if m in options else {})} for m in methods],
    })


def expand_study(path: str | Path) -> dict[tuple[str, str], RunConfig]:
    path = Path(path)
    study = yaml.safe_load(path.read_text())
    if not is_study(study):
        raise CorekdError("not a study config (expected a 'candidates' mapping)", path=path)
    unknown = set(study) - STUDY_KEYS
    if unknown:
        raise CorekdError(f"unknown study keys {sorted(unknown)}; expected {sorted(STUDY_KEYS)}", path=path)
    for item in study.get("criterion", []):
        method, _, cond = str(item).partition(" ")
        if method not in study["methods"] or not cond:
            raise CorekdError(f"criterion item '{item}': expected '<method> <condition>' with a method of {study['methods']}",
                              path=path, field="criterion")
        if cond != "fixed:avg":
            try:
                Condition.parse(cond)
            except CorekdError as err:
                raise CorekdError(f"criterion item '{item}': {err.detail}", path=path, field="criterion") from None
    return {
        (corpus, cand): validate_config(candidate_config(study, corpus, cand), path)
        for corpus in study["corpora"] for cand in study["candidates"]
    }
