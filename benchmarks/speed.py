"""Speed benchmark: training throughput, batch inference, FLOP efficiency and single-dialogue latency.

Run from the repository root::

    python benchmarks/speed.py [--device auto|cpu|cuda] [--out benchmarks/results/speed.json]

Everything is measured on the synthetic IEMOCAP-shaped corpus (``corekd.data.synth.generate()``
with its defaults), the default model (``ModelConfig()``, the quickstart's) and the default
training settings (``TrainingConfig()``), on one device chosen by ``--device``:

- training: ``corekd.training.Trainer.epoch`` (the step ``train_model`` trains with), over the
  train split in shuffled batches, for ``no_kd``, ``corekd`` (default options: the training view and its
  conflict copy in one stacked forward), ``corekd`` with ``nce_mode: inline`` (one view), and the
  baselines (``BASELINE_METHODS``: corrkd, contrastive_view, decoupled, reconstruction, mmin, gcnet; default options,
  each on its own ``Method.build_model``); the teacher is a freshly initialised model, since weights
  do not matter for speed. Epochs of all methods are interleaved so that a slow patch of the
  machine hits all of them; the median epoch is reported, and each baseline as its step time
  relative to ``no_kd`` of the same run.
- batch inference: ``corekd.evaluation.predict.run_model`` (eval mode, inference mode,
  length-sorted batches of 32 dialogues) over the train split, with its FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode`` and compared with dense float32 ``torch.mm``.
- latency: one 50-utterance dialogue, batch of one, complete view.
- ONNX (CPU only): the same dialogue through ``corekd.serving``'s ``ServingModule`` (model + softmax,
  from numpy arrays, as ``corekd predict`` / ``corekd serve`` run it) under PyTorch and under
  onnxruntime (the graph ``corekd export`` writes). ``--part onnx`` runs only this part and writes
  ``benchmarks/results/speed_onnx.json`` unless ``--out`` is given.
- dropout layer (``--part dropout``, to ``benchmarks/results/speed_dropout.json`` unless ``--out`` is
  given): the training loop's epoch for ``no_kd`` and ``corekd`` with the models' dropout layer
  (``corekd.models.dropout.Dropout``) and with ``torch.nn.Dropout`` swapped in at the same places,
  on 1 and 2 threads, interleaved epochs, the median reported.

The figures and the targets (with pass/fail) go to a JSON file; a summary is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from corekd.config import EvaluationConfig, TrainingConfig
from corekd.data.batching import SplitTensors
from corekd.data.synth import SynthConfig, generate
from corekd.device import resolve_device
from corekd.errors import CorekdError
from corekd.evaluation.predict import run_model
from corekd.methods import method_class
from corekd.models.dropout import Dropout
from corekd.models.model import ERCModel, ModelConfig
from corekd.training import TeacherReference, Trainer, init_model

SEED = 0
LATENCY_UTTERANCES = 50
# Issue-14 baselines: training step relative to no_kd, same run, same interleaved epochs (default options).
BASELINE_METHODS: tuple[str, ...] = ("corrkd", "contrastive_view", "decoupled", "reconstruction", "mmin", "gcnet")
BASELINE_RATIO_LIMIT = 3.0  # issue 14: none above 3x no_kd without a written reason
TARGETS = {
    # name: (threshold, comparison); "value <= threshold" / "value >= threshold" / "value < threshold"
    "corekd_over_no_kd_step_ratio": (1.3, "<="),
    "inference_fraction_of_matmul": (0.30, ">="),
    "latency_ms_p50": (10.0, "<"),
    "latency_ms_p95": (10.0, "<"),
}


# ------------------------------------------------------------------ timing helpers
def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings cover it (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the ops FlopCounterMode knows (matmuls, attention, ...) executed by ``fn``."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# ------------------------------------------------------------------ machine
def cpu_model_name() -> str:
    """The CPU's marketing name (``platform.processor()`` is often empty or just the ISA on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name(),
    }


