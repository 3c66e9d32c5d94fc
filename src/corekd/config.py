"""Typed run configuration, loaded from YAML (``configs/*.yaml``) and validated.

Every problem becomes one :class:`~corekd.errors.CorekdError` naming the file and the field
(``training.lr``, ``methods[3].options.temperature``) and what was expected. A run writes the
resolved configuration (every default filled in, method options included) as ``config.yaml``.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import ClassVar, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corekd.data.protocols import FrameScheme, RandomScheme, TrainingMissing, check_burst
from corekd.data.synth import SynthConfig
from corekd.errors import CorekdError, from_validation_error
from corekd.methods import method_class
from corekd.models.model import ModelConfig

SelectMetric = Literal[
    "weighted_f1",
    "macro_f1",
    "accuracy",
    "uar",
    "macro_f1_present",
    "uar_present",
    "mae",
    "corr",
    "acc2",
    "f1_2",
    "acc2_nz",
    "f1_2_nz",
    "acc5",
    "acc7",
]
REGRESSION_SELECT = ("mae", "corr", "acc2", "f1_2", "acc2_nz", "f1_2_nz", "acc5", "acc7")
Task = Literal["classification", "regression"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    source: Literal["synthetic", "corpus", "meld"] = Field(
        "synthetic",
        description="generate the synthetic corpus, read a corpus folder, or import MELD's official "
        "annotation files (transcripts embedded with MiniLM; docs/import-meld.md)",
    )
    path: str | None = Field(
        None,
        description="corpus folder (docs/data-format.md) when source is 'corpus'; with "
        "source 'meld', the folder the imported corpus is written to on first use and read from "
        "afterwards; a relative path is read from the config file's folder",
    )
    meld_root: str | None = Field(
        None,
        description="source 'meld': the folder holding train/dev/test_sent_emo.csv "
        "(relative: from the config file's folder)",
    )
    meld_target: Literal["emotion", "sentiment"] = Field(
        "emotion", description="source 'meld': emotion (7 classes) or sentiment (3 classes)"
    )
    dev: Literal["split", "carve"] = Field(
        "split",
        description="the dev split: the corpus's own ('split'), or, for a corpus without one, 'carve' a "
        "seeded share of the train dialogues (speaker-disjoint where speakers allow)",
    )
    dev_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of train dialogues carved into dev (data.dev: carve)"
    )
    dev_seed: int = Field(0, ge=0, description="seed of the carved dev split (data.dev: carve)")
    synth: SynthConfig = Field(default_factory=SynthConfig)
    standardize: bool = Field(
        True,
        description="z-score every input column with the train split's statistics (observed utterances only); "
        "the statistics are saved in every checkpoint",
    )

    @model_validator(mode="after")
    def _path_given(self) -> DataConfig:
        if self.path and "source" not in self.model_fields_set:
            self.source = "corpus"  # a path alone means: read this corpus (never a silent synthetic run)
        if self.source == "corpus" and not self.path:
            raise ValueError("source 'corpus' needs a path to a corpus folder")
        if self.source == "meld" and not (self.meld_root and self.path):
            raise ValueError(
                "source 'meld' needs meld_root (the folder of MELD's CSVs) and path (the folder the "
                "imported corpus is kept in)"
            )
        if self.source != "meld" and self.meld_root:
            raise ValueError(f"meld_root is only read with source 'meld' (source is '{self.source}')")
        if self.source == "synthetic" and self.path:
            raise ValueError(f"path '{self.path}' is only read with source 'corpus' (source is 'synthetic')")
        return self


class TrainingConfig(_Strict):
    epochs: int = Field(60, ge=1, description="most epochs per model")
    patience: int = Field(8, ge=1, description="stop after this many epochs without a better dev score")
    batch_size: int = Field(16, ge=1, description="dialogues per batch")
    bucket: int = Field(
        8,
        ge=0,
        description="length bucketing of training batches: sort each pool of this many "
        "batches' dialogues by length before cutting it into batches, then shuffle the batches "
        "(less padding for the recurrence to run over); 0 or 1 = plain shuffled batches (8 chosen "
        "on dev, backbone study stage 6)",
    )
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm (0 = off)")
    select_metric: SelectMetric = Field(
        "weighted_f1",
        description="dev metric for model selection and early stopping; classification: weighted_f1, "
        "macro_f1, accuracy, uar (scikit-learn's macro averages), macro_f1_present, uar_present (over the classes "
        "present in the dev truth); regression: mae (lower is better; the default for regression), corr, acc2, f1_2, "
        "acc2_nz, f1_2_nz, acc5, acc7. An epoch whose metric is undefined (e.g. corr on constant predictions) counts "
        "as the worst",
    )
    missing: TrainingMissing = Field(
        default_factory=TrainingMissing, description="students' random-missing training range"
    )
    teacher_cache: bool = Field(True, description="compute the frozen teacher's complete-view outputs once per seed")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy terms")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate: constant, or cosine decay to 0 over `epochs` (per step)"
    )
    ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="decay of an exponential moving average of the weights, updated "
        "every step; when > 0 the average is what is scored on dev, selected and saved (0 = off)",
    )
    select_window: int = Field(
        1,
        ge=1,
        description="select on the trailing mean of this many epochs' dev scores "
        "(1 = the raw dev score); early stopping follows the same curve",
    )
    ensemble: Literal["none", "seeds"] = Field(
        "none",
        description="seeds: train the seeds of each method as one batched model (stacked weights, one forward and "
        "one optimiser step for all; each seed keeps its own batches, masks, draws, early stopping and dev "
        "selection; results within seed noise of separate training, docs/ensemble.md); none: one model at a time",
    )
    select_on: Literal["dev", "test"] = Field(
        "dev",
        description="LEGACY 'test' selects epochs on the test split, as much of the literature does, to show "
        "how much that inflates the numbers; every table of the report then carries a warning banner",
    )


class TeacherConfig(_Strict):
    """Overrides of the model and training settings for the teacher only (null = the shared setting).

    Default: input dropout 0.2 for the teacher (chosen on dev by the backbone study's second stage).
    """

    dropout: float | None = Field(None, ge=0, lt=1)
    input_dropout: float | None = Field(0.2, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    lr: float | None = Field(None, gt=0)
    epochs: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    ema: float | None = Field(None, ge=0, lt=1)

    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("dropout", "input_dropout")


# The quickstart's realistic-missingness conditions (configs/quickstart.yaml). Not the EvaluationConfig defaults:
# those stay empty so that a config without the keys evaluates, and records, exactly what it did before.
QUICKSTART_MISSINGNESS: dict = {
    "imbalanced_rates": [[0.6, 0.15, 0.15], [0.15, 0.6, 0.15], [0.15, 0.15, 0.6]],
    "burst_rates": [0.3, 0.5],
    "burst_length": 4.0,
    "feature_rates": [0.3, 0.5],
}


class EvaluationConfig(_Strict):
    mask_seed: int = Field(0, description="seed of every evaluation mask (shared by all methods and seeds)")
    random_rates: list[float] = Field(default_factory=lambda: [round(0.1 * k, 1) for k in range(8)])
    frame_rates: list[float] = Field(
        default_factory=lambda: [round(0.1 * k, 1) for k in range(1, 8)],
        description="frames:p conditions (intra-modality frame missing), evaluated only when the corpus has sequence "
        "modalities",
    )
    scheme: RandomScheme = Field("calibrated", description="random-missing scheme (see corekd.data.protocols)")
    frame_scheme: FrameScheme = Field(
        "keep_one",
        description="frames:p below 1: keep_one (one frame per sequence always kept) or independent (each frame "
        "dropped with probability p; a sequence may lose every frame and then counts as missing)",
    )
    imbalanced_rates: list[list[float]] = Field(
        default_factory=list,
        description="imbalanced:r1,r2,... conditions: one list of per-modality missing rates (corpus order) each",
    )
    burst_length: float = Field(4.0, ge=1, description="burst:p conditions' mean missing-run length, in utterances")
    burst_rates: list[float] = Field(
        default_factory=list, description="burst:p conditions (missing runs over consecutive utterances)"
    )
    feature_rates: list[float] = Field(
        default_factory=list,
        description="features:p conditions (a share p of each observed vector modality's dimensions zeroed)",
    )
    batch_size: int = Field(32, ge=1, description="dialogues per evaluation batch")
    analyses: bool = Field(
        True, description="mechanism analyses (analyses.json, report section; docs/configuration.md)"
    )
    figures: bool = Field(True, description="with analyses: the t-SNE and score-vs-missing-rate figures")

    @field_validator("random_rates", "frame_rates", "burst_rates", "feature_rates")
    @classmethod
    def _rates(cls, value: list[float], info: ValidationInfo) -> list[float]:
        top_ok = info.field_name == "frame_rates"  # frames:1.0 drops every frame
        for r in value:
            if not (0 <= r <= 1 if top_ok else 0 <= r < 1):
                raise ValueError(f"missing rate {r} is outside [0, 1{']' if top_ok else ')'}")
        rounded = [round(r, 6) for r in value]
        if len(set(rounded)) != len(rounded):
            raise ValueError("missing rates must not repeat")
        if info.field_name == "burst_rates" and "burst_length" in info.data:
            for r in rounded:
                if (problem := check_burst(r, info.data["burst_length"])) is not None:
                    raise ValueError(problem + " (evaluation.burst_length)")
        return rounded

    @field_validator("imbalanced_rates")
    @classmethod
    def _rate_lists(cls, value: list[list[float]]) -> list[list[float]]:
        for i, rates in enumerate(value):
            if not rates:
                raise ValueError(f"[{i}] is empty: expected one missing rate per corpus modality")
            for r in rates:
                if not 0 <= r < 1:
                    raise ValueError(f"[{i}]: missing rate {r} is outside [0, 1)")
        rounded = [[round(r, 6) for r in rates] for rates in value]
        if len({tuple(r) for r in rounded}) != len(rounded):
            raise ValueError("rate lists must not repeat")
        return rounded


class MethodTraining(_Strict):
    """One method's own training settings (``corekd tune`` writes them; null = the shared setting)."""

    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)


