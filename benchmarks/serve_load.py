"""Load benchmark of ``corekd serve``: many concurrent clients against a real local server.

Run from the repository root::

    python benchmarks/serve_load.py [--model BUNDLE] [--clients 200] [--requests 100000] [--batching]
                                    [--max-seconds 20] [--heavy 3] [--out benchmarks/results/serve_load.json]

The server is ``corekd serve`` started as a subprocess on 127.0.0.1 with a free port (stopped at
the end). Without ``--model`` the bundle is a freshly initialised model of the quickstart's
architecture (``ModelConfig()``) on the synthetic corpus's dims, with that corpus's train-split
standardisation statistics: weights do not change the cost of a forward. The requests are the
synthetic corpus's test dialogues (one dialogue per request, every modality given, about 48
utterances each), sent round-robin by ``--clients`` concurrent httpx clients until ``--requests``
have been sent or ``--max-seconds`` have passed. Latency is per request, as a client sees it
(send -> parsed answer). Errors: any non-200 answer or transport failure (e.g. a connection reset).
Every client keeps its connection alive between requests (one httpx pool of ``--clients`` connections):
the keep-alive run. Written: p50/p95/p99 latency, throughput, the error count (must be 0) and the settings.

Then ``/healthz`` under heavy requests: ``--heavy`` concurrent legal requests of 64 dialogues x 1000
utterances (every utterance only ``l``, values 0/1 in compact JSON, so that the body stays under the
default 16 MB limit) while ``/healthz`` is polled every 10 ms on its own connection; written: the
``/healthz`` latencies (must stay under 50 ms), the heavy requests' answers and times, and the server's
peak RSS (VmHWM of the server process, then of its parsing worker processes). Everything to ``--out``.
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
    save_checkpoint(
        model,
        folder / "checkpoint",
        {"labels": corpus.labels, "task": "classification", "method": "untrained (speed only)"},
    )
    return bundle_checkpoint(
        folder / "checkpoint",
        folder / "bundle",
        cards=corpus.cards(),
        source={"note": "freshly initialised ModelConfig() for the load benchmark"},
    )


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


def heavy_body(seed: int) -> bytes:
    """64 dialogues x 1000 utterances, only ``l`` (dim 100), values 0/1, compact: a legal body of about 13 MB."""
    rng = np.random.default_rng(seed)
    dialogues = [
        {
            "dialogue_id": f"heavy{seed}_{i}",
            "utterances": [{"l": rng.integers(0, 2, 100).tolist()} for _ in range(1000)],
        }
        for i in range(64)
    ]
    return json.dumps(dialogues, separators=(",", ":")).encode()


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def poll_healthz(base: str, ready, stop, out) -> None:
    """In its own process (so that the load clients' work never delays it): GET /healthz every 10 ms on one
    keep-alive connection until ``stop`` is set; the latencies (s) and any non-200 answers go to ``out``."""
    latencies, answers = [], []
    with httpx.Client(base_url=base, timeout=httpx.Timeout(60.0)) as probe:
        probe.get("/healthz").raise_for_status()
        ready.set()
        while not stop.is_set():
            start = time.perf_counter()
            r = probe.get("/healthz")
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                answers.append(f"/healthz HTTP {r.status_code}")
            time.sleep(0.01)
    out.put((latencies, answers))


def healthz_under_heavy(base: str, heavy: int, server_pid: int) -> dict:
    """``/healthz`` polled every 10 ms (own process, own connection) while ``heavy`` 64 x 1000-utterance requests
    run at once."""
    import multiprocessing

    bodies = [heavy_body(k) for k in range(heavy)]
    ctx = multiprocessing.get_context("spawn")

    def polled(work) -> tuple[list[float], list[str]]:
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        poller = ctx.Process(target=poll_healthz, args=(base, ready, stop, out))
        poller.start()
        ready.wait(120)
        result = work()
        stop.set()
        latencies, answers = out.get(timeout=60)
        poller.join(30)
        return result, latencies, answers

    async def send_all() -> tuple[list[tuple[int, float]], float]:
        async def one(http: httpx.AsyncClient, body: bytes) -> tuple[int, float]:
            start = time.perf_counter()
            r = await http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            return r.status_code, time.perf_counter() - start

        async with httpx.AsyncClient(
            base_url=base, timeout=httpx.Timeout(900.0), limits=httpx.Limits(max_connections=heavy)
        ) as http:
            start = time.perf_counter()
            results = await asyncio.gather(*(one(http, b) for b in bodies))
            return results, time.perf_counter() - start

    _, idle, _ = polled(lambda: time.sleep(1.0))
    (results, seconds), latencies, answers = polled(lambda: asyncio.run(send_all()))
    lat = np.array(latencies) * 1000

    def pct(a: np.ndarray) -> dict:
        return {
            "p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1),
            "n": int(len(a)),
        }

    return {
        "heavy_requests": heavy,
        "body_mb": round(float(np.mean([len(b) for b in bodies])) / 2**20, 2),
        "heavy_status": [s for s, _ in results],
        "heavy_errors": sum(s != 200 for s, _ in results),
        "heavy_seconds": [round(t, 1) for _, t in results],
        "wall_seconds": round(seconds, 1),
        "healthz_ms": pct(lat),
        "healthz_idle_ms": pct(np.array(idle) * 1000),
        "healthz_over_50ms": int((lat >= 50).sum()),
        "healthz_errors": answers[:5],
        "peak_rss_mb": {
            "server": peak_rss_mb(server_pid),
            "children": [peak_rss_mb(p) for p in descendants(server_pid)],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a bundle (default: see the module docstring)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--heavy", type=int, default=3, help="concurrent 64 x 1000-utterance requests (0: skip)")
    parser.add_argument("--batching", action="store_true", help="start the server with --batching")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.json"))
    args = parser.parse_args()

    corpus = generate(SynthConfig())
    tmp = tempfile.TemporaryDirectory()
    bundle = args.model or default_bundle(Path(tmp.name), corpus)
    test = corpus.split("test")
    bodies = [
        json.dumps(
            {
                "dialogue_id": d.id,
                "utterances": [
                    {
                        "id": uid,
                        "speaker": d.speakers[i],
                        **{
                            m: d.features[m][i].tolist()
                            for j, m in enumerate(corpus.modality_names)
                            if d.available[i, j]
                        },
                    }
                    for i, uid in enumerate(d.utterance_ids)
                ],
            }
        ).encode()
        for d in test
    ]
    utterances = [len(d) for d in test]

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "corekd.cli",
        "serve",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--batching"] if args.batching else []),
    ]
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
        heavy = healthz_under_heavy(base, args.heavy, server.pid) if args.heavy else None
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
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "clients": args.clients,
        "requests_sent": result["sent"],
        "requests_ok": ok,
        "errors": len(result["errors"]),
        "error_examples": result["errors"][:5],
        "seconds": round(result["seconds"], 2),
        "throughput_requests_per_s": round(ok / result["seconds"], 2),
        "throughput_utterances_per_s": round(ok * mean_utts / result["seconds"], 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p95": round(float(np.percentile(lat, 95)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1),
            "max": round(float(lat.max()), 1),
        }
        if ok
        else {},
        "request": {
            "dialogue": "synthetic corpus test split, one dialogue per request, every modality",
            "utterances_mean": round(mean_utts, 1),
            "dims": {m: s.dim for m, s in corpus.modalities.items()},
            "body_bytes_mean": int(np.mean([len(b) for b in bodies])),
        },
        "keep_alive": {
            "clients": args.clients,
            "seconds": round(result["seconds"], 2),
            "errors": len(result["errors"]),
            "connections": "one httpx pool of --clients keep-alive connections",
            "timeout_keep_alive_s": 5.0,
        },
        "healthz_under_heavy": heavy,
        "server": {
            "batching": args.batching,
            "workers": 1,
            "runtime": "torch",
            "service": model_info["service"],
            "model": "given bundle" if args.model else "freshly initialised ModelConfig() (speed only)",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: record[k]
                for k in (
                    "requests_ok",
                    "errors",
                    "seconds",
                    "throughput_requests_per_s",
                    "latency_ms",
                    "healthz_under_heavy",
                )
            }
        )
    )
    healthy = heavy is None or (heavy["healthz_ms"]["max"] < 50 and heavy["heavy_errors"] == 0)
    return 0 if record["errors"] == 0 and ok > 0 and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
