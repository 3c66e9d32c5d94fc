"""Load benchmark of ``corekd serve``: many concurrent clients against a real local server.

Run from the repository root::

    python benchmarks/serve_load.py [--model BUNDLE] [--clients 200] [--requests 600] [--batching]
                                    [--max-seconds 300] [--out benchmarks/results/serve.json]

The server is ``corekd serve`` started as a subprocess on 127.0.0.1 with a free port (stopped at
the end). Without ``--model`` the bundle is a freshly initialised model of the quickstart's
architecture (``ModelConfig()``) on the synthetic corpus's dims, with that corpus's train-split
standardisation statistics: weights do not change the cost of a forward. The requests are the
synthetic corpus's test dialogues (one dialogue per request, every modality given, about 48
utterances each), sent round-robin by ``--clients`` concurrent httpx clients until ``--requests``
have been sent or ``--max-seconds`` have passed. Latency is per request, as a client sees it
(send -> parsed answer). Errors: any non-200 answer or transport failure. Written: p50/p95/p99
latency, throughput, the error count (must be 0) and the settings, to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from corekd.data.batching import SplitTensors
from corekd.data.standardize import train_statistics
from corekd.data.synth import SynthConfig, generate
from corekd.models.model import ModelConfig
from corekd.serving.bundle import bundle_checkpoint
from corekd.training import init_model, save_checkpoint


def default_bundle(folder: Path, corpus) -> Path:
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    model = init_model(ModelConfig(), dims, len(corpus.labels), 0, "student")
    model.set_input_statistics(train_statistics(SplitTensors.from_corpus(corpus, "train")))
    save_checkpoint(model, folder / "checkpoint", {"labels": corpus.labels, "task": "classification",
                                                   "method": "untrained (speed only)"})
    return bundle_checkpoint(folder / "checkpoint", folder / "bundle", cards=corpus.cards(),
                             source={"note": "freshly initialised ModelConfig() for the load benchmark"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(base: str, bodies: list[bytes], clients: int, total: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            start = time.perf_counter()
            try:
                r = await http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    continue
                r.json()
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=httpx.Timeout(120.0)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        seconds = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "sent": sent, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a bundle (default: see the module docstring)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--batching", action="store_true", help="start the server with --batching")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    args = parser.parse_args()

    corpus = generate(SynthConfig())
    tmp = tempfile.TemporaryDirectory()
    bundle = args.model or default_bundle(Path(tmp.name), corpus)
    test = corpus.split("test")
    bodies = [json.dumps({"dialogue_id": d.id, "utterances": [
        {"id": uid, "speaker": d.speakers[i], **{m: d.features[m][i].tolist() for j, m in enumerate(corpus.modality_names)
                                                  if d.available[i, j]}}
        for i, uid in enumerate(d.utterance_ids)]}).encode() for d in test]
    utterances = [len(d) for d in test]

    port = free_port()
    cmd = [sys.executable, "-m", "corekd.cli", "serve", str(bundle), "--host", "127.0.0.1", "--port", str(port),
           *(["--batching"] if args.batching else [])]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        up = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                print(server.stdout.read().decode(), file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > up:
                print("the server did not come up within 120 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        model_info = httpx.get(f"{base}/v1/model", timeout=10).json()
        result = asyncio.run(drive(base, bodies, args.clients, args.requests, args.max_seconds))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)

    lat = np.array(result["latencies"]) * 1000
    ok = len(lat)
    mean_utts = float(np.mean(utterances))
    record = {
        "benchmark": "serve_load",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "clients": args.clients,
        "requests_sent": result["sent"],
        "requests_ok": ok,
        "errors": len(result["errors"]),
        "error_examples": result["errors"][:5],
        "seconds": round(result["seconds"], 2),
        "throughput_requests_per_s": round(ok / result["seconds"], 2),
        "throughput_utterances_per_s": round(ok * mean_utts / result["seconds"], 1),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1), "max": round(float(lat.max()), 1)} if ok else {},
        "request": {"dialogue": "synthetic corpus test split, one dialogue per request, every modality",
                    "utterances_mean": round(mean_utts, 1), "dims": {m: s.dim for m, s in corpus.modalities.items()},
                    "body_bytes_mean": int(np.mean([len(b) for b in bodies]))},
        "server": {"batching": args.batching, "workers": 1, "runtime": "torch", "service": model_info["service"],
                   "model": "given bundle" if args.model else "freshly initialised ModelConfig() (speed only)"},
        "machine": {"cpus": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("requests_ok", "errors", "seconds", "throughput_requests_per_s",
                                              "latency_ms")}))
    return 0 if record["errors"] == 0 and ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
