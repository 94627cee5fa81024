"""``peftsum serve``: a real uvicorn server on 127.0.0.1 (a free port), called over HTTP.

Adapters are trained here for 3 steps on the tiny mT5 with a high learning rate (so that each
visibly changes the summaries): LoRA on English and Russian, rsLoRA on all linear layers on
French (three adapters PEFT can mix), DoRA on English (PEFT cannot mix it) and a full
fine-tuning run. Summaries use ``min_new_tokens`` so the barely trained models do not stop at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from peftsum.config import TrainConfig
from peftsum.data.xlsum import load_split
from peftsum.generation.decode import GenerationSettings
from peftsum.modeling.methods import METHODS
from peftsum.serving.registry import adapter_method, can_mix

pytestmark = pytest.mark.usefixtures("one_thread")

RUNS = {  # run id -> (method, language, extra config)
    "lora-english-s42": ("lora", "english", {}),
    "lora-russian-s42": ("lora", "russian", {}),
    "rslora-french-s42": ("rslora", "french", {"target_modules": ["all-linear"]}),
    "dora-english-s42": ("dora", "english", {}),
    "full-english-s42": ("full", "english", {"learning_rate": 1e-3}),
}
MIXABLE = ["lora-english-s42", "lora-russian-s42", "rslora-french-s42"]
BEAM = {"num_beams": 4, "max_new_tokens": 16, "min_new_tokens": 6}


@pytest.fixture(scope="module")
def experiment(tiny_model_dir, tmp_path_factory):
    """An experiment folder ``runs/<run_id>/`` with the five trained runs."""
    from peftsum.training.trainer import train

    root = tmp_path_factory.mktemp("serve-exp")
    for run_id, (method, language, extra) in RUNS.items():
        values = {"learning_rate": 5e-2, **extra}
        train(TrainConfig(model=str(tiny_model_dir), method=method, languages=[language], max_steps=3,
                          train_samples=8, val_samples=2, eval_steps=0, batch_size=4, max_source_length=64,
                          max_target_length=16, bf16=False, output_dir=str(root / "runs" / run_id), **values),
              log=lambda *a: None)
    return root


@contextmanager
def running(registry, **app_kwargs):
    """Start a real uvicorn server for ``registry`` on 127.0.0.1 (free port) in a thread; stop it after."""
    import uvicorn

    from peftsum.serving.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(registry, **app_kwargs), log_level="warning",
                                          access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def registry(tiny_model_dir, experiment):
    from peftsum.serving.app import load_registry

    return load_registry(str(tiny_model_dir), [f"full-english={experiment / 'runs' / 'full-english-s42'}"],
                         [str(experiment)], max_resident_mb=1000, log=lambda *a: None)


@pytest.fixture(scope="module")
def url(registry):
    with running(registry, window_ms=100) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def _gen(client, text, adapter, **params):
    res = client.post("/generate", json={"inputs": text, "parameters": {"adapter_id": adapter, **params}})
    assert res.status_code == 200, res.text
    return res.json()


def _articles(language, n, split="validation"):
    return [r["text"] for r in load_split(language, split, "sample", n).rows]


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


# --------------------------------------------------------------------------- registry flag


def test_mixed_batch_flag_marks_what_peft_can_mix():
    assert sorted(n for n, m in METHODS.items() if m.mixed_batch) == ["lora", "pissa", "rslora"]
    # the adapter file decides too: a DoRA file is never mixed, whatever its run says
    assert can_mix("lora", {"peft_type": "LORA"}) and can_mix("rslora", {"peft_type": "LORA", "use_rslora": True})
    assert not can_mix("lora", {"peft_type": "LORA", "use_dora": True}) and not can_mix("ia3", {"peft_type": "IA3"})
    assert adapter_method({"peft_type": "LORA", "use_dora": True}, {}) == "dora"
    assert adapter_method({"peft_type": "LOKR"}, {}) == "lokr"


# --------------------------------------------------------------------------- mixed batches


def test_mixed_batch_gives_each_request_its_own_summary(client):
    articles = _articles("english", 2) + _articles("russian", 1) + _articles("french", 1) + _articles("english", 1)
    adapters = [*MIXABLE, "__base__", "dora-english-s42"]
    barrier = threading.Barrier(len(adapters))
    together: list = [None] * len(adapters)

    def call(i):
        barrier.wait()
        together[i] = _gen(client, articles[i], adapters[i], **BEAM)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(adapters))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the three LoRA adapters and the base decode in one generate call; DoRA in its own
    assert [r["details"]["batch_size"] for r in together] == [4, 4, 4, 4, 1]
    alone = [_gen(client, a, n, **BEAM) for a, n in zip(articles, adapters)]
    assert all(r["details"]["batch_size"] == 1 for r in alone)
    assert [r["generated_text"] for r in together] == [r["generated_text"] for r in alone]
    assert all(r["generated_text"] for r in alone)
    # the adapters matter: the same article gives another summary with each adapter and the base
    same_article = {n: _gen(client, articles[0], n, **BEAM)["generated_text"] for n in [*MIXABLE, "__base__"]}
    assert len(set(same_article.values())) == 4, same_article
    metrics = client.get("/metrics").text
    assert 'peftsum_batch_adapters_bucket{le="4.0"}' in metrics
    assert _metric(metrics, 'peftsum_batch_size_bucket{le="4.0"}') > _metric(metrics, 'peftsum_batch_size_bucket{le="2.0"}')


def test_generate_matches_peftsum_evaluate_on_five_real_rows(client, experiment, tmp_path):
    from peftsum.generation.evaluate import evaluate_model

    settings = GenerationSettings(max_new_tokens=20, min_new_tokens=6)  # XL-Sum's beam 4, 0.6, 2
    run = experiment / "runs" / "lora-english-s42"
    evaluate_model(str(run), "english", tmp_path / "results.json", num_samples=5, settings=settings,
                   n_resamples=10, progress=False, log=lambda *a: None)
    cli = [json.loads(line)["prediction"] for line in (tmp_path / "predictions.jsonl").open(encoding="utf-8")]
    rows = load_split("english", "validation", "sample", 5).rows
    results: list = [None] * 5

    def call(i):
        results[i] = _gen(client, rows[i]["text"], "lora-english-s42", max_new_tokens=20, min_new_tokens=6)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["generated_text"] for r in results] == cli
    assert all(cli)
    d = results[0]["details"]
    assert d["parameters"]["num_beams"] == 4 and d["parameters"]["length_penalty"] == 0.6
    assert d["input_tokens"] == 64  # the run's max_source_length, from its training config
    assert 6 <= d["generated_tokens"] <= 21 and d["total_ms"] >= d["inference_ms"] > 0


def test_full_checkpoint_is_served_as_its_own_model(client, experiment):
    from peftsum.generation.decode import generate_summaries
    from peftsum.modeling.load import load_for_inference

    from peftsum.runtime import resolve_bf16

    text = _articles("english", 1)[0]
    got = _gen(client, text, "full-english", **BEAM)
    bf16 = resolve_bf16(None)  # the server's precision (PEFTSUM_BF16, else the hardware): bf16 weights or fp32
    model, tok = load_for_inference(str(experiment / "runs" / "full-english-s42"), bf16=bf16)
    want = generate_summaries(model, tok, [text], GenerationSettings(**{k: v for k, v in BEAM.items()}),
                              max_source_length=64, progress=False, bf16=bf16)
    assert got["generated_text"] == want[0]
    info = {a["name"]: a for a in client.get("/info").json()["adapters"]}
    assert info["full-english"]["kind"] == "full" and info["full-english"]["method"] == "full"


# --------------------------------------------------------------------------- streaming


def _stream(client, body):
    events = []
    with client.stream("POST", "/generate_stream", json=body) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        for line in res.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_stream_sends_tokens_then_the_summary(client, num_beams):
    text = _articles("russian", 1)[0]
    params = {"adapter_id": "lora-russian-s42", "num_beams": num_beams, "max_new_tokens": 12, "min_new_tokens": 5}
    events = _stream(client, {"inputs": text, "parameters": params})
    tokens, final = events[:-1], events[-1]
    assert len(tokens) >= 5 and all(e["token"]["text"] is not None for e in tokens)
    assert final["token"] is None and final["details"]["generated_tokens"] >= len(tokens)
    assert "".join(e["token"]["text"] for e in tokens).strip() == final["generated_text"]
    plain = _gen(client, text, "lora-russian-s42", num_beams=num_beams, max_new_tokens=12, min_new_tokens=5)
    assert final["generated_text"] == plain["generated_text"]


# --------------------------------------------------------------------------- info, health, metrics


def test_info_health_and_metrics(client, tiny_model_dir):
    info = client.get("/info").json()
    assert info["base"]["name"] == str(tiny_model_dir) and info["base"]["model_type"] == "mt5"
    # decoding precision follows the switch the suite pins (PEFTSUM_BF16=0 unless CI's bf16 pass sets 1)
    assert info["base"]["precision"] == ("bf16" if os.environ.get("PEFTSUM_BF16") == "1" else "fp32")
    assert info["base"]["device"] == ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    adapters = {a["name"]: a for a in info["adapters"]}
    assert set(adapters) == {*MIXABLE, "dora-english-s42", "full-english"}  # --adapters-from skips full runs
    lora = adapters["lora-english-s42"]
    assert (lora["method"], lora["language"], lora["rank"], lora["kind"]) == ("lora", "english", 8, "mixed")
    assert 0 < lora["size_mb"] < 1 and lora["trainable_params"] > 0
    assert adapters["dora-english-s42"]["kind"] == "single" and adapters["rslora-french-s42"]["kind"] == "mixed"
    assert info["default_parameters"] == {"num_beams": 4, "length_penalty": 0.6, "no_repeat_ngram_size": 2,
                                          "max_new_tokens": 84, "min_new_tokens": 0}
    assert client.get("/health").json()["status"] == "ok"
    _gen(client, "A short article about the weather in London today.", "lora-english-s42", max_new_tokens=4)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("peftsum_requests_total", "peftsum_request_latency_seconds_bucket", "peftsum_generated_tokens_total",
                 "peftsum_input_tokens_total", "peftsum_batch_size_bucket", "peftsum_queue_depth"):
        assert name in text, name
    assert _metric(text, 'peftsum_requests_total{adapter="lora-english-s42",status="200"}') >= 1
    assert _metric(text, 'peftsum_generated_tokens_total{adapter="lora-english-s42"}') >= 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("body,status,needle", [
    ({"inputs": "text", "parameters": {"adapter_id": "klingon"}}, 404, "unknown adapter_id 'klingon'; loaded: __base__"),
    ({"inputs": "   \n\t "}, 422, "inputs: the article is empty"),
    ({"inputs": "x" * 50_001}, 413, "50001 characters"),
    ({"inputs": "text", "parameters": {"num_beams": 0}}, 422, "parameters.num_beams"),
    ({"inputs": "text", "parameters": {"num_beams": 100}}, 422, "parameters.num_beams"),
    ({"inputs": "text", "parameters": {"max_new_tokens": 100000}}, 422, "parameters.max_new_tokens"),
    ({"inputs": "text", "parameters": {"num_beams": "4"}}, 422, "parameters.num_beams: Input should be a valid integer"),
    ({"inputs": "text", "parameters": {"length_penalty": "long"}}, 422, "parameters.length_penalty"),
    ({"inputs": 42}, 422, "inputs: Input should be a valid string"),
    ({"parameters": {}}, 422, "inputs: Field required"),
    ({"inputs": "text", "parameters": {"temperature": 0.5}}, 422, "parameters.temperature"),
    ({"inputs": "text", "parameters": {"min_new_tokens": 50, "max_new_tokens": 10}}, 422, "min_new_tokens"),
])
def test_bad_input_is_a_one_line_error(client, body, status, needle):
    res = client.post("/generate", json=body)
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert needle in err and "\n" not in err and "Traceback" not in err
    if status == 404:
        assert all(name in err for name in MIXABLE)
    assert client.get("/health").status_code == 200


def test_malformed_json_and_unknown_routes(client):
    res = client.post("/generate", content=b'{"inputs": "a",', headers={"content-type": "application/json"})
    assert res.status_code == 422 and res.json()["error"].startswith("body: invalid JSON")
    res = client.post("/generate_stream", json={"inputs": ""})
    assert res.status_code == 422 and res.json()["error"] == "inputs: the article is empty"
    assert client.delete("/adapters/nope").status_code == 404
    assert client.get("/nowhere").json() == {"error": "Not Found", "error_type": "http"}
    assert 'peftsum_errors_total{code="422"}' in client.get("/metrics").text


def test_a_cancelled_request_frees_its_slot(url, client):
    text = _articles("english", 1)[0]
    body = json.dumps({"inputs": text, "parameters": {"adapter_id": "lora-english-s42", "num_beams": 8,
                                                      "max_new_tokens": 1000, "min_new_tokens": 1000}}).encode()
    host, port = url.removeprefix("http://").split(":")
    before = _metric(client.get("/metrics").text, "peftsum_cancelled_total")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.time() + 10
        while client.get("/health").json()["queue_depth"] == 0 and time.time() < deadline:
            time.sleep(0.02)
        assert client.get("/health").json()["queue_depth"] == 1
    started = time.time()
    while client.get("/health").json()["queue_depth"] and time.time() - started < 10:
        time.sleep(0.05)
    # 1000 tokens x 8 beams would take far longer: the decode stopped when the client went away
    assert client.get("/health").json()["queue_depth"] == 0 and time.time() - started < 10
    assert _metric(client.get("/metrics").text, "peftsum_cancelled_total") == before + 1
    assert _gen(client, text, "lora-english-s42", max_new_tokens=3)["generated_text"] is not None


# --------------------------------------------------------------------------- adapters: hot-load, base check, LRU


def _adapter_copy(experiment, tmp_path, run_id, base_path) -> Path:
    """A copy of a run folder whose adapter names ``base_path`` as its base."""
    dst = tmp_path / f"{run_id}-copy"
    shutil.copytree(experiment / "runs" / run_id, dst, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((dst / "model" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base_path)
    (dst / "model" / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_hot_load_unload_and_base_check(client, experiment, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    same = tmp_path / "tiny-copy"  # the same weights in another folder: accepted
    shutil.copytree(tiny_model_dir, same)
    other_arch = tmp_path / "tiny-wide"  # another architecture
    other_arch.mkdir()
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    (other_arch / "config.json").write_text(json.dumps({**cfg, "d_model": cfg["d_model"] * 2}))
    other_weights = tmp_path / "tiny-other"  # same architecture, other weights
    shutil.copytree(tiny_model_dir, other_weights)
    weights = load_file(str(other_weights / "model.safetensors"))
    weights["shared.weight"] = weights["shared.weight"] + 0.5
    save_file(weights, str(other_weights / "model.safetensors"))

    ok = _adapter_copy(experiment, tmp_path, "lora-english-s42", same)
    res = client.post("/adapters", json={"name": "en-copy", "path": str(ok)})
    assert res.status_code == 201, res.text
    assert res.json()["kind"] == "mixed" and res.json()["resident"]
    text = _articles("english", 1)[0]
    assert _gen(client, text, "en-copy", **BEAM)["generated_text"] == \
        _gen(client, text, "lora-english-s42", **BEAM)["generated_text"]
    assert client.post("/adapters", json={"name": "en-copy", "path": str(ok)}).status_code == 409
    for base, needle in ((other_arch, "d_model"), (other_weights, "weights differ"), ("google/never-seen", "trained on")):
        bad = _adapter_copy(experiment, tmp_path / str(abs(hash(str(base)))), "lora-russian-s42", base)
        res = client.post("/adapters", json={"name": "bad", "path": str(bad)})
        assert res.status_code == 409 and needle in res.json()["error"], res.text
    assert client.post("/adapters", json={"name": "x", "path": str(tmp_path / "missing")}).status_code == 422
    assert client.post("/adapters", json={"name": "__base__", "path": str(ok)}).status_code == 422
    assert client.delete("/adapters/en-copy").json() == {"removed": "en-copy"}
    res = client.post("/generate", json={"inputs": text, "parameters": {"adapter_id": "en-copy"}})
    assert res.status_code == 404
    assert "bad" not in {a["name"] for a in client.get("/info").json()["adapters"]}


def test_a_mismatched_adapter_stops_the_start_up_with_one_line(experiment, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from peftsum.cli import app

    bad = _adapter_copy(experiment, tmp_path, "lora-english-s42", "google/mt5-base")
    res = CliRunner().invoke(app, ["serve", "--model", str(tiny_model_dir), "--adapter", f"en={bad}",
                                   "--port", "0"], env={"COLUMNS": "400"})
    lines = [line for line in res.output.splitlines() if line.strip() and not line.startswith("adapter ")]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "was trained on google/mt5-base" in lines[0] and str(tiny_model_dir) in lines[0]


def test_a_taken_port_stops_the_start_up_with_one_line_before_loading():
    from typer.testing import CliRunner

    from peftsum.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--model", "/nonexistent/model", "--port", str(port)],
                                 env={"COLUMNS": "400"})
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert f"--port {port}: cannot listen there" in lines[0] and "in use" in lines[0]  # not the missing model


def test_lru_evicts_by_megabytes_and_reloads(tiny_model_dir, experiment, tmp_path):
    from peftsum.serving.registry import AdapterRegistry

    runs = experiment / "runs"
    size = (runs / "lora-english-s42" / "model" / "adapter_model.safetensors").stat().st_size / 1e6
    registry = AdapterRegistry(str(tiny_model_dir), max_resident_mb=2.5 * size)  # two of the three fit
    gone = tmp_path / "ru"
    shutil.copytree(runs / "lora-russian-s42", gone)
    for name, path in (("en", runs / "lora-english-s42"), ("ru", gone), ("do", runs / "dora-english-s42")):
        registry.add(name, path)
    text = _articles("english", 1)[0]
    with running(registry, window_ms=150) as base_url, httpx.Client(base_url=base_url, timeout=60) as c:
        resident = {a["name"]: a["resident"] for a in c.get("/info").json()["adapters"]}
        assert resident == {"en": False, "ru": True, "do": True}  # en was the least recently used
        first = _gen(c, text, "en", **BEAM)["generated_text"]  # reloaded on demand, evicting ru
        info = {a["name"]: a for a in c.get("/info").json()["adapters"]}
        assert info["en"]["loads"] == 2 and not info["ru"]["resident"] and info["do"]["resident"]
        assert c.get("/info").json()["resident_mb"] <= 2.5 * size
        _gen(c, text, "do", **BEAM)
        _gen(c, text, "do", **BEAM)
        assert _gen(c, text, "en", **BEAM)["generated_text"] == first
        # a server error: ru's files vanished while it was evicted -> 500, one line, counted, still up
        # in the same window as a request for en: only ru's request fails, en's decodes as before
        shutil.rmtree(gone)
        barrier, out = threading.Barrier(2), {}

        def call(name):
            barrier.wait()
            out[name] = c.post("/generate", json={"inputs": text, "parameters": {"adapter_id": name, **BEAM}})

        threads = [threading.Thread(target=call, args=(n,)) for n in ("ru", "en")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res = out["ru"]
        assert res.status_code == 500 and "\n" not in res.json()["error"] and "ru" in res.json()["error"]
        assert out["en"].status_code == 200 and out["en"].json()["generated_text"] == first, out["en"].text
        assert 'peftsum_errors_total{code="500"} 1.0' in c.get("/metrics").text
        assert _gen(c, text, "do", max_new_tokens=3) and c.get("/health").status_code == 200
        loads = c.get("/metrics").text
        assert _metric(loads, 'peftsum_adapter_loads_total{adapter="en"}') == 1  # the reload after eviction


# --------------------------------------------------------------------------- the command and the page


@pytest.mark.slow
def test_serve_command_runs_a_server(tiny_model_dir, experiment):
    """``--port 0``: the server takes a free port and prints the address it listens on."""
    import re

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "peftsum", "serve", "--model", str(tiny_model_dir),
                             "--adapters-from", str(experiment), "--port", "0", "--window-ms", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:  # the start line comes before the server answers (EOF if it exits)
            seen.append(line)
            if found := re.search(r"on http://127\.0\.0\.1:(\d+)/", line):
                break
        assert found, "".join(seen)
        port = int(found.group(1))
        assert port != 0
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        names = {a["name"] for a in httpx.get(f"http://127.0.0.1:{port}/info").json()["adapters"]}
        assert names == {*MIXABLE, "dora-english-s42"}
        res = httpx.post(f"http://127.0.0.1:{port}/generate", timeout=60, json={
            "inputs": _articles("french", 1)[0], "parameters": {"adapter_id": "rslora-french-s42", **BEAM}})
        assert res.status_code == 200 and res.json()["generated_text"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _cdp_session(chromium: str, profile: Path):
    """Chromium driven through the DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""
    from _browser import _flags

    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def fds():
        os.dup2(to_chrome_r, 3)
        os.dup2(from_chrome_w, 4)

    # the report's flags (no network at all) with loopback let through: the page itself may load nothing else
    flags = [f if not f.startswith("--host-resolver-rules=") else "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
             for f in _flags(str(profile))]
    proc = subprocess.Popen([chromium, *flags, "--remote-debugging-pipe", "about:blank"],
                            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    writer, reader = os.fdopen(to_chrome_w, "wb"), os.fdopen(from_chrome_r, "rb")
    state = {"id": 0, "buffer": b""}

    def call(method, session=None, **params):
        state["id"] += 1
        msg = {"id": state["id"], "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        writer.write(json.dumps(msg).encode() + b"\0")
        writer.flush()
        while True:
            while b"\0" not in state["buffer"]:
                chunk = reader.read1(65536)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                state["buffer"] += chunk
            raw, state["buffer"] = state["buffer"].split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == state["id"]:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    return proc, call


def test_page_summarizes_in_headless_chromium(url, tmp_path):
    from _browser import find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    page = httpx.get(url + "/").text
    assert "<script src" not in page and "http" not in page.replace("http://www.w3.org", "")  # nothing fetched
    proc, call = _cdp_session(chromium, tmp_path / "profile")
    try:
        target = call("Target.createTarget", url="about:blank")["targetId"]
        session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        call("Page.navigate", session, url=url + "/")

        def js(expr):
            return call("Runtime.evaluate", session, expression=expr, returnByValue=True)["result"].get("value")

        deadline = time.time() + 30
        while js("document.body && document.body.dataset.ready") != "1" and time.time() < deadline:
            time.sleep(0.1)
        options = js("Array.from(document.querySelectorAll('#adapter option')).map(o => o.value)")
        assert set(options) >= {"__base__", *MIXABLE}
        article = json.dumps(_articles("russian", 1)[0])
        js(f"document.getElementById('article').value = {article};"
           "document.getElementById('adapter').value = 'lora-russian-s42';"
           "document.getElementById('max_new_tokens').value = '8';"
           "document.getElementById('go').click(); true")
        while js("document.getElementById('summary').dataset.done") != "1" and time.time() < deadline:
            time.sleep(0.1)
        summary = js("document.getElementById('summary').textContent")
        latency = js("document.getElementById('latency').textContent")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    want = httpx.post(url + "/generate", timeout=60, json={"inputs": json.loads(article), "parameters": {
        "adapter_id": "lora-russian-s42", "max_new_tokens": 8}}).json()["generated_text"]
    assert summary == want and summary
    assert "adapter lora-russian-s42" in latency and " ms" in latency


# --------------------------------------------------------------------------- cost


def test_serving_cost_from_run_folders(experiment, tiny_model_dir):
    from peftsum.serving.cost import serving_cost

    cost = serving_cost(experiment)
    lora = cost["methods"]["lora"]
    base_mb = (tiny_model_dir / "model.safetensors").stat().st_size / 1e6
    adapters = sum((experiment / "runs" / r / "model" / "adapter_model.safetensors").stat().st_size / 1e6
                   for r in ("lora-english-s42", "lora-russian-s42"))
    assert lora["runs"] == 2 and sorted(lora["languages"]) == ["english", "russian"]
    assert lora["base_mb"] == pytest.approx(base_mb, abs=1e-3)
    assert lora["adapters_disk_mb"] == pytest.approx(base_mb + adapters, abs=2e-3)
    assert lora["merged_disk_mb"] == pytest.approx(2 * base_mb, abs=2e-3)
    assert lora["disk_ratio"] == pytest.approx(2 * base_mb / (base_mb + adapters), abs=1e-2)
    assert cost["full"]["runs"] == 1 and cost["full"]["merged_disk_mb"] > base_mb * 0.9
    assert set(cost["methods"]) == {"lora", "rslora", "dora"}


def test_command_line_mistakes_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from peftsum.cli import app
    from peftsum.errors import ConfigError
    from peftsum.serving.cost import serving_cost

    runner = CliRunner()
    for args, needle in ((["--adapter", "no-equals-sign"], "expected NAME=DIR"),
                         (["--adapters-from", str(tmp_path / "missing")], "is not a folder"),
                         (["--adapters-from", str(tmp_path)], "no trained PEFT run")):
        res = runner.invoke(app, ["serve", "--model", "tiny", *args], env={"COLUMNS": "400"})
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output
    with pytest.raises(ConfigError, match="no finished run"):
        serving_cost(tmp_path)
