"""Load test of ``peftsum serve`` on loopback: one adapter vs mixed traffic over k adapters vs k merged models.

Usage (from the repository root):

    .venv/bin/python benchmarks/serving.py --model tiny --requests 40 --concurrency 1,8 \\
        --adapters 2,8,45 --merged-max 8 --max-new-tokens 20 --markdown out.md
    .venv/bin/python benchmarks/serving.py --model bench-mt5-small --memory-only --adapters 2,8,45

What it does:

1. Writes ``max(--adapters)`` LoRA adapters (r=8, lora_alpha 16, q,v: peftsum's LoRA defaults)
   of the base's shape with random, non-zero weights (``init_lora_weights=False``; seed = index),
   one per XL-Sum language, as run folders of an experiment (``runs/<name>/model``).
2. Starts one ``peftsum serve`` process with no adapter, warms it up and reads its resident
   memory (RSS), then hot-loads adapters (``POST /adapters``) up to each k and reads RSS again.
3. (c) Merges the first k adapters into standalone models (``merge_and_unload``) and starts one
   ``peftsum serve`` per merged model, where k <= ``--merged-max`` and the free memory allows;
   their RSS is summed.
4. Sends ``--requests`` requests of real bundled articles (each in its adapter's language) per
   setup from ``--concurrency`` client threads: (a) one adapter, (b) requests spread evenly over
   k adapters of the one server, (c) the same spread over the k merged processes (each request
   to the process of its adapter). The setups take turns in ``--rounds`` rounds (rotated) so a
   shared machine's load falls on all of them alike. Reports p50/p95 latency, summaries/s (over
   the summed wall time of the rounds) and the mean batch size the server formed.

Every request decodes exactly ``--max-new-tokens`` tokens (``min_new_tokens`` = the same), so the
work per request is the same in every setup. Nothing here is product code: the server is the
product's own ``peftsum serve`` command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_model(name: str) -> Path:
    """``tiny`` = peftsum's offline tiny mT5; ``bench-mt5-small`` = the benchmarks' random mT5-small; else a folder."""
    if name == "tiny":
        from peftsum.modeling.tiny import ensure_tiny_model

        return Path(ensure_tiny_model())
    if name == "bench-mt5-small":
        from _common import build_model_dir, default_model_dir

        return build_model_dir(default_model_dir())
    return Path(name)


def write_adapters(base: Path, k: int, out: Path, rank: int = 8) -> list[tuple[str, str, Path]]:
    """``k`` random LoRA adapters of ``base``'s shape as run folders: ``[(name, language, run_dir)]``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from peftsum.languages import LANGUAGES
    from peftsum.modeling.load import load_model
    from peftsum.serving.registry import share_weights

    model, _ = load_model(str(base))
    langs = list(LANGUAGES)
    made = []
    for i in range(k):
        lang = langs[i % len(langs)]
        name = f"lora-{lang}-{i}"
        run = out / "runs" / name
        if not (run / "model" / "adapter_config.json").is_file():
            torch.manual_seed(i)
            cfg = LoraConfig(task_type="SEQ_2_SEQ_LM", r=rank, lora_alpha=2 * rank, target_modules=["q", "v"],
                             init_lora_weights=False)
            peft_model = get_peft_model(share_weights(model), cfg)
            with torch.no_grad():  # keep the update small: summaries change, the model stays sane
                for n, p in peft_model.named_parameters():
                    if "lora_B" in n:
                        p.mul_(0.05)
            peft_model.save_pretrained(str(run / "model"))
            (run / "peftsum_config.json").write_text(json.dumps({"method": "lora", "languages": [lang],
                                                                  "max_source_length": 512}))
        made.append((name, lang, run))
    return made


def merge_adapter(base: Path, run: Path, out: Path) -> Path:
    """A standalone merged model (weights + tokenizer) of ``run``'s adapter on ``base``."""
    if (out / "config.json").is_file():
        return out
    from peft import PeftModel

    from peftsum.modeling.load import load_model, load_tokenizer

    model, _ = load_model(str(base))
    merged = PeftModel.from_pretrained(model, str(run / "model")).merge_and_unload()
    merged.save_pretrained(str(out))
    load_tokenizer(str(base)).save_pretrained(str(out))
    return out


