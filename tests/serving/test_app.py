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
        (
            "string features",
            json.dumps({"dialogue_id": "s", "utterances": [{"l": ["x"] * 12}]}),
            "body.utterances[0].l[0]",
        ),
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
    assert (
        r.status_code == 413
        and "2000 bytes" in r.json()["detail"][0]["msg"]
        and r.json()["detail"][0]["field"] == "body"
    )

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
        d["utterances"] = [
            {k: v for k, v in u.items() if k != "label" and not (k == "a" and (i + t) % 3 == 0)}
            for t, u in enumerate(d["utterances"][: 3 + i % 9])
        ]
        bodies.append(d)
    app = create_app(predictor, batching=batching, max_batch=64, batch_wait_ms=50)
    answers = _concurrent(app, bodies)
    assert all(a.status_code == 200 for a in answers)
    for body, answer in zip(bodies, answers):
        expected = predictor.predict(body)
        got = answer.json()
        assert got["dialogue_id"] == body["dialogue_id"]
        assert [r["utterance_id"] for r in got["utterances"]] == [r["utterance_id"] for r in expected]
        diff = max(
            abs(r["probabilities"][k] - e["probabilities"][k])
            for r, e in zip(got["utterances"], expected)
            for k in e["probabilities"]
        )
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
    cmd = [
        sys.executable,
        "-m",
        "corekd.cli",
        "serve",
        str(tiny_run_bundle[1]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--batching",
    ]
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


# ------------------------------------------------------------------ the schema says what the handler accepts
def _request_schema(app):
    from jsonschema import Draft202012Validator

    spec = call(app, "GET", "/openapi.json").json()
    op = spec["paths"]["/v1/predict"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    return op, Draft202012Validator({**body, "components": spec["components"]})


def test_openapi_documents_every_answer_and_refuses_what_the_handler_refuses(predictor, dialogue):
    app = create_app(predictor, parse_workers=0)
    op, validator = _request_schema(app)
    assert set(op["responses"]) == {"200", "413", "415", "422"}
    for code in ("413", "415", "422"):
        assert op["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorAnswer"
        }
    refused = {
        "empty list": [],
        "all-null utterance": {"dialogue_id": "x", "utterances": [{"l": None, "a": None, "v": None}]},
        "no modality": {"dialogue_id": "x", "utterances": [{"id": "u"}]},
        "string number": {"dialogue_id": "x", "utterances": [{"l": ["1.5"] + [0.0] * 11}]},
        "boolean number": {"dialogue_id": "x", "utterances": [{"l": [True] + [0.0] * 11}]},
        "beyond float32": {"dialogue_id": "x", "utterances": [{"l": [1e39] + [0.0] * 11}]},
    }
    for name, body in refused.items():
        assert not validator.is_valid(body), name  # the schema refuses it ...
        r = call(app, "POST", "/v1/predict", json=body)
        assert r.status_code == 422, (name, r.text)  # ... and so does the handler
    assert validator.is_valid(dialogue) and validator.is_valid([dialogue])
    one_null = {"dialogue_id": "x", "utterances": [{"l": [0.0] * 12, "a": None}]}
    assert validator.is_valid(one_null) and call(app, "POST", "/v1/predict", json=one_null).status_code == 200
    answer = call(app, "POST", "/v1/predict", json=dialogue).json()
    spec = call(app, "GET", "/openapi.json").json()
    from jsonschema import Draft202012Validator

    ok = Draft202012Validator(
        {**op["responses"]["200"]["content"]["application/json"]["schema"], "components": spec["components"]}
    )
    assert ok.is_valid(answer) and ok.is_valid(call(app, "POST", "/v1/predict", json=[dialogue]).json())


def test_a_json_content_type_is_required(predictor, dialogue):
    app = create_app(predictor, parse_workers=0)
    body = json.dumps(dialogue)
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        r = call(app, "POST", "/v1/predict", content=body, headers=headers)
        assert r.status_code == 415, (headers, r.text)
        assert r.json()["detail"][0]["loc"] == ["header", "content-type"]
        assert r.json()["detail"][0]["field"] == "header.content-type"
    r = call(app, "POST", "/v1/predict", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_one_loc_format_for_the_schema_and_corekds_own_checks(predictor, dialogue):
    app = create_app(predictor, parse_workers=0)
    dup = json.loads(json.dumps(dialogue))
    dup["utterances"][1]["id"] = dup["utterances"][0]["id"]
    wrong = json.loads(json.dumps(dialogue))
    wrong["utterances"][2]["a"] = wrong["utterances"][2]["a"][:-1]
    own = call(app, "POST", "/v1/predict", json=[dialogue, dup]).json()["detail"][0]  # corekd's check
    schema = call(app, "POST", "/v1/predict", json=[dialogue, wrong]).json()["detail"][0]  # pydantic's
    assert own["loc"] == ["body", 1, "utterances"] and own["field"] == "body[1].utterances"
    assert schema["loc"] == ["body", 1, "utterances", 2, "a"] and schema["field"] == "body[1].utterances[2].a"
    single = call(app, "POST", "/v1/predict", json=dup).json()["detail"][0]
    assert single["loc"] == ["body", "utterances"] and "duplicate utterance id" in single["msg"]


def test_parsing_inference_and_serialisation_run_off_the_event_loop(predictor, dialogue, monkeypatch):
    """Every CPU-heavy step of a request runs in a worker thread (or process), never in the event loop's thread."""
    import threading
    import types

    from corekd.serving import app as app_module

    where: dict[str, int] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            where[name] = threading.get_ident()
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(app_module.BodyValidator, "__call__", spy("parse", app_module.BodyValidator.__call__))
    # corekd's own checks (parse_dialogue) and the answer's JSON encoding, seen through the names the app calls
    monkeypatch.setattr(app_module, "parse_dialogue", spy("check", app_module.parse_dialogue))
    monkeypatch.setattr(app_module, "json", types.SimpleNamespace(dumps=spy("serialise", json.dumps)))
    app = create_app(predictor, parse_workers=0)
    monkeypatch.setattr(predictor, "predict_many", spy("model", predictor.predict_many))

    async def go():
        loop_thread = threading.get_ident()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            r = await client.post("/v1/predict", json=dialogue)
        return loop_thread, r

    loop_thread, r = asyncio.run(go())
    assert r.status_code == 200
    assert set(where) == {"parse", "check", "model", "serialise"}
    assert loop_thread not in where.values()


def test_large_bodies_are_parsed_in_worker_processes_with_the_same_answers(predictor, dialogue):
    app = create_app(predictor, parse_workers=1, parse_in_process_bytes=0)  # every body goes to the process
    try:
        one = call(app, "POST", "/v1/predict", json=dialogue)
        many = call(app, "POST", "/v1/predict", json=[dialogue, dialogue])
        bad = call(app, "POST", "/v1/predict", json={"dialogue_id": "x", "utterances": [{"l": ["1"] * 12}]})
        assert app.state.parse_pool.pool is not None  # the process pool answered
    finally:
        app.state.parse_pool.close()
    expected = json.loads(json.dumps(predictor.predict(dialogue)))
    assert one.status_code == 200 and one.json()["utterances"] == expected
    pair = json.loads(json.dumps(predictor.predict_many([dialogue, dialogue])))  # one padded forward, as served
    assert many.status_code == 200 and [d["utterances"] for d in many.json()] == pair
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.utterances[0].l[0]"


def test_schemathesis_all_checks_find_nothing(predictor):
    """Schemathesis (pinned in the test extra), every check, positive and negative data, in-process over ASGI."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema

    app = create_app(predictor, parse_workers=0)
    config = SchemathesisConfig.from_dict(
        {"seed": 29, "generation": {"max-examples": 15, "mode": "all"}, "checks": {"enabled": True}}
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures, checks = [], set()
    for event in from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(repr(event)[:300])
        if not isinstance(event, events.ScenarioFinished):
            continue
        for case_id, results in event.recorder.checks.items():
            for check in results:
                checks.add(check.name)
                if check.status.name != "FAILURE":
                    continue
                interaction = event.recorder.interactions.get(case_id)
                response = interaction.response if interaction is not None else None
                body = (response.content or b"") if response is not None else b""
                # The one rule JSON Schema cannot state (docs/serving.md): utterance ids unique within a dialogue.
                if b"duplicate utterance id" in body:
                    continue
                message = check.failure_info.failure.title if check.failure_info else ""
                failures.append(f"{event.label}: {check.name}: {message}: {body[:300]!r}")
    assert not failures, failures
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "unsupported_method",
    } <= checks


def test_serve_takes_a_keep_alive_timeout(tiny_run_bundle, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from corekd.cli import app as cli

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("COREKD_SERVE_SETTINGS", "{}")  # the command sets it; restored after the test
    runner = CliRunner()
    assert runner.invoke(cli, ["serve", str(tiny_run_bundle[1])]).exit_code == 0
    assert seen["timeout_keep_alive"] == 5.0  # the default
    assert (
        runner.invoke(
            cli, ["serve", str(tiny_run_bundle[1]), "--timeout-keep-alive", "30", "--parse-workers", "0"]
        ).exit_code
        == 0
    )
    assert seen["timeout_keep_alive"] == 30.0
    assert json.loads(os.environ["COREKD_SERVE_SETTINGS"])["parse_workers"] == 0
    bad = runner.invoke(cli, ["serve", str(tiny_run_bundle[1]), "--timeout-keep-alive", "0"])
    assert bad.exit_code == 2 and "--timeout-keep-alive" in bad.output


@pytest.mark.subprocess
def test_parsing_workers_exit_with_a_killed_server(tmp_path):
    """A server killed outright (no shutdown) leaves no parsing worker behind: each watches the process it serves."""
    script = tmp_path / "server.py"
    script.write_text(
        "import multiprocessing, os, signal\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from corekd.serving.schema import init_worker\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('forkserver')\n"
        "    ctx.set_forkserver_preload(['corekd.serving.schema'])\n"
        "    pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=init_worker,\n"
        "                               initargs=({'l': {'dim': 2}}, 4, 5))\n"
        "    pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "    print(' '.join(map(str, pids)), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out.stderr
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [
            p
            for p in pids
            if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split(")")[-1].split()[0]
        ]
    assert not alive


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
        # the schema states the bound the predictor's check applies (values farther from the training data)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.utterances[2].a[1]", r.text
        assert "less than or equal to" in r.json()["detail"][0]["msg"]
        bound = predictor.value_bounds()["a"]
        near = json.loads(json.dumps(dialogue))
        near["utterances"][2]["a"][1] = bound
        assert call(app, "POST", "/v1/predict", json=near).status_code == 200  # the bound itself is answered
        r = call(app, "POST", "/v1/predict", json=[dialogue, far])
        field = r.json()["detail"][0]["field"]  # the dialogue's index and the field (one loc format: issue 29, item 3)
        assert r.status_code == 422 and field.startswith("body") and "[1]" in field and "utterances[2].a" in field, (
            r.text
        )
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
