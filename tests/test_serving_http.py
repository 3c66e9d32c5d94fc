"""`corekd serve`: the HTTP API in-process (httpx), its validation answers, concurrency, batching, and a real uvicorn process."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

import corekd
from corekd.serving.app import create_app


@pytest.fixture(scope="module")
def predictor(tiny_run_bundle):
    return corekd.load(tiny_run_bundle[1])


@pytest.fixture(scope="module")
def dialogue(tiny_test_dialogues):
    d = json.loads(json.dumps(tiny_test_dialogues[0]))
    del d["split"]
    for u in d["utterances"]:
        del u["label"]
    d["utterances"][1].pop("v")  # one modality missing on one utterance
    return d


def call(app, method, url, **kwargs):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def test_health_model_docs(predictor):
    app = create_app(predictor)
    assert call(app, "GET", "/healthz").json() == {"status": "ok"}
    info = call(app, "GET", "/v1/model").json()
    assert info["labels"] == predictor.labels and info["task"] == "classification"
    assert {m: s["dim"] for m, s in info["modalities"].items()} == {"l": 12, "a": 10, "v": 16}
    assert info["modalities"]["a"]["card"]["extractor"] == "corekd.data.synth"
    assert call(app, "GET", "/docs").status_code == 200
    schema = call(app, "GET", "/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(body["anyOf"]) == 2 and "Utterance" in schema["components"]["schemas"]
    utt = schema["components"]["schemas"]["Utterance"]["properties"]
    assert set(utt) == {"id", "speaker", "l", "a", "v"}


def test_predict_one_and_many(predictor, dialogue):
    app = create_app(predictor)
    one = call(app, "POST", "/v1/predict", json=dialogue)
    assert one.status_code == 200, one.text
    got = one.json()
    expected = predictor.predict(dialogue)
    assert got["dialogue_id"] == dialogue["dialogue_id"] and got["utterances"] == json.loads(json.dumps(expected))
    assert got["utterances"][1]["modalities"] == ["l", "a"]
    other = {**dialogue, "dialogue_id": "other", "utterances": dialogue["utterances"][:3]}
    many = call(app, "POST", "/v1/predict", json=[dialogue, other])
    assert many.status_code == 200
    assert [d["dialogue_id"] for d in many.json()] == [dialogue["dialogue_id"], "other"]
    assert len(many.json()[1]["utterances"]) == 3


def _bad_requests(dialogue):
    d = json.loads(json.dumps(dialogue))
    wrong_dim = json.loads(json.dumps(d))
    wrong_dim["utterances"][2]["a"] = wrong_dim["utterances"][2]["a"][:-1]
    unknown = json.loads(json.dumps(d))
    unknown["utterances"][0]["mood"] = "happy"
    nothing = json.loads(json.dumps(d))
    nothing["utterances"][3] = {"id": "x", "speaker": "A"}
    nan_body = json.dumps(d).replace(str(d["utterances"][0]["l"][4]), "NaN", 1)
    inf_body = json.dumps(d).replace(str(d["utterances"][1]["a"][0]), "Infinity", 1)
    return [
        ("wrong dim", json.dumps(wrong_dim), "body.utterances[2].a"),
        ("unknown field", json.dumps(unknown), "body.utterances[0].mood"),
        ("unknown top-level field", json.dumps({**d, "split": "test"}), "body.split"),
        ("NaN", nan_body, "body.utterances[0].l[4]"),
        ("inf", inf_body, "body.utterances[1].a[0]"),
        ("empty dialogue", json.dumps({"dialogue_id": "e", "utterances": []}), "body.utterances"),
        ("no dialogue id", json.dumps({"utterances": d["utterances"]}), "body.dialogue_id"),
        ("no modality", json.dumps(nothing), "body.utterances[3]"),
        ("empty list", "[]", "body"),
        ("wrong dim in a list", json.dumps([d, wrong_dim]), "body[1].utterances[2].a"),
        ("not JSON", "{not json", "body"),
        ("a number", "3", "body"),
        ("string features", json.dumps({"dialogue_id": "s", "utterances": [{"l": ["x"] * 12}]}), "body.utterances[0].l[0]"),
    ]


def test_malformed_requests_get_4xx_naming_the_field(predictor, dialogue):
    app = create_app(predictor)
    for name, body, field in _bad_requests(dialogue):
        r = call(app, "POST", "/v1/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
        fields = [e["field"] for e in r.json()["detail"]]
        assert field in fields, (name, fields)
    dup = json.loads(json.dumps(dialogue))
    dup["utterances"][1]["id"] = dup["utterances"][0]["id"]
    r = call(app, "POST", "/v1/predict", json=dup)
    assert r.status_code == 422 and "duplicate utterance id" in r.json()["detail"][0]["msg"]


def test_size_limits(predictor, dialogue):
    small = create_app(predictor, max_body_bytes=2000, max_dialogues=2)
    big = json.dumps(dialogue)
    assert len(big) > 2000
    r = call(small, "POST", "/v1/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "2000 bytes" in r.json()["detail"][0]["msg"] and r.json()["detail"][0]["field"] == "body"

    async def chunked():  # no content-length: counted while reading
        yield big[:1500].encode()
        yield big[1500:].encode()

    r = call(small, "POST", "/v1/predict", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    tiny = {"dialogue_id": "t", "utterances": [{"l": [0.0] * 12}]}
    assert call(small, "POST", "/v1/predict", json=tiny).status_code == 200
    r = call(small, "POST", "/v1/predict", json=[tiny] * 3)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body"


def _concurrent(app, bodies):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/v1/predict", json=b) for b in bodies))

    return asyncio.run(go())


@pytest.mark.parametrize("batching", [False, True])
def test_concurrent_requests_give_the_sequential_answers(predictor, tiny_test_dialogues, batching):
    bodies = []
    for i in range(24):
        d = json.loads(json.dumps(tiny_test_dialogues[i % len(tiny_test_dialogues)]))
        del d["split"]
        d["dialogue_id"] = f"req{i}"
        d["utterances"] = [{k: v for k, v in u.items() if k != "label" and not (k == "a" and (i + t) % 3 == 0)}
                           for t, u in enumerate(d["utterances"][: 3 + i % 9])]
        bodies.append(d)
    app = create_app(predictor, batching=batching, max_batch=64, batch_wait_ms=50)
    answers = _concurrent(app, bodies)
    assert all(a.status_code == 200 for a in answers)
    for body, answer in zip(bodies, answers):
        expected = predictor.predict(body)
        got = answer.json()
        assert got["dialogue_id"] == body["dialogue_id"]
        assert [r["utterance_id"] for r in got["utterances"]] == [r["utterance_id"] for r in expected]
        diff = max(abs(r["probabilities"][k] - e["probabilities"][k])
                   for r, e in zip(got["utterances"], expected) for k in e["probabilities"])
        assert diff < 1e-5  # padding in a shared batch changes nothing beyond float noise
    batcher = app.state.batcher
    if batching:
        assert batcher.requests == 24 and 1 <= batcher.batches < 24  # gathered: fewer forwards than requests
    else:
        assert batcher is None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_process(tiny_run_bundle, dialogue, tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "corekd.cli", "serve", str(tiny_run_bundle[1]), "--host", "127.0.0.1",
           "--port", str(port), "--batching"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up within 60 s"
            time.sleep(0.2)
        r = httpx.post(f"{base}/v1/predict", json=dialogue, timeout=30)
        assert r.status_code == 200 and len(r.json()["utterances"]) == len(dialogue["utterances"])
        bad = httpx.post(f"{base}/v1/predict", json={"dialogue_id": "x", "utterances": []}, timeout=30)
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.utterances"
        assert httpx.get(f"{base}/v1/model", timeout=10).json()["service"]["batching"] is True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_no_nan_leaves_the_service(predictor, dialogue, tiny_run_bundle, tmp_path):
    """A value too far out is a 422 naming the field; a model that cannot answer is a 422 naming the dialogue, and
    /healthz says so (503) instead of 'ok'."""
    import shutil

    from helpers import edit_weights

    far = json.loads(json.dumps(dialogue))
    far["utterances"][2]["a"][1] = 1e20  # a float32 number: NaN under torch before
    for batching in (False, True):
        app = create_app(predictor, batching=batching)
        r = call(app, "POST", "/v1/predict", json=far)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.utterances[2].a", r.text
        assert "too far from the training data" in r.json()["detail"][0]["msg"]
        r = call(app, "POST", "/v1/predict", json=[dialogue, far])
        field = r.json()["detail"][0]["field"]  # the dialogue's index and the field (one loc format: issue 29, item 3)
        assert r.status_code == 422 and field.startswith("body") and "[1]" in field and "utterances[2].a" in field, r.text
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run_bundle[1], broken)
    edit_weights(broken, lambda w: w["head.weight"].fill_(3e38))  # finite weights whose outputs overflow: NaN
    for batching in (False, True):
        app = create_app(corekd.load(broken), batching=batching)
        health = call(app, "GET", "/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable" and "not finite" in health.text
        r = call(app, "POST", "/v1/predict", json=dialogue)
        assert r.status_code == 422, r.text
        assert f"dialogue '{dialogue['dialogue_id']}': the model's output" in r.json()["detail"][0]["msg"]
