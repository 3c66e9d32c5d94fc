"""``corekd run``: teacher -> students -> evaluation on every protocol condition -> report.

Per seed the teacher is trained once, frozen and shared by every student of that seed. Each
model is selected on the dev split; the test split is used once per model, after its training,
under masks that depend only on ``evaluation.mask_seed`` and the condition: identical for
every method and seed.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from corekd.config import MethodSpec, RunConfig, dump_config, load_config
from corekd.data.batching import SplitTensors
from corekd.data.corpus import Corpus, atomic_write, load_corpus
from corekd.data.protocols import missing_rate, split_condition_mask, standard_conditions
from corekd.data.standardize import train_statistics
from corekd.data.synth import generate
from corekd.errors import CorekdError
from corekd.evaluation.metrics import classification_metrics
from corekd.evaluation.predict import predict
from corekd.evaluation.report import write_report
from corekd.methods import method_class
from corekd.models.model import ERCModel
from corekd.progress import Reporter
from corekd.training import TeacherReference, init_model, save_checkpoint, train_model

DEFAULT_CONFIG = Path("configs/quickstart.yaml")


@dataclass
class RunResult:
    out_dir: Path
    records: list[dict]
    trainings: list[dict]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CorekdError(f"device '{name}' requested, but CUDA is not available here (use --device cpu or auto)")
    return device


def load_data(cfg: RunConfig) -> Corpus:
    corpus = generate(cfg.data.synth) if cfg.data.source == "synthetic" else load_corpus(cfg.data.path)
    for split in ("train", "dev", "test"):
        if not corpus.split(split):
            raise CorekdError(f"corpus '{corpus.name}' has no dialogues in split '{split}' (train, dev and test are needed)")
    return corpus


def evaluate_model(
    model: ERCModel, test: SplitTensors, masks: dict[str, torch.Tensor], labels: list[str],
    batch_size: int, device: torch.device,
) -> list[dict]:
    """One record per condition: metrics on the test split under that condition's mask."""
    rows = []
    for name, mask in masks.items():
        preds = predict(model, test, mask, batch_size, device)
        rows.append({
            "condition": name,
            **classification_metrics(preds.y_true, preds.y_pred, labels),
            "missing_rate": round(missing_rate(mask[test.utt_mask], test.avail[test.utt_mask]), 4),
            "n_utterances": int(len(preds.y_true)),
        })
    return rows


def evaluation_masks(
    conditions, split: SplitTensors, modalities: tuple[str, ...], mask_seed: int, scheme: str
) -> dict[str, torch.Tensor]:
    """Condition name -> mask on ``split`` (named ``split.name``): a function of (mask_seed, split, condition)."""
    return {c.name: split_condition_mask(c, split.avail, modalities, mask_seed, split.name, scheme) for c in conditions}