class Server:
    """One ``peftsum serve`` subprocess on a free loopback port."""

    def __init__(self, model: Path, threads: int | None, extra: list[str] = ()):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, "-m", "peftsum", "serve", "--model", str(model), "--port",
                                      str(self.port), "--max-resident-mb", "100000", *extra],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 600) -> "Server":
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 1e6

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load_test(targets: list[tuple[str, str, str]], articles: list[str], n: int, concurrency: int,
              params: dict, offset: int = 0) -> dict:
    """Send ``n`` requests round-robin over ``targets`` = ``[(url, adapter_id, language)]`` from ``concurrency`` threads.

    Request ``i`` carries ``articles[i % len(articles)]`` whatever its target, so every setup decodes
    the same articles in the same order (only the adapter changes).

    Returns:
        ``{"latencies": [s], "batches": [batch size per request], "errors": int, "wall_s": float}``.
    """
    import httpx

    lock = threading.Lock()
    todo = list(range(offset, offset + n))
    latencies: list[float] = []
    batches: list[int] = []
    errors = [0]

    def worker():
        with httpx.Client(timeout=600) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                url, adapter, _ = targets[i % len(targets)]
                body = {"inputs": articles[i % len(articles)], "parameters": {"adapter_id": adapter, **params}}
                t0 = time.perf_counter()
                res = client.post(url + "/generate", json=body)
                dt = time.perf_counter() - t0
                with lock:
                    if res.status_code == 200:
                        latencies.append(dt)
                        batches.append(res.json()["details"]["batch_size"])
                    else:
                        errors[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "batches": batches, "errors": errors[0], "wall_s": time.perf_counter() - start}