def load_average() -> list[float] | None:
    """1/5/15-minute load average: other work on the machine shows up here (and in the timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------ training
def bench_training(
    train: SplitTensors,
    model_cfg: ModelConfig,
    dims: dict[str, int],
    num_classes: int,
    device: torch.device,
    warmup_epochs: int,
    repeats: int,
) -> dict:
    cfg = TrainingConfig()
    eval_batch = EvaluationConfig().batch_size  # what the pipeline gives TeacherReference

    # The one-off teacher cache: the first (cold) build is reported on its own, then the median of three.
    teacher = init_model(model_cfg, dims, num_classes, SEED, "teacher").to(device)
    first = timed(lambda: TeacherReference(teacher, train, cache=True, batch_size=eval_batch, device=device), device)
    builds = [
        timed(lambda: TeacherReference(teacher, train, cache=True, batch_size=eval_batch, device=device), device)
        for _ in range(3)
    ]
    teacher_ref = TeacherReference(teacher, train, cache=True, batch_size=eval_batch, device=device)

    runs = {}
    # The training loop's own Trainer: the step measured is the step trained. corekd_inline: CoRe-KD with
    # nce_mode: inline (conflicts inside the training view, B rows per forward instead of the default's 2B).
    named = (
        ("no_kd", {}),
        ("corekd", {}),
        ("corekd_inline", {"nce_mode": "inline"}),
        *((n, {}) for n in BASELINE_METHODS),
    )
    for name, options in named:
        cls = method_class(name.removesuffix("_inline"))
        method = cls(cls.Options(**options), cfg.missing)
        student = init_model(model_cfg, dims, num_classes, SEED, "student", build=method.build_model)
        runs[name] = Trainer(
            method, student, cfg, seed=SEED, device=device, teacher=teacher_ref if method.needs_teacher else None
        )

    for _ in range(warmup_epochs):
        for trainer in runs.values():
            trainer.epoch(train)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    steps = math.ceil(len(train) / cfg.batch_size)
    for _ in range(repeats):  # interleaved: a slow spell of the machine hits both methods
        for name, trainer in runs.items():
            seconds[name].append(timed(lambda: trainer.epoch(train), device))  # step loop only, no dev scoring

    utts = train.num_utterances
    med = {name: statistics.median(s) for name, s in seconds.items()}
    paired = [c / n for c, n in zip(seconds["corekd"], seconds["no_kd"])]
    baselines = {}
    for name in BASELINE_METHODS:
        baselines[f"train_step_ms_{name}"] = 1e3 * med[name] / steps
        baselines[f"train_epoch_s_all_{name}"] = [round(s, 4) for s in seconds[name]]
        baselines[f"{name}_over_no_kd_step_ratio"] = med[name] / med["no_kd"]
    return {
        **baselines,
        "train_utt_per_s_no_kd": utts / med["no_kd"],
        "train_utt_per_s_corekd": utts / med["corekd"],
        "train_step_ms_no_kd": 1e3 * med["no_kd"] / steps,
        "train_step_ms_corekd": 1e3 * med["corekd"] / steps,
        "train_epoch_s_no_kd": med["no_kd"],
        "train_epoch_s_corekd": med["corekd"],
        "train_epoch_s_all_no_kd": [round(s, 4) for s in seconds["no_kd"]],
        "train_epoch_s_all_corekd": [round(s, 4) for s in seconds["corekd"]],
        # Same batches per epoch for both methods, so the epoch ratio is the step ratio.
        "corekd_over_no_kd_step_ratio": med["corekd"] / med["no_kd"],
        "corekd_over_no_kd_step_ratio_paired_median": statistics.median(paired),
        "train_step_ms_corekd_inline": 1e3 * med["corekd_inline"] / steps,
        "train_epoch_s_all_corekd_inline": [round(s, 4) for s in seconds["corekd_inline"]],
        "corekd_inline_over_no_kd_step_ratio": med["corekd_inline"] / med["no_kd"],
        "teacher_cache_build_s": statistics.median(builds),
        "teacher_cache_build_s_first": first,
        "train_steps_per_epoch": steps,
        "train_warmup_epochs": warmup_epochs,
        "train_timed_epochs_per_method": repeats,
    }


def with_torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every :class:`corekd.models.dropout.Dropout` replaced, in place, by ``torch.nn.Dropout`` of the same p."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Dropout):
                setattr(parent, name, torch.nn.Dropout(child.p))
    return model


def bench_dropout_layer(
    train: SplitTensors,
    dims: dict[str, int],
    num_classes: int,
    device: torch.device,
    repeats: int,
    threads: tuple[int, ...] = (1, 2),
) -> dict:
    """Median epoch seconds of no_kd and corekd with the models' dropout layer ("ours") and with nn.Dropout ("torch")."""
    cfg = TrainingConfig()
    teacher = init_model(ModelConfig(), dims, num_classes, SEED, "teacher").to(device)
    teacher_ref = TeacherReference(teacher, train, cache=True, batch_size=EvaluationConfig().batch_size, device=device)
    figures: dict = {}
    for n in threads:
        torch.set_num_threads(n)
        runs = {}
        for name in ("no_kd", "corekd"):
            for layer in ("ours", "torch"):
                cls = method_class(name)
                method = cls(cls.Options(), cfg.missing)
                student = init_model(ModelConfig(), dims, num_classes, SEED, "student", build=method.build_model)
                if layer == "torch":
                    with_torch_dropout(student)
                runs[(name, layer)] = Trainer(
                    method,
                    student,
                    cfg,
                    seed=SEED,
                    device=device,
                    teacher=teacher_ref if method.needs_teacher else None,
                )
        for trainer in runs.values():  # warm-up
            trainer.epoch(train)
        seconds: dict = {key: [] for key in runs}
        for _ in range(repeats):
            for key, trainer in runs.items():
                seconds[key].append(timed(lambda: trainer.epoch(train), device))
        for (name, layer), values in seconds.items():
            figures[f"epoch_s_{name}_{layer}_dropout_{n}_threads"] = round(statistics.median(values), 4)
        for name in ("no_kd", "corekd"):
            figures[f"{name}_ours_over_torch_{n}_threads"] = round(
                statistics.median(seconds[(name, "ours")]) / statistics.median(seconds[(name, "torch")]), 3
            )
    return figures