class MethodSpec(_Strict):
    name: str = Field(description="a registered method (corekd.methods.registered())")
    variant: str | None = Field(
        None,
        description="display name, to run one method with several option sets (it names a checkpoint folder)",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+=,-]{0,63}$",
    )
    options: dict = Field(default_factory=dict)
    training: MethodTraining | None = Field(
        None, description="this method's own lr / weight_decay (absent = the shared training settings)"
    )
    model: dict | None = Field(
        None,
        description="this method's own model settings, any keys of the `model` section (absent = the shared ones), "
        "e.g. {dropout: 0.3} (corekd tune writes it) or {context: none}",
    )

    @property
    def label(self) -> str:
        return self.variant or self.name

    @field_validator("model")
    @classmethod
    def _model_keys(cls, value: dict | None) -> dict | None:
        unknown = sorted(set(value or {}) - set(ModelConfig.model_fields))
        if unknown:
            raise ValueError(
                f"unknown model setting(s) {', '.join(map(str, unknown))} (expected keys of the model section: "
                f"{', '.join(ModelConfig.model_fields)})"
            )
        return value

    @model_validator(mode="after")
    def _teacher_overrides(self) -> MethodSpec:
        if self.name == "teacher" and (self.training is not None or self.model is not None):
            raise ValueError("the teacher's own settings go in the `teacher` section (lr, weight_decay, dropout)")
        return self

    def overrides(self, section: str) -> dict:
        """This method's own settings of ``section`` ("training" or "model"), the unset ones left out."""
        if section == "model":
            return {k: v for k, v in (self.model or {}).items() if v is not None}
        return {} if self.training is None else {k: v for k, v in self.training.model_dump().items() if v is not None}