def run(
    config: RunConfig | str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
) -> RunResult:
    """Train and evaluate every configured method for every seed; write config, results, report, checkpoints."""
    config_path = None
    if config is None and not DEFAULT_CONFIG.is_file():
        config = RunConfig(name="quickstart")  # the built-in defaults are the quickstart
    elif config is None or isinstance(config, (str, Path)):
        config_path = Path(config) if config is not None else DEFAULT_CONFIG
        config = load_config(config_path)
    overrides = {k: v for k, v in {"seeds": seeds, "device": device}.items() if v is not None}
    if overrides:
        config = RunConfig.model_validate({**config.model_dump(), **overrides})
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    out.mkdir(parents=True, exist_ok=True)
    reporter = reporter or Reporter()
    command = command or f"corekd run {config_path or '<config>'} --out {out}"
    dev = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    atomic_write(out / "config.yaml", lambda p: Path(p).write_text(dump_config(config)))

    corpus = load_data(config)
    labels = corpus.labels
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    train, dev_split, test = (SplitTensors.from_corpus(corpus, s) for s in ("train", "dev", "test"))
    ev = config.evaluation
    conditions = standard_conditions(corpus.modality_names, ev.random_rates)
    test_masks = evaluation_masks(conditions, test, corpus.modality_names, ev.mask_seed, ev.scheme)
    dev_masks = evaluation_masks(conditions, dev_split, corpus.modality_names, ev.mask_seed, ev.scheme)
    input_stats = train_statistics(train) if config.data.standardize else None

    methods = {s.label: method_class(s.name)(config.method_options(s), config.training.missing) for s in config.methods}
    teachers = [s for s in config.methods if s.name == "teacher"]
    students = [s for s in config.methods if s.name != "teacher"]
    reported = {s.label for s in config.methods}
    if not teachers and any(m.needs_teacher for m in methods.values()):
        teachers = [MethodSpec(name="teacher")]  # trained for the students, not reported
        methods["teacher"] = method_class("teacher")(config.method_options(teachers[0]), config.training.missing)
    order = teachers[:1] + students  # the teacher first: its students need it
    meta = {
        "corpus": corpus.name,
        "labels": labels,
        "modalities": list(corpus.modality_names),
        "splits": {s: {"dialogues": len(x), "utterances": x.num_utterances} for s, x in
                   (("train", train), ("dev", dev_split), ("test", test))},
        "seeds": config.seeds,
        "mask_seed": ev.mask_seed,
        "random_scheme": ev.scheme,
        "selection": f"dev split, {config.training.select_metric}; test used once per model after training",
        "standardize": "train-split statistics" if input_stats is not None else None,
        "device": str(dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": command,
    }
    records: list[dict] = []
    trainings: list[dict] = []

    def save_results() -> None:
        payload = {"meta": meta, "records": records, "trainings": trainings}
        atomic_write(out / "results.json", lambda p: Path(p).write_text(json.dumps(payload, indent=1)))

    started = time.perf_counter()
    with reporter:
        reporter.plan(len(order) * len(config.seeds))
        for seed in config.seeds:
            teacher_ref = None
            for spec in order:
                label, method = spec.label, methods[spec.label]
                model_cfg, train_cfg = config.model_for(method.name), config.training_for(method.name)
                model = init_model(model_cfg, dims, len(labels), seed, "teacher" if method.name == "teacher" else "student")
                if input_stats is not None:
                    model.set_input_statistics(input_stats)
                reporter.start_model(f"{label} seed {seed}", train_cfg.epochs)
                result = train_model(
                    method, model, train, dev_split, train_cfg, seed=seed, label_names=labels, device=dev,
                    teacher=teacher_ref if method.needs_teacher else None, eval_batch_size=ev.batch_size,
                    on_epoch=reporter.epoch,
                )
                save_checkpoint(result.model, out / "checkpoints" / label / f"seed{seed}", {
                    "method": method.name, "variant": label, "options": method.options.model_dump(mode="json"),
                    "seed": seed, "best_epoch": result.best_epoch, "selected_epoch": result.selected_epoch, "labels": labels,
                    "input_statistics": "train split" if input_stats is not None else "identity",
                    "modalities": list(corpus.modality_names), "corpus": corpus.name,
                    f"dev_{config.training.select_metric}": result.best_score,
                })
                trainings.append({
                    "method": method.name, "variant": label, "seed": seed, "best_epoch": result.best_epoch,
                    "selected_epoch": result.selected_epoch,
                    "epochs_run": result.epochs_run, f"dev_{config.training.select_metric}": round(result.best_score, 6),
                    "seconds": round(result.seconds, 2), "history": result.history,
                })
                if method.name == "teacher":
                    teacher_ref = TeacherReference(
                        result.model, train, cache=config.training.teacher_cache, batch_size=ev.batch_size, device=dev
                    )
                if label in reported:  # dev under the same conditions; the test split, once, after this model's training
                    for split_name, split, masks in (("dev", dev_split, dev_masks), ("test", test, test_masks)):
                        for row in evaluate_model(result.model, split, masks, labels, ev.batch_size, dev):
                            records.append({"method": method.name, "variant": label, "seed": seed, "split": split_name, **row})
                save_results()
                reporter.end_model(
                    f"{label} seed {seed}: epoch {result.selected_epoch}/{result.epochs_run} selected, "
                    f"dev {config.training.select_metric} {result.best_score:.4f}, {result.seconds:.1f} s"
                )
    meta["seconds"] = round(time.perf_counter() - started, 1)
    save_results()
    write_report(out, meta, records, trainings)
    reporter.message(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'config.yaml'}, {out / 'checkpoints'}")
    return RunResult(out, records, trainings)