# ------------------------------------------------------------------ inference, FLOPs, matmul
def bench_inference(model: ERCModel, train: SplitTensors, device: torch.device, repeats: int) -> dict:
    batch_size = EvaluationConfig().batch_size
    model.eval()

    def forward_all() -> None:
        with torch.inference_mode():
            run_model(model, train, None, batch_size, device)

    flops = count_flops(forward_all)  # one forward over the same batches the timing uses
    for _ in range(2):
        forward_all()
    seconds = [timed(forward_all, device) for _ in range(repeats)]
    med = statistics.median(seconds)
    utts = train.num_utterances
    return {
        "inference_utt_per_s": utts / med,
        "inference_pass_s": med,
        "inference_pass_s_min": min(seconds),
        "inference_flops_total": flops,
        "inference_flops_per_utt": flops / utts,
        "inference_gflop_per_s": flops / med / 1e9,
        "inference_gflop_per_s_best": flops / min(seconds) / 1e9,
        "inference_batch_size_dialogues": batch_size,
        "inference_timed_passes": repeats,
    }


def bench_matmul(device: torch.device, sizes=(512, 1024, 2048), repeats: int = 5, min_seconds: float = 0.05) -> dict:
    """Dense float32 ``torch.mm`` GFLOP/s per size (best of ``repeats`` timings of enough calls)."""
    per_size = {}
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device)
        b = torch.randn(n, n, generator=gen).to(device)
        for _ in range(3):  # warm-up (thread pool, caches, cuBLAS handles)
            torch.mm(a, b)
        calls = max(1, math.ceil(min_seconds / timed(lambda: torch.mm(a, b), device)))

        def many() -> None:
            for _ in range(calls):
                torch.mm(a, b)

        best = min(timed(many, device) for _ in range(repeats)) / calls
        per_size[str(n)] = 2 * n**3 / best / 1e9
    return {
        "matmul_gflop_per_s": max(per_size.values()),
        "matmul_gflop_per_s_by_size": per_size,
    }


# ------------------------------------------------------------------ latency
def latency_dialogue(num_utterances: int) -> tuple[SplitTensors, str]:
    """A split holding one synthetic dialogue of exactly ``num_utterances`` utterances."""
    cfg = SynthConfig(
        mean_length=num_utterances, length_std=0, min_length=num_utterances, max_length=num_utterances, n_dialogues=3
    )
    corpus = generate(cfg)
    split = SplitTensors.from_dialogues("latency", corpus.dialogues[:1], corpus)
    how = (
        f"corekd.data.synth.generate(SynthConfig(mean_length={num_utterances}, length_std=0, "
        f"min_length={num_utterances}, max_length={num_utterances}, n_dialogues=3)), first dialogue, complete view"
    )
    return split, how