class SweepConfig(_Strict):
    """One ordinary run per value of one numeric setting (``corekd.sweep``)."""

    option: str = Field(description="dotted path of a numeric setting, e.g. data.synth.conflict_rate")
    values: list[float] = Field(min_length=1, description="the values, one sub-run each (unique)")

    @field_validator("values")
    @classmethod
    def _unique(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError("sweep values must not repeat")
        return value


class TuneConfig(_Strict):
    """``corekd tune``'s settings (docs/tune.md); read by that command only."""

    trials: int = Field(
        20, ge=1, description="trials per method (the same budget for every method; --trials overrides)"
    )
    seeds: list[int] | None = Field(
        None, min_length=1, description="seeds each trial trains (its dev score: their mean); null = the first seed"
    )
    seed: int = Field(0, ge=0, description="seed of the TPE samplers (each method's derived from it and its label)")
    pruning: bool = Field(True, description="stop unpromising trials early (median rule on the per-epoch dev score)")
    search: dict[str, dict[str, dict | None]] = Field(
        default_factory=dict,
        description="per method label: option -> spec (or null to leave it out), replacing the method's own search "
        "space entry; keys training.lr, training.weight_decay, model.dropout change the shared settings' ranges",
    )


class RunConfig(_Strict):
    name: str = "run"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    task: Task | None = Field(
        None,
        description="classification (labels) or regression (the per-utterance sentiment in [-3, 3]); "
        "null = the corpus's task (data.synth.task for the synthetic corpus)",
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="teacher-only overrides")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    methods: list[MethodSpec] = Field(
        default_factory=lambda: [MethodSpec(name=n) for n in ("teacher", "no_kd", "vanilla_kd", "corekd")], min_length=1
    )
    sweep: SweepConfig | None = Field(
        None, description="run the configuration once per value of one numeric setting (sub-runs OUT/<name>=<value>/)"
    )
    tune: TuneConfig | None = Field(None, description="`corekd tune`'s settings (docs/tune.md)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must not repeat")
        return value

    @model_validator(mode="after")
    def _task_metric(self) -> RunConfig:
        task = self.task or (self.data.synth.task if self.data.source == "synthetic" else None)
        if task is not None:
            self.settle_task(task)
        return self

    def settle_task(self, task: str) -> None:
        """Fix the run's task; regression selects on dev MAE unless ``training.select_metric`` names a regression metric.

        Raises ValueError when ``training.select_metric`` was set to a metric of the other task.
        """
        metric, explicit = self.training.select_metric, "select_metric" in self.training.model_fields_set
        regression_metric = metric in REGRESSION_SELECT
        if task == "regression" and not regression_metric:
            if explicit:
                raise ValueError(
                    f"training.select_metric '{metric}' is a classification metric; the task is regression "
                    f"(expected one of {', '.join(REGRESSION_SELECT)})"
                )
            self.training.select_metric = "mae"
        if task == "classification" and regression_metric:
            raise ValueError(f"training.select_metric '{metric}' is a regression metric; the task is classification")
        if task not in ("classification", "regression"):
            raise ValueError(f"task '{task}': expected classification or regression")
        self.task = cast(Task, task)

    def model_for(self, method_name: str, label: str | None = None) -> ModelConfig:
        """The model settings of a method's model: the shared ones, with the teacher's overrides for the teacher and
        a student's own (``methods[].model``, the spec of ``label``) for a student."""
        if method_name != "teacher":
            own = self._spec_overrides(label, "model")
            return ModelConfig.model_validate({**self.model.model_dump(), **own}) if own else self.model
        changes = {
            k: getattr(self.teacher, k) for k in TeacherConfig.MODEL_FIELDS if getattr(self.teacher, k) is not None
        }
        return self.model.model_copy(update=changes)

    def training_for(self, method_name: str, label: str | None = None) -> TrainingConfig:
        """The training settings of a method: the shared ones, with the teacher's overrides for the teacher and a
        student's own (``methods[].training``, the spec of ``label``) for a student."""
        if method_name != "teacher":
            own = self._spec_overrides(label, "training")
            return self.training.model_copy(update=own) if own else self.training
        changes = {
            k: v for k, v in self.teacher.model_dump().items() if v is not None and k not in TeacherConfig.MODEL_FIELDS
        }
        return self.training.model_copy(update=changes)

    def ensembles(self, method_name: str, label: str | None = None) -> bool:
        """Whether the seeds of this method variant train as one ensemble (``training.ensemble: seeds``)."""
        return self.training_for(method_name, label).ensemble == "seeds"

    def _spec_overrides(self, label: str | None, section: str) -> dict:
        spec = next((s for s in self.methods if s.label == label), None) if label is not None else None
        return spec.overrides(section) if spec is not None else {}

    def method_options(self, spec: MethodSpec) -> BaseModel:
        return method_class(spec.name).Options.model_validate(spec.options)


def validate_config(raw: object, source: str | Path | None = None) -> RunConfig:
    """Validate a configuration mapping; resolve every method's options (defaults filled in)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CorekdError(f"expected a mapping of settings at the top level, got {type(raw).__name__}", path=source)
    if "corpora" in raw:
        raise CorekdError(
            "a comparison grid (it has `corpora`): run it with `corekd compare` (docs/compare.md)",
            path=source,
            field="corpora",
        )
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, source, model=RunConfig) from None
    seen: set[str] = set()
    for i, spec in enumerate(cfg.methods):
        try:
            cls = method_class(spec.name)
        except CorekdError as exc:
            raise CorekdError(exc.detail, path=source, field=f"methods[{i}].name") from None
        try:
            options = cls.Options.model_validate(spec.options)
        except ValidationError as exc:
            raise from_validation_error(exc, source, model=cls.Options, prefix=("methods", i, "options")) from None
        spec.options = options.model_dump(mode="json")
        if spec.model:  # a method's own model settings: valid values of the model section
            try:
                ModelConfig.model_validate({**cfg.model.model_dump(), **spec.model})
            except ValidationError as exc:
                raise from_validation_error(exc, source, model=ModelConfig, prefix=("methods", i, "model")) from None
        problem = cls(options, cfg.training.missing).check_model(cfg.model_for(spec.name, spec.label))
        if problem:
            raise CorekdError(problem[1], path=source, field=f"methods[{i}].options.{problem[0]}")
        if spec.label == "teacher" and spec.name != "teacher":
            raise CorekdError(
                "the name 'teacher' is reserved for the teacher method", path=source, field=f"methods[{i}].variant"
            )
        if spec.label in seen:
            raise CorekdError(
                f"two methods share the name '{spec.label}': give one a distinct 'variant'",
                path=source,
                field=f"methods[{i}]",
            )
        seen.add(spec.label)
    if cfg.sweep is not None:
        check_sweep(cfg, source)
    return cfg


def read_yaml_file(path: str | Path) -> object:
    """A config file's YAML content; :class:`CorekdError` (with the line) when it is missing or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise CorekdError("config file not found", path=path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CorekdError(
            f"not a text (UTF-8) YAML file: undecodable byte at position {exc.start}", path=path
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CorekdError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path=path) from None


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    cfg = validate_config(read_yaml_file(path), path)
    resolve_paths(cfg, path.parent)
    return cfg