def summarize(runs: list[dict], concurrency: int) -> dict:
    """p50/p95 latency (ms), summaries/s (successes over summed wall time), mean batch, errors of several rounds."""
    lat = sorted(x for r in runs for x in r["latencies"])
    batches = [b for r in runs for b in r["batches"]]
    wall = sum(r["wall_s"] for r in runs)
    q = (lambda p: round(lat[min(int(p * len(lat)), len(lat) - 1)] * 1000, 1)) if lat else (lambda p: None)
    return {"requests": len(lat) + sum(r["errors"] for r in runs), "concurrency": concurrency,
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None, "p95_ms": q(0.95),
            "summaries_per_s": round(len(lat) / wall, 2) if wall else None, "errors": sum(r["errors"] for r in runs),
            "mean_batch": round(statistics.mean(batches), 2) if batches else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny, bench-mt5-small or a model folder")
    ap.add_argument("--requests", type=int, default=400, help="requests per setup and concurrency")
    ap.add_argument("--rounds", type=int, default=4, help="the setups take turns in this many rounds")
    ap.add_argument("--concurrency", type=_ints, default=[1, 8, 32])
    ap.add_argument("--adapters", type=_ints, default=[2, 8, 45])
    ap.add_argument("--merged-max", type=int, default=8, help="largest k run as k merged processes (0 = none)")
    ap.add_argument("--num-beams", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=84)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS per server process")
    ap.add_argument("--memory-only", action="store_true", help="only the resident-memory measurement")
    ap.add_argument("--workdir", default=None, help="where adapters and merged models go (default: a temp folder)")
    ap.add_argument("--markdown", default=None, help="write the result tables to this file")
    ap.add_argument("--json", default=None, help="write the raw results to this file")
    args = ap.parse_args(argv)

    import psutil

    from peftsum.data.xlsum import load_split

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = resolve_model(args.model)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="peftsum-serving-bench-"))
    ks = sorted(set(args.adapters))
    t0 = time.perf_counter()
    adapters = write_adapters(base, max(ks), work / "exp")
    print(f"{len(adapters)} adapters written in {time.perf_counter() - t0:.0f} s ({work})", flush=True)
    by_lang = {}
    for _, lang, _ in adapters:
        if lang not in by_lang:
            rows = load_split(lang, "validation", "sample").rows + load_split(lang, "train", "sample").rows
            by_lang[lang] = [r["text"] for r in rows]
    # one article per language in turn: real bundled articles of every adapter's language
    articles = [texts[j] for j in range(max(len(t) for t in by_lang.values()))
                for texts in by_lang.values() if j < len(texts)]
    params = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
              "min_new_tokens": args.max_new_tokens}
    results = {"model": str(base), "params": params, "memory": [], "load": [], "machine": {
        "cpus": os.cpu_count(), "torch_threads": args.threads or "default",
        "load_average_start": [round(x, 2) for x in os.getloadavg()]}}

    import httpx

    warm = {**params, "max_new_tokens": 4, "min_new_tokens": 4}
    first_lang = adapters[0][1]
    servers: list[Server] = []
    try:
        server = Server(base, args.threads, ["--max-batch", str(args.max_batch), "--window-ms", str(args.window_ms)])
        servers.append(server.wait())
        httpx.post(server.url + "/generate", timeout=600, json={"inputs": articles[0], "parameters": warm})
        base_rss = server.rss_mb()
        results["memory"].append({"setup": "base alone", "k": 0, "rss_mb": round(base_rss, 1), "ratio": 1.0})
        loaded = 0
        for k in ks:
            for name, _, run in adapters[loaded:k]:
                res = httpx.post(server.url + "/adapters", json={"name": name, "path": str(run)}, timeout=600)
                res.raise_for_status()
            loaded = k
            httpx.post(server.url + "/generate", timeout=600, json={
                "inputs": articles[0], "parameters": {**warm, "adapter_id": adapters[0][0]}})
            rss = server.rss_mb()
            results["memory"].append({"setup": f"base + {k} adapters, 1 process", "k": k, "rss_mb": round(rss, 1),
                                      "ratio": round(rss / base_rss, 3)})
            print(results["memory"][-1], flush=True)
        setups = [] if args.memory_only else [("(a) one adapter", 1, [(server.url, adapters[0][0], first_lang)])]
        if not args.memory_only:
            setups += [(f"(b) mixed over {k} adapters", k, [(server.url, n, lang) for n, lang, _ in adapters[:k]])
                       for k in ks]
        merged_ks = [k for k in ks if k <= args.merged_max]
        if merged_ks:
            kmax = max(merged_ks)
            need = kmax * base_rss * 1.2
            if need > psutil.virtual_memory().available * 0.8:
                print(f"(c) skipped: {kmax} merged processes need ~{need:.0f} MB", flush=True)
            else:
                merged_dirs = [merge_adapter(base, run, work / "merged" / name) for name, _, run in adapters[:kmax]]
                merged = [Server(m, args.threads, ["--max-batch", str(args.max_batch), "--window-ms",
                                                   str(args.window_ms)]) for m in merged_dirs]
                servers += merged
                for s in merged:
                    s.wait()
                    httpx.post(s.url + "/generate", timeout=600, json={"inputs": articles[0], "parameters": warm})
                for k in merged_ks:
                    rss = sum(s.rss_mb() for s in merged[:k])
                    results["memory"].append({"setup": f"{k} merged models, {k} processes", "k": k,
                                              "rss_mb": round(rss, 1), "ratio": round(rss / base_rss, 3)})
                    print(results["memory"][-1], flush=True)
                    if not args.memory_only:
                        setups.append((f"(c) {k} merged models", k,
                                       [(s.url, "__base__", lang) for s, (_, lang, _) in zip(merged, adapters[:k])]))
        # the setups take turns, round by round (rotated), so that a shared machine's noise hits all alike
        per_round = max(args.requests // args.rounds, 1)
        for c in args.concurrency:
            collected: dict[str, list] = {label: [] for label, _, _ in setups}
            for r in range(args.rounds):
                order = setups[r % len(setups):] + setups[:r % len(setups)] if setups else []
                for label, _, targets in order:
                    collected[label].append(load_test(targets, articles, per_round, c, params, offset=r * per_round))
            for label, k, _ in setups:
                results["load"].append({"setup": label, "k": k, **summarize(collected[label], c)})
                print(results["load"][-1], flush=True)
    finally:
        for s in servers:
            s.stop()
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    text = render(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def render(results: dict) -> str:
    """The result tables in Markdown."""
    lines = [f"model: `{results['model']}`; decoding: {results['params']}; machine: {results['machine']}", "",
             "| memory setup | RSS (MB) | x base alone |", "| --- | ---: | ---: |"]
    lines += [f"| {m['setup']} | {m['rss_mb']:.0f} | {m['ratio']:.3f} |" for m in results["memory"]]
    if results["load"]:
        lines += ["", "| traffic | concurrency | requests | p50 (ms) | p95 (ms) | summaries/s | mean batch | errors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in sorted(results["load"], key=lambda r: (r["concurrency"], r["setup"][:3], r["k"])):
            lines.append(f"| {r['setup']} | {r['concurrency']} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | "
                         f"{r['summaries_per_s']} | {r['mean_batch']} | {r['errors']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