def bench_latency(model: ERCModel, device: torch.device, warmup: int, calls: int) -> dict:
    split, how = latency_dialogue(LATENCY_UTTERANCES)
    assert split.num_utterances == LATENCY_UTTERANCES
    model.eval()
    batch = split.batch([0], device)  # complete view, already on the device: the forward alone is timed
    with torch.inference_mode():
        flops = count_flops(lambda: model(batch))

    def percentiles(fn: Callable[[], object]) -> tuple[float, float]:
        with torch.inference_mode():
            for _ in range(warmup):
                fn()
            ms = np.array([1e3 * timed(fn, device) for _ in range(calls)])
        return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))

    p50, p95 = percentiles(lambda: model(batch))
    # Also with the batch sliced from the split and copied to the device on each call.
    p50_b, p95_b = percentiles(lambda: model(split.batch([0], device)))
    return {
        "latency_ms_p50": p50,
        "latency_ms_p95": p95,
        "latency_ms_p50_with_batch_building": p50_b,
        "latency_ms_p95_with_batch_building": p95_b,
        "latency_flops_per_utt": flops / LATENCY_UTTERANCES,
        "latency_dialogue_utterances": LATENCY_UTTERANCES,
        "latency_dialogue": how,
        "latency_warmup_calls": warmup,
        "latency_timed_calls": calls,
    }