def resolve_paths(cfg: RunConfig, folder: Path) -> None:
    """Corpus paths in ``cfg`` made absolute, relative to the config file's ``folder`` (not the shell's)."""
    if cfg.data.path and not Path(cfg.data.path).is_absolute():
        cfg.data.path = str((folder / cfg.data.path).absolute())
    if cfg.data.meld_root and not Path(cfg.data.meld_root).is_absolute():
        cfg.data.meld_root = str((folder / cfg.data.meld_root).absolute())


def dump_config(cfg: RunConfig) -> str:
    data = cfg.model_dump(mode="json")
    if data.get("sweep") is None:
        data.pop("sweep", None)  # runs without a sweep keep the config.yaml of earlier versions (resume compares it)
    if data.get("tune") is None:
        data.pop("tune", None)  # likewise without a tune section
    for spec in data.get("methods") or []:  # and methods without their own training/model settings
        for key in ("training", "model"):
            if spec.get(key) is None:
                spec.pop(key, None)
    return yaml.safe_dump(data, sort_keys=False)


# ------------------------------------------------------------------ sweeps: one run per value of one setting
def _unwrap(annotation: object) -> object:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def option_type(option: str) -> type:
    """The type (int or float) of the numeric setting named by the dotted path ``option``; ValueError otherwise."""
    model: type[BaseModel] = RunConfig
    parts = option.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise ValueError(
                f"'{option}' names no setting: '{part}' is not a field of {where} (fields: {', '.join(fields)})"
            )
        annotation = _unwrap(fields[part].annotation)
        last = i == len(parts) - 1
        if last:
            if annotation in (int, float):
                return annotation
            raise ValueError(
                f"'{option}' is not a numeric setting (it holds {getattr(annotation, '__name__', annotation)})"
            )
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ValueError(f"'{option}' goes inside '{'.'.join(parts[: i + 1])}', which is not a section")
        model = annotation
    raise ValueError(f"'{option}' names no setting")  # pragma: no cover - the loop returns or raises


