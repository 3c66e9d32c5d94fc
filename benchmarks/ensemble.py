"""Ensembles against separate training: speed ratios, where the time goes, and equivalence of the results.

    python benchmarks/ensemble.py [--part all|speed|profile|grid|quickstart|equivalence] [--runs runs/ensemble-bench]
                                  [--device cpu|cuda] [--out benchmarks/results/ensemble.json]

Parts (each keeps the others' last figures in the JSON):

- ``speed``: the training of the four methods of ``configs/quickstart.yaml`` (teacher, then no_kd, vanilla_kd,
  corekd from it) for one seed and for five seeds, separate (``train_model``, one model after another) and as
  ensembles (``train_ensemble``, one per method), on 1 and on 2 threads; each timing in a fresh subprocess. Training
  only: evaluation is the same work on both routes. The ratio is separate / ensemble (above 1: the ensemble is
  faster).
- ``profile``: torch.profiler's table of one epoch of corekd's five-member ensemble and of the five separate epochs
  (1 thread): where the time goes.
- ``grid``: ``corekd compare configs/paper_grid.yaml`` end to end (2 workers x 1 thread), separate and with
  ``training.ensemble: seeds``, into ``RUNS/grid-separate`` and ``RUNS/grid-ensemble``.
- ``quickstart``: ``corekd run configs/quickstart.yaml`` separate and as ensembles (2 threads), into
  ``RUNS/quickstart-separate`` and ``RUNS/quickstart-ensemble``.
- ``equivalence``: from those folders, the ensemble's test records against the separate ones, paired by (variant,
  seed, condition), per record family (the condition's kind: complete, fixed, random, imbalanced, burst, features):
  the mean paired difference of the headline metric with its 95% interval over seeds, the mean and the largest
  absolute difference, and the seed noise (the separate route's standard deviation over seeds, averaged over
  variants and conditions). Rule, fixed before any run: a family is "within seed noise" when the mean paired
  difference is smaller in size than the seed noise.

Timings taken while other work uses the CPU are inflated: the JSON records the load average around each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ensemble.json"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
GRID = ROOT / "configs" / "paper_grid.yaml"
METHODS = ("teacher", "no_kd", "vanilla_kd", "corekd")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------ speed: training only, in a subprocess
def train_four(route: str, seeds: list[int], threads: int, device: str) -> dict:
    """Train the quickstart's four methods for ``seeds`` on ``route``; wall seconds and each model's dev score."""
    import torch

    from corekd.config import validate_config
    from corekd.device import resolve_device
    from corekd.ensemble import train_ensemble
    from corekd.experiments.setup import prepare_run
    from corekd.training import TeacherReference, init_model, train_model

    torch.set_num_threads(threads)
    config = validate_config(yaml.safe_load(QUICKSTART.read_text()), QUICKSTART)
    dev_ = resolve_device(device)
    setup = prepare_run(config, QUICKSTART, dev_, command="")
    dims = {m: s.dim for m, s in setup.corpus.modalities.items()}

    def model(label: str, seed: int):
        method = setup.methods[label]
        m = init_model(
            config.model_for(method.name, label),
            dims,
            len(setup.labels),
            seed,
            "teacher" if label == "teacher" else "student",
            build=method.build_model,
        )
        m.set_input_statistics(setup.input_stats)
        return m

    started = time.perf_counter()
    teachers: dict[int, TeacherReference] = {}
    scores: dict[str, list[float | None]] = {}
    for label in METHODS:
        method, cfg = setup.methods[label], config.training_for(setup.methods[label].name, label)
        refs = [teachers.get(s) for s in seeds] if method.needs_teacher else None
        common = dict(label_names=setup.labels, device=dev_, eval_batch_size=config.evaluation.batch_size)
        if route == "separate":
            results = [
                train_model(
                    method,
                    model(label, s),
                    setup.train,
                    setup.dev,
                    cfg,
                    seed=s,
                    teacher=refs[i] if refs else None,
                    **common,
                )  # fmt: skip
                for i, s in enumerate(seeds)
            ]
        else:
            results = train_ensemble(
                method, [model(label, s) for s in seeds], setup.train, setup.dev, cfg, seeds=seeds, teachers=refs,
                **common,
            )  # fmt: skip
        scores[label] = [r.best_score for r in results]
        if label == "teacher":
            teachers = {
                s: TeacherReference(r.model.requires_grad_(False), setup.train, cache=True, batch_size=32, device=dev_)
                for s, r in zip(seeds, results)
            }
    if dev_.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": round(time.perf_counter() - started, 2), "dev_weighted_f1": scores}


def speed(device: str) -> dict:
    rows = []
    for threads in (1, 2):
        for seeds in ([0], [0, 1, 2, 3, 4]):
            pair = {}
            for route in ("separate", "ensemble"):
                before, cpu = load_average(), child_cpu()
                command = [
                    sys.executable, str(Path(__file__).resolve()), "--part", "_train", "--route", route,
                    "--threads", str(threads), "--seeds", ",".join(map(str, seeds)), "--device", device,
                ]  # fmt: skip
                print(f"speed: {route}, {len(seeds)} seed(s), {threads} thread(s)", flush=True)
                done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
                pair[route] = {
                    **json.loads(done.stdout.strip().splitlines()[-1]),
                    "cpu_seconds": round(child_cpu() - cpu, 2),
                    "load_average": [before, load_average()],
                }
                print(f"  {pair[route]['seconds']} s", flush=True)
            rows.append(
                {
                    "threads": threads,
                    "seeds": len(seeds),
                    "separate_s": pair["separate"]["seconds"],
                    "ensemble_s": pair["ensemble"]["seconds"],
                    "ratio_separate_over_ensemble": round(pair["separate"]["seconds"] / pair["ensemble"]["seconds"], 2),
                    "separate_cpu_s": pair["separate"]["cpu_seconds"],
                    "ensemble_cpu_s": pair["ensemble"]["cpu_seconds"],
                    "ratio_cpu": round(pair["separate"]["cpu_seconds"] / pair["ensemble"]["cpu_seconds"], 2),
                    "detail": pair,
                }
            )
    return {
        "what": "training of the quickstart's four methods (teacher, then no_kd, vanilla_kd, corekd), 60 epochs at "
        "most, patience 8; evaluation not included (the same work on both routes)",
        "device": device,
        "rows": rows,
        "target": "five seeds on 1 thread: ratio >= 1.5 (aim 3)",
    }


# ------------------------------------------------------------------ profile
def profile() -> dict:
    import torch
    from torch.profiler import profile as torch_profile

    from corekd.config import validate_config
    from corekd.ensemble import train_ensemble
    from corekd.experiments.setup import prepare_run
    from corekd.training import TeacherReference, init_model, train_model

    torch.set_num_threads(1)
    raw = yaml.safe_load(QUICKSTART.read_text())
    config = validate_config(raw, QUICKSTART)
    setup = prepare_run(config, QUICKSTART, torch.device("cpu"), command="")
    dims = {m: s.dim for m, s in setup.corpus.modalities.items()}
    seeds = [0, 1, 2, 3, 4]
    one_epoch = config.training_for("corekd", "corekd").model_copy(update={"epochs": 1})
    teacher_cfg = config.training_for("teacher", "teacher").model_copy(update={"epochs": 3})

    def model(label: str, seed: int):
        m = init_model(
            config.model_for(label, label),
            dims,
            len(setup.labels),
            seed,
            "teacher" if label == "teacher" else "student",
        )
        m.set_input_statistics(setup.input_stats)
        return m

    refs = []
    for s in seeds:  # a short-trained teacher per seed: the profile is of the student's epoch
        t = train_model(setup.methods["teacher"], model("teacher", s), setup.train, setup.dev, teacher_cfg, seed=s,
                        label_names=setup.labels, device=torch.device("cpu"))  # fmt: skip
        refs.append(TeacherReference(t.model, setup.train, cache=True, batch_size=32, device="cpu"))
    method = setup.methods["corekd"]
    tables, seconds = {}, {}
    for route in ("separate", "ensemble"):
        started = time.perf_counter()
        with torch_profile() as prof:
            if route == "separate":
                for s, ref in zip(seeds, refs):
                    train_model(method, model("corekd", s), setup.train, setup.dev, one_epoch, seed=s,
                                label_names=setup.labels, device=torch.device("cpu"), teacher=ref)  # fmt: skip
            else:
                train_ensemble(method, [model("corekd", s) for s in seeds], setup.train, setup.dev, one_epoch,
                               seeds=seeds, label_names=setup.labels, device=torch.device("cpu"), teachers=refs)  # fmt: skip
        seconds[route] = round(time.perf_counter() - started, 2)
        tables[route] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        print(tables[route], flush=True)
    # The padding an ensemble step pays: every member's batch padded to the largest rows x utterances of the step.
    from corekd.seeding import torch_generator

    gens = [torch_generator("shuffle", s) for s in seeds]
    train_cfg = config.training_for("corekd", "corekd")
    slots = padded = 0
    for _ in range(3):  # three epochs' batches
        streams = [
            setup.train.batches(train_cfg.batch_size, shuffle=True, generator=g, bucket=train_cfg.bucket) for g in gens
        ]
        for batches in zip(*streams):
            sizes = [tuple(b.utt_mask.shape) for b in batches]
            slots += sum(b * u for b, u in sizes)
            padded += len(sizes) * max(b for b, _ in sizes) * max(u for _, u in sizes)
    return {
        "padding_factor": round(padded / slots, 3),
        "padding_note": "rows x utterances an ensemble step computes over what the members' own batches hold "
        f"(five seeds, batch {train_cfg.batch_size}, bucket {train_cfg.bucket}; {math.ceil(len(setup.train) / train_cfg.batch_size)} "
        "steps per epoch): the per-utterance layers of an ensemble step do this much more arithmetic",
        "what": "one epoch of corekd, five seeds, 1 thread, dev scoring included: five separate epochs vs one "
        "five-member ensemble epoch (torch.profiler, ops by self CPU time)",
        "seconds_under_profiler": seconds,
        "tables": tables,
    }


# ------------------------------------------------------------------ end to end: grid and quickstart
def config_copy(config: Path, folder: Path, route: str, threads: int | None) -> Path:
    """``config`` with ``training.ensemble`` set for ``route`` (and ``threads`` when given), written into ``folder``."""
    raw = yaml.safe_load(config.read_text())
    raw.setdefault("training", {})["ensemble"] = "seeds" if route == "ensemble" else "none"
    if threads:
        raw["threads"] = threads
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.stem}-{route}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> dict:
    """Wall and CPU seconds (user + system, every process and thread of the command: close to the wall time of a
    quiet machine for single-thread work, even when other work shares the cores)."""
    before, cpu = load_average(), child_cpu()
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return {
        "command": " ".join(["corekd", *command[3:]]),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(child_cpu() - cpu, 1),
        "load_average": [before, load_average()],
    }


def end_to_end(kind: str, runs: Path, device: str) -> dict:
    config = GRID if kind == "grid" else QUICKSTART
    out = {}
    for route in ("separate", "ensemble"):
        folder = runs / f"{kind}-{route}"
        if folder.exists():
            shutil.rmtree(folder)
        path = config_copy(config, runs / "configs", route, None if kind == "grid" else 2)
        cli = [sys.executable, "-m", "corekd.cli"]
        if kind == "grid":
            command = [*cli, "compare", str(path), "--out", str(folder), "--workers", "2", "--threads", "1"]
        else:
            command = [*cli, "run", str(path), "--out", str(folder)]
        if device != "cpu":
            command += ["--device", device] + (["--workers", "1"] if kind == "grid" else [])
        out[route] = timed(command)
    for unit in ("wall_seconds", "cpu_seconds"):
        out[f"ratio_{unit}"] = round(out["separate"][unit] / out["ensemble"][unit], 2)
    return out


# ------------------------------------------------------------------ equivalence
FAMILIES = ("complete", "fixed", "random", "imbalanced", "burst", "features", "frames")


def family(condition: str) -> str:
    """The kind of a condition: its name before the colon (``fixed:la`` -> fixed, ``complete`` -> complete)."""
    return condition.split(":", 1)[0]


def headline(records: list[dict]) -> str:
    return "weighted_f1" if any("weighted_f1" in r for r in records) else "mae"


def equivalence(separate: Path, ensemble: Path) -> dict:
    sep = json.loads((separate / "results.json").read_text())["records"]
    ens = json.loads((ensemble / "results.json").read_text())["records"]
    metric = headline(sep)
    key = lambda r: (r.get("corpus", ""), r["variant"], r["seed"], r["condition"])  # noqa: E731
    a = {key(r): r[metric] for r in sep if r["split"] == "test" and r.get(metric) is not None}
    b = {key(r): r[metric] for r in ens if r["split"] == "test" and r.get(metric) is not None}
    shared = sorted(set(a) & set(b))
    out = {}
    for fam in FAMILIES:
        keys = [k for k in shared if family(k[3]) == fam]
        if not keys:
            continue
        diffs = np.array([b[k] - a[k] for k in keys])
        seeds = sorted({k[2] for k in keys})
        per_seed = np.array([np.mean([b[k] - a[k] for k in keys if k[2] == s]) for s in seeds])
        half = 1.96 * per_seed.std(ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else float("nan")
        groups: dict[tuple, list[float]] = {}
        for k in keys:
            groups.setdefault((k[0], k[1], k[3]), []).append(a[k])
        noise = float(np.mean([np.std(v, ddof=1) for v in groups.values() if len(v) > 1]))
        mean = float(diffs.mean())
        out[fam] = {
            "pairs": len(keys),
            "mean_difference": round(mean, 4),
            "ci95_over_seeds": [round(mean - half, 4), round(mean + half, 4)],
            "mean_abs_difference": round(float(np.abs(diffs).mean()), 4),
            "max_abs_difference": round(float(np.abs(diffs).max()), 4),
            "seed_noise": round(noise, 4),
            "within_seed_noise": abs(mean) < noise,
        }
    # Per variant: ensemble minus separate on each family's per-seed average, paired over seeds, Holm over all tests.
    from corekd.reporting.stats import holm, paired_difference

    tests = []
    for variant in sorted({k[1] for k in shared}):
        for fam in FAMILIES:
            per_route = []
            for values in (b, a):
                seeds: dict[int, list[float]] = {}
                for k in shared:
                    if k[1] == variant and family(k[3]) == fam:
                        seeds.setdefault(k[2], []).append(values[k])
                per_route.append({s: float(np.mean(v)) for s, v in seeds.items()})
            if per_route[0]:
                d = paired_difference(per_route[0], per_route[1])
                if d is not None:
                    tests.append({"variant": variant, "family": fam, "difference": round(d.mean, 4), "p": d.p})
    for t, adjusted in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = None if adjusted is None else round(adjusted, 4)
        t["p"] = None if t["p"] is None else round(t["p"], 4)
    by_method = {}
    for variant in sorted({k[1] for k in shared}):
        row = {}
        for route, values in (("separate", a), ("ensemble", b)):
            complete = [values[k] for k in shared if k[1] == variant and k[3] == "complete"]
            per_seed: dict[int, list[float]] = {}
            for k in shared:
                if k[1] == variant and family(k[3]) == "random":
                    per_seed.setdefault(k[2], []).append(values[k])
            random_avg = [float(np.mean(v)) for v in per_seed.values()]
            row[route] = {
                "complete": [round(float(np.mean(complete)), 4), round(float(np.std(complete, ddof=1)), 4)]
                if len(complete) > 1
                else None,
                "random_average": [round(float(np.mean(random_avg)), 4), round(float(np.std(random_avg, ddof=1)), 4)]
                if len(random_avg) > 1
                else None,
            }
        by_method[variant] = row
    return {
        "separate": str(separate),
        "ensemble": str(ensemble),
        "by_method": by_method,
        "by_method_note": "test weighted_f1, mean and std over seeds: the complete view, and the mean over the random "
        "rates (the protocol's average)",
        "metric": f"test {metric}, ensemble minus separate, paired by (variant, seed, condition)",
        "pairs": len(shared),
        "unpaired": len(set(a) ^ set(b)),
        "families": out,
        "all_within_seed_noise": all(f["within_seed_noise"] for f in out.values()),
        "per_variant": sorted(tests, key=lambda t: (t["p"] is None, t["p"] or 1.0)),
        "per_variant_note": "ensemble minus separate on each family's average per seed, paired t-test over seeds, "
        "Holm's adjustment over every (variant, family) test; sorted by p",
        "per_variant_significant_after_holm": [t for t in tests if t["p_holm"] is not None and t["p_holm"] < 0.05],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--part", choices=("all", "speed", "profile", "grid", "quickstart", "equivalence", "_train"), default="all"
    )
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "ensemble-bench")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--route", choices=("separate", "ensemble"), help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "_train":
        print(json.dumps(train_four(args.route, [int(s) for s in args.seeds.split(",")], args.threads, args.device)))
        return 0
    payload = json.loads(args.out.read_text()) if args.out.is_file() else {}
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    import torch

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    key = "cpu" if args.device == "cpu" else "gpu"
    section = payload.setdefault(key, {})
    section.update(
        {
            "device": f"{args.device}: {device_name}",
            "commit": git("rev-parse", "HEAD"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "torch": torch.__version__,
        }
    )
    payload["benchmark"] = "python benchmarks/ensemble.py"

    def save() -> None:
        args.out.write_text(json.dumps(payload, indent=1) + "\n")

    if args.part in ("all", "speed"):
        section["speed"] = {"command": "python benchmarks/ensemble.py --part speed", **speed(args.device)}
        save()
    if args.part in ("all", "profile") and args.device == "cpu":
        section["profile"] = {"command": "python benchmarks/ensemble.py --part profile", **profile()}
        save()
    for kind in ("quickstart", "grid"):
        if args.part in ("all", kind):
            section[kind] = {
                "command": f"python benchmarks/ensemble.py --part {kind}",
                **end_to_end(kind, args.runs, args.device),
            }
            save()
    if args.part in ("all", "equivalence", "quickstart", "grid"):
        found = {}
        for kind in ("quickstart", "grid"):
            sep, ens = args.runs / f"{kind}-separate", args.runs / f"{kind}-ensemble"
            if (sep / "results.json").is_file() and (ens / "results.json").is_file():
                found[kind] = equivalence(sep, ens)
        if found:
            section["equivalence"] = {"command": "python benchmarks/ensemble.py --part equivalence", **found}
            save()
    print(json.dumps({k: v for k, v in section.items() if k != "profile"}, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
