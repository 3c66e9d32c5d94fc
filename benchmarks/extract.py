"""Extraction speed on this machine: utterances per second per extractor (1 and 2 workers), cache-hit re-run, memory.

    python benchmarks/extract.py [--n 8] [--out benchmarks/results/extract.json]

Media are generated (corekd.features.synthmedia): N speech-like 2 s wav files, N 2 s face videos
(10 frames/s, sampled at 2 frames/s by the visual extractor), N transcripts. Each extractor runs alone
on a fresh cache; then the whole manifest runs twice on one cache (the second run is all cache hits).
The text extractor runs in the main process (one batched model), so its workers figure is one number.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from corekd.features.extract import FeaturesConfig, extract_rows, read_manifest  # noqa: E402
from corekd.features.synthmedia import face_video, speech_like  # noqa: E402

SENTENCES = [
    "I can't believe you did that!",
    "Oh, that's wonderful news.",
    "Why would anyone say that?",
    "I'm so sorry for your loss.",
    "Get out of my apartment!",
    "Hey, how you doin'?",
]


def manifest(folder: Path, n: int) -> Path:
    path = folder / "m.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dialogue_id", "utterance_id", "speaker", "label", "split", "text", "audio_path", "video_path"])
        for k in range(n):
            wav = speech_like(folder / f"s{k}.wav", seconds=2.0, f0=110 + 10 * k, seed=k)
            mp4 = face_video(
                folder / f"v{k}.mp4", frames=20, fps=10, shift=3 * k
            )  # distinct bytes: no shared cache entry
            w.writerow(
                [
                    f"d{k // 4}",
                    f"u{k}",
                    "AB"[k % 2],
                    "ab"[k % 2],
                    "train",
                    f"{SENTENCES[k % len(SENTENCES)]} ({k})",
                    wav.name,
                    mp4.name,
                ]
            )
    return path


def timed(rows, cfg, workers) -> dict:
    t = time.perf_counter()
    result = extract_rows(rows, cfg, workers=workers, labels=["a", "b"])
    seconds = time.perf_counter() - t
    s = result.summary
    return {
        "seconds": round(seconds, 3),
        "utterances_per_s": round(len(rows) / seconds, 3),
        "computed": s["computed"],
        "cache_hits": s["cache_hits"],
        "failures": len(s["failures"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/extract.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = read_manifest(manifest(tmp, args.n))
        off = {"enabled": False}
        only = {
            "text": FeaturesConfig(audio=off, visual=off),
            "audio": FeaturesConfig(text=off, visual=off),
            "visual": FeaturesConfig(text=off, audio=off),
        }
        results: dict = {}
        for name, cfg in only.items():
            results[name] = {}
            for workers in (1,) if name == "text" else (1, 2):
                c = cfg.model_copy(update={"cache_dir": str(tmp / f"cache-{name}-{workers}")})
                results[name][f"workers_{workers}"] = timed(rows, c, workers)
                print(name, workers, results[name][f"workers_{workers}"], file=sys.stderr, flush=True)
        results["text"]["note"] = "workers_1 includes loading the model once (most of it for a few utterances)"
        from corekd.features.text import TextEmbedder

        t = time.perf_counter()
        embedder = TextEmbedder()
        load = time.perf_counter() - t
        batch = [SENTENCES[k % len(SENTENCES)] + f" ({k})" for k in range(512)]
        t = time.perf_counter()
        embedder.embed(batch)
        results["text"]["model_only"] = {
            "load_seconds": round(load, 3),
            "utterances": len(batch),
            "utterances_per_s": round(len(batch) / (time.perf_counter() - t), 1),
        }
        full = FeaturesConfig(cache_dir=str(tmp / "cache-all"))
        first = timed(rows, full, 2)
        again = timed(rows, full, 2)
    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = {
        "utterances": args.n,
        "media": "2 s speech-like 16 kHz wav; 2 s 256x256 face mp4 at 10 frames/s (visual samples 2 frames/s)",
        "extractors": results,
        "all_three_2_workers": {"first_run": first, "cache_hit_rerun": again},
        "peak_memory_mib": {
            "main_process": round(usage_self, 1),
            "largest_child_process": round(usage_children, 1),
            "note": "ru_maxrss; on Linux a spawned child counts the size it was forked at, so the child figure is an upper bound",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "2 cores shared with other jobs while measured: figures are a lower bound",
        },
        "command": "python benchmarks/extract.py --n " + str(args.n),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