def value_text(value: float, kind: type) -> str:
    """How a value is written in folder names and tables: ``3`` for an int setting, ``0.1`` for a float one."""
    return str(int(value)) if kind is int else repr(float(value))


def folder_name(option: str, value: float, kind: type) -> str:
    return f"{option.split('.')[-1]}={value_text(value, kind)}"


def sub_config(cfg, value: float, source=None):
    """The ordinary run of one sweep value: ``cfg`` without its sweep, with the option set to ``value``."""
    kind = option_type(cfg.sweep.option)
    if kind is int and float(value) != int(value):
        raise CorekdError(
            f"{cfg.sweep.option} is an integer setting; {value} is not an integer", path=source, field="sweep.values"
        )
    raw = cfg.model_dump(mode="json")
    raw.pop("sweep")
    node = raw
    *sections, last = cfg.sweep.option.split(".")
    for part in sections:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[last] = int(value) if kind is int else float(value)
    return validate_config(raw, source)


def check_sweep(cfg, source=None) -> None:
    """Raise :class:`CorekdError` naming ``sweep.option`` / ``sweep.values[i]`` if the sweep cannot run."""
    try:
        kind = option_type(cfg.sweep.option)
    except ValueError as exc:
        raise CorekdError(str(exc), path=source, field="sweep.option") from None
    for i, value in enumerate(cfg.sweep.values):
        if kind is int and float(value) != int(value):
            raise CorekdError(
                f"{cfg.sweep.option} is an integer setting; {value} is not an integer",
                path=source,
                field=f"sweep.values[{i}]",
            )
        try:
            sub_config(cfg, value, source)
        except CorekdError as exc:
            raise CorekdError(
                f"value {value} gives an invalid run: {exc.detail}" + (f" (at {exc.field})" if exc.field else ""),
                path=source,
                field=f"sweep.values[{i}]",
            ) from None
