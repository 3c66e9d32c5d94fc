"""A comparison grid's configuration: a ``corekd run`` config, plus the corpora it runs on.

The YAML is a run config (every setting as in ``configs/*.yaml``: model, training, evaluation,
methods with their variants, seeds) with two more keys:

- ``corpora``: corpus key -> changes to the ``data`` section for that corpus (merged into it, so a
  second synthetic corpus only names what differs, e.g. ``{synth: {frames: {...}}}``). Absent: the
  one corpus of ``data``, keyed by ``data.source``.
- ``reference``: the variant every other is compared with in the report (default ``corekd``; null
  for none).

Every corpus's run config is validated like a ``corekd run`` config, with errors naming the
corpus (``corpora.<key>.<field>``).
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
from corekd.errors import CorekdError

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
        return {**base, "corpora": {k: yaml.safe_load(dump_config(c))["data"] for k, c in self.corpora.items()},
                "reference": self.reference}

    def dump(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)


def _merge(base: dict, change: dict) -> dict:
    """``base`` with ``change`` merged in (nested mappings merged key by key; anything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate_grid(raw: object, source: str | Path | None = None) -> GridConfig:
    """Validate a grid mapping (see the module doc); raise :class:`CorekdError` naming the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CorekdError(f"expected a mapping of settings at the top level, got {type(raw).__name__}", path=source)
    if raw.get("sweep") is not None:
        raise CorekdError("a comparison grid has no sweep (its axes are corpora, methods and seeds); run a sweep with "
                          "`corekd run`", path=source, field="sweep")
    shared = {k: v for k, v in raw.items() if k not in GRID_KEYS}
    base = validate_config(shared, source)
    corpora_raw = raw.get("corpora") or {}
    if not isinstance(corpora_raw, dict):
        raise CorekdError("expected a mapping of corpus key -> changes to the data section", path=source, field="corpora")
    if not corpora_raw:
        corpora_raw = {base.data.source: {}}
    corpora = {}
    for key, change in corpora_raw.items():
        key = str(key)
        if not re.fullmatch(KEY_PATTERN, key):
            raise CorekdError("a corpus key names folders: letters, digits and . _ + = , - (at most 64, not starting "
                              "with a symbol)", path=source, field=f"corpora.{key}")
        if change is None:
            change = {}
        if not isinstance(change, dict):
            raise CorekdError("expected a mapping of data settings (merged into the data section), e.g. {synth: {seed: 1}}",
                              path=source, field=f"corpora.{key}")
        try:
            corpora[key] = validate_config({**shared, "data": _merge(shared.get("data") or {}, change)}, source)
        except CorekdError as exc:
            field = exc.field or ""
            where = f"corpora.{key}" + (f".{field.removeprefix('data.')}" if field.startswith("data.") else
                                        f" ({field})" if field else "")
            raise CorekdError(exc.detail, path=source, field=where) from None
    labels = [s.label for s in base.methods]
    # Default: CoRe-KD's own variant when the grid has one.
    reference = raw["reference"] if "reference" in raw else ("corekd" if "corekd" in labels else None)
    if reference is not None and reference not in labels:
        raise CorekdError(f"the reference variant '{reference}' is not among the methods ({', '.join(labels)}); "
                          "name one of them, or null for no comparison", path=source, field="reference")
    return GridConfig(base=base, corpora=corpora, reference=reference)


def load_grid(path: str | Path) -> GridConfig:
    path = Path(path)
    grid = validate_grid(read_yaml_file(path), path)
    for cfg in (grid.base, *grid.corpora.values()):
        resolve_paths(cfg, path.parent)
    return grid
