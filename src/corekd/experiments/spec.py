"""What an experiment is: a base run config plus axes, expanded into the configs the engine runs.

- a **run** (``corekd run``): one corpus, its methods and seeds;
- a **sweep** (a run config's ``sweep`` section): one run per value of one numeric setting
  (:func:`corekd.config.sub_config`);
- a **grid** (``corekd compare``, :class:`GridConfig`): a run config plus ``corpora`` (corpus key -> changes to the
  ``data`` section, merged into it, so a second synthetic corpus only names what differs) and ``reference`` (the
  variant every other is compared with in the report; default ``corekd``, null for none);
- a **study** (``configs/backbone_study*.yaml``, :func:`expand_study`): a base fragment, candidates merged into it,
  corpora; one run config per (corpus, candidate).

Every expansion merges with the one :func:`merge`; every expanded config is validated like a ``corekd run`` config,
with errors naming where it came from (``corpora.<key>.<field>``, the study file).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from corekd.config import (
    RunConfig,
    dump_config,
    read_yaml_file,
    resolve_paths,
    validate_config,
)
from corekd.data.protocols import Condition
from corekd.errors import CorekdError


def merge(base: dict, change: dict) -> dict:
    """A copy of ``base`` with ``change`` merged in: nested mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------ grids
GRID_KEYS = ("corpora", "reference")
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+=,-]{0,63}$"


class GridConfig(BaseModel):
    """The shared run settings, and one resolved run config per corpus key (config order)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    base: RunConfig
    corpora: dict[str, RunConfig]
    reference: str | None = None

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def seeds(self) -> list[int]:
        return self.base.seeds

    def resolved(self) -> dict:
        """The resolved grid as written to ``config.yaml`` (and compared when a grid is started again)."""
        base = yaml.safe_load(dump_config(self.base))
        return {
            **base,
            "corpora": {k: yaml.safe_load(dump_config(c))["data"] for k, c in self.corpora.items()},
            "reference": self.reference,
        }

    def dump(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)


def validate_grid(raw: object, source: str | Path | None = None) -> GridConfig:
    """Validate a grid mapping (see the module doc); raise :class:`CorekdError` naming the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CorekdError(f"expected a mapping of settings at the top level, got {type(raw).__name__}", path=source)
    if raw.get("sweep") is not None:
        raise CorekdError(
            "a comparison grid has no sweep (its axes are corpora, methods and seeds); run a sweep with `corekd run`",
            path=source,
            field="sweep",
        )
    shared = {k: v for k, v in raw.items() if k not in GRID_KEYS}
    base = validate_config(shared, source)
    corpora_raw = raw.get("corpora") or {}
    if not isinstance(corpora_raw, dict):
        raise CorekdError(
            "expected a mapping of corpus key -> changes to the data section", path=source, field="corpora"
        )
    if not corpora_raw:
        corpora_raw = {base.data.source: {}}
    corpora = {}
    for key, change in corpora_raw.items():
        key = str(key)
        if not re.fullmatch(KEY_PATTERN, key):
            raise CorekdError(
                "a corpus key names folders: letters, digits and . _ + = , - (at most 64, not starting with a symbol)",
                path=source,
                field=f"corpora.{key}",
            )
        if change is None:
            change = {}
        if not isinstance(change, dict):
            raise CorekdError(
                "expected a mapping of data settings (merged into the data section), e.g. {synth: {seed: 1}}",
                path=source,
                field=f"corpora.{key}",
            )
        try:
            corpora[key] = validate_config({**shared, "data": merge(shared.get("data") or {}, change)}, source)
        except CorekdError as exc:
            field = exc.field or ""
            where = f"corpora.{key}" + (
                f".{field.removeprefix('data.')}" if field.startswith("data.") else f" ({field})" if field else ""
            )
            raise CorekdError(exc.detail, path=source, field=where) from None
    labels = [s.label for s in base.methods]
    # Default: CoRe-KD's own variant when the grid has one.
    reference = raw["reference"] if "reference" in raw else ("corekd" if "corekd" in labels else None)
    if reference is not None and reference not in labels:
        raise CorekdError(
            f"the reference variant '{reference}' is not among the methods ({', '.join(labels)}); "
            "name one of them, or null for no comparison",
            path=source,
            field="reference",
        )
    return GridConfig(base=base, corpora=corpora, reference=reference)


def load_grid(path: str | Path) -> GridConfig:
    path = Path(path)
    grid = validate_grid(read_yaml_file(path), path)
    for cfg in (grid.base, *grid.corpora.values()):
        resolve_paths(cfg, path.parent)
    return grid


# ------------------------------------------------------------------ studies
STUDY_KEYS = {"seeds", "threads", "methods", "method_options", "corpora", "base", "candidates", "criterion"}


def is_study(raw: object) -> bool:
    return isinstance(raw, dict) and "candidates" in raw


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
    return merge(
        cfg,
        {
            "name": f"study-{corpus}-{candidate}",
            "seeds": study["seeds"],
            "device": "cpu",
            "threads": study["threads"],
            "data": {"source": "synthetic", "synth": study["corpora"][corpus] or {}},
            "methods": [{"name": m, **({"options": options[m]} if m in options else {})} for m in methods],
        },
    )


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
            raise CorekdError(
                f"criterion item '{item}': expected '<method> <condition>' with a method of {study['methods']}",
                path=path,
                field="criterion",
            )
        if cond != "fixed:avg":
            try:
                Condition.parse(cond)
            except CorekdError as err:
                raise CorekdError(f"criterion item '{item}': {err.detail}", path=path, field="criterion") from None
    return {
        (corpus, cand): validate_config(candidate_config(study, corpus, cand), path)
        for corpus in study["corpora"]
        for cand in study["candidates"]
    }