def bench_onnx_latency(model: ERCModel, labels: list[str], warmup: int, calls: int) -> dict:
    """PyTorch vs onnxruntime latency of one 50-utterance dialogue through the serving module (CPU)."""
    import tempfile

    import onnxruntime as ort

    from corekd.serving.bundle import Bundle
    from corekd.serving.onnx_export import OPSET, export_onnx
    from corekd.serving.predictor import ServingModule

    split, how = latency_dialogue(LATENCY_UTTERANCES)
    model = model.to("cpu").eval()
    arrays = {
        "mask": split.avail[:1].numpy(),
        "speakers": split.speakers[:1].numpy(),
        "lengths": split.lengths[:1].numpy(),
        **{m: split.features[m][:1].numpy() for m in model.modalities},
    }
    module = ServingModule(model, "classification").eval()
    bundle = Bundle(
        path=Path("."),
        model=model,
        info={"bundle": {"source": {}}},
        task="classification",
        labels=labels,
        modalities={m: {"dim": d, "kind": "vector"} for m, d in model.dims.items()},
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(bundle, Path(tmp) / "latency.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same thread count as PyTorch
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run_torch():
        with torch.inference_mode():
            return module(*(torch.from_numpy(arrays[n]) for n in names)).numpy()

    def run_onnx():
        return session.run(None, {n: arrays[n] for n in names})[0]

    figures = {}
    for name, fn in (("torch", run_torch), ("onnx", run_onnx)):
        for _ in range(warmup):
            fn()
        ms = np.array([1e3 * timed(fn, torch.device("cpu")) for _ in range(calls)])
        figures[f"serving_latency_ms_p50_{name}"] = float(np.percentile(ms, 50))
        figures[f"serving_latency_ms_p95_{name}"] = float(np.percentile(ms, 95))
    figures["serving_onnx_over_torch_p50"] = (
        figures["serving_latency_ms_p50_onnx"] / figures["serving_latency_ms_p50_torch"]
    )
    figures["serving_onnx_max_abs_diff"] = float(np.abs(run_onnx() - run_torch()).max())
    figures["serving_threads"] = torch.get_num_threads()
    figures["serving_onnx_opset"] = OPSET
    figures["serving_onnx_runtime_version"] = ort.__version__
    figures["serving_latency_dialogue"] = how
    return figures


# ------------------------------------------------------------------ targets, report
def check_targets(figures: dict) -> dict:
    out = {}
    for key, (threshold, op) in TARGETS.items():
        value = figures[key]
        met = {"<=": value <= threshold, ">=": value >= threshold, "<": value < threshold}[op]
        out[key] = {"value": value, "target": f"{op} {threshold}", "met": bool(met)}
    return out


def summary(result: dict) -> str:
    f, s, t = result["figures"], result["sizes"], result["targets"]
    mark = lambda key: "PASS" if t[key]["met"] else "FAIL"  # noqa: E731
    return "\n".join(
        [
            f"device {result['machine']['device']} ({result['machine']['device_name']}), "
            f"{result['machine']['torch_num_threads']} threads, torch {result['machine']['torch_version']}",
            f"sizes: train {s['train_dialogues']} dialogues / {s['train_utterances']} utterances, "
            f"batch {s['train_batch_size_dialogues']} dialogues, hidden {s['hidden']}",
            f"training   no_kd  {f['train_utt_per_s_no_kd']:9.0f} utt/s  ({f['train_step_ms_no_kd']:.1f} ms/step)",
            f"training   corekd {f['train_utt_per_s_corekd']:9.0f} utt/s  ({f['train_step_ms_corekd']:.1f} ms/step)",
            f"           corekd/no_kd step ratio {f['corekd_over_no_kd_step_ratio']:.3f} (target <= 1.3: "
            f"{mark('corekd_over_no_kd_step_ratio')}); teacher cache build {f['teacher_cache_build_s']:.3f} s",
            f"           nce_mode inline: {f['train_step_ms_corekd_inline']:.1f} ms/step, ratio "
            f"{f['corekd_inline_over_no_kd_step_ratio']:.3f}",
            *(
                f"baseline   {name}: {f[f'train_step_ms_{name}']:.1f} ms/step, ratio to no_kd "
                f"{f[f'{name}_over_no_kd_step_ratio']:.3f} (limit {BASELINE_RATIO_LIMIT:g}x)"
                for name in BASELINE_METHODS
            ),
            f"inference  {f['inference_utt_per_s']:9.0f} utt/s, {f['inference_flops_per_utt'] / 1e6:.2f} MFLOP/utt "
            f"({f['latency_flops_per_utt'] / 1e6:.2f} for one {s['latency_dialogue_utterances']}-utt dialogue)",
            f"           {f['inference_gflop_per_s']:.1f} GFLOP/s vs matmul {f['matmul_gflop_per_s']:.1f} GFLOP/s = "
            f"{f['inference_fraction_of_matmul']:.3f} (target >= 0.30: {mark('inference_fraction_of_matmul')})",
            f"latency    p50 {f['latency_ms_p50']:.2f} ms, p95 {f['latency_ms_p95']:.2f} ms "
            f"(target < 10 ms: p50 {mark('latency_ms_p50')}, p95 {mark('latency_ms_p95')})",
        ]
    )


PART_OUT = {
    "onnx": Path("benchmarks/results/speed_onnx.json"),
    "dropout": Path("benchmarks/results/speed_dropout.json"),
}


def write_part(out: Path, figures: dict, device: torch.device, load_start: list[float] | None, note: str) -> None:
    """One part's JSON (``--part onnx`` / ``dropout``): the command, date, machine with load averages, figures, a note."""
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(device), "load_average_start": load_start, "load_average_end": load_average()},
        "figures": figures,
        "notes": [note],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default="benchmarks/results/speed.json", type=Path)
    parser.add_argument(
        "--repeats", default=9, type=int, help="timed training epochs per method (after 2 warm-up epochs)"
    )
    parser.add_argument(
        "--part",
        default="all",
        choices=["all", "onnx", "dropout"],
        help="onnx: only the PyTorch vs onnxruntime latency (CPU), to benchmarks/results/speed_onnx.json; "
        "dropout: the models' dropout layer against nn.Dropout, to benchmarks/results/speed_dropout.json",
    )
    args = parser.parse_args(argv)
    # A part's own file unless --out is given.
    part_out = args.out if "--out" in (argv if argv is not None else sys.argv) else PART_OUT.get(args.part, args.out)
    if args.part == "onnx":
        corpus = generate()
        dims = {m: spec.dim for m, spec in corpus.modalities.items()}
        model = init_model(ModelConfig(), dims, len(corpus.labels), SEED, "student")
        load_start = load_average()
        figures = bench_onnx_latency(model, corpus.labels, warmup=30, calls=300)
        write_part(
            part_out,
            figures,
            torch.device("cpu"),
            load_start,
            "One 50-utterance dialogue, batch of one, complete view, freshly initialised ModelConfig(); "
            "both runtimes take the same numpy arrays and return probabilities; CPU.",
        )
        print(json.dumps({k: v for k, v in figures.items() if k != "serving_latency_dialogue"}, indent=1))
        return 0

    try:
        device = resolve_device(args.device)
    except CorekdError as exc:  # e.g. --device cuda on a machine without CUDA
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.part == "dropout":
        torch.manual_seed(SEED)
        corpus = generate()
        train = SplitTensors.from_corpus(corpus, "train")
        dims = {m: spec.dim for m, spec in corpus.modalities.items()}
        load_start = load_average()
        figures = bench_dropout_layer(train, dims, len(corpus.labels), device, repeats=6)
        write_part(
            part_out,
            figures,
            device,
            load_start,
            "Training-loop epochs (no dev scoring) of freshly initialised ModelConfig() students on the "
            "synthetic corpus; 'torch': every corekd Dropout replaced by torch.nn.Dropout of the same p; "
            "one warm-up epoch, then 6 interleaved epochs per variant, median.",
        )
        print(json.dumps(figures, indent=1))
        return 0
    started = time.perf_counter()
    load_start = load_average()
    torch.manual_seed(SEED)  # dropout in training draws from the global generator

    corpus = generate()
    train = SplitTensors.from_corpus(corpus, "train")
    dims = {m: spec.dim for m, spec in corpus.modalities.items()}
    num_classes = len(corpus.labels)
    model_cfg = ModelConfig()

    figures: dict = {}
    print("training ...", flush=True)
    figures.update(bench_training(train, model_cfg, dims, num_classes, device, warmup_epochs=2, repeats=args.repeats))
    print("inference ...", flush=True)
    model = init_model(model_cfg, dims, num_classes, SEED, "student").to(device)
    figures.update(bench_inference(model, train, device, repeats=20))
    print("matmul ...", flush=True)
    figures.update(bench_matmul(device))
    figures["inference_fraction_of_matmul"] = figures["inference_gflop_per_s"] / figures["matmul_gflop_per_s"]
    print("latency ...", flush=True)
    figures.update(bench_latency(model, device, warmup=30, calls=300))
    print("onnx latency ...", flush=True)
    figures.update(bench_onnx_latency(model, corpus.labels, warmup=30, calls=300))

    result = {
        "command": shlex.join(["python", *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(device), "load_average_start": load_start, "load_average_end": load_average()},
        "sizes": {
            "train_dialogues": len(train),
            "train_utterances": train.num_utterances,
            "train_padded_slots": int(train.utt_mask.numel()),
            "train_batch_size_dialogues": TrainingConfig().batch_size,
            "inference_batch_size_dialogues": EvaluationConfig().batch_size,
            "latency_dialogue_utterances": LATENCY_UTTERANCES,
            "hidden": model_cfg.hidden,
            "context_layers": model_cfg.context_layers,
            "heads": model_cfg.heads,
            "modality_dims": dims,
            "num_classes": num_classes,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "figures": figures,
        "targets": check_targets(figures),
        "notes": [
            "Throughputs count real utterances (padding excluded); step ratio = median corekd epoch / median no_kd epoch "
            "(same batches per epoch); epochs of the two methods are interleaved.",
            "corekd uses its default options; its teacher is freshly initialised and its outputs cached once "
            "(TeacherReference(cache=True)); teacher_cache_build_s is the median of 3 builds after one warm-up build.",
            "FLOPs are what torch.utils.flop_counter.FlopCounterMode counts (matmuls and attention; elementwise ops, "
            "LayerNorm and softmax are not counted) for one run_model pass, padding included, divided by real utterances.",
            "inference_fraction_of_matmul = inference GFLOP/s (median pass) / best dense float32 torch.mm GFLOP/s "
            "over sizes 512, 1024, 2048, same device and thread count.",
            "Latency times the forward alone on a batch already on the device; *_with_batch_building adds "
            "slicing the split and the copy to the device.",
            "Other processes on the machine inflate the timings: compare load_average_start/end with cpu_count.",
        ],
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
