"""peftsum's fast defaults give the plain pipeline's losses.

The fast path is what ``benchmarks/pipeline.py`` measures as peftsum: dynamic padding and length
grouping (``make_collator`` and the trainer's sampler), fused AdamW, mT5's ``gelu_new`` run as
one fused kernel (``load_model``), batched length-sorted generation, and bf16 autocast where the
run asks for it. The plain path is the benchmark's reference, the seed study's pipeline
(``benchmarks/_reference.py``): every article padded to 512 and every summary to 128 tokens, the
slow tokenizer, foreach AdamW, transformers' Python ``gelu_new``, fp32, plain ``Seq2SeqTrainer``.
Both run on the tiny mT5 and real bundled rows; dropout is off where a step must be
deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _reference as R  # noqa: E402

from peftsum.config import TrainConfig  # noqa: E402
from peftsum.training.trainer import build_trainer  # noqa: E402


def quiet(*_args, **_kwargs):
    """A ``log`` that drops progress lines."""


pytestmark = pytest.mark.usefixtures("one_thread")


def rows(n: int = 4) -> list[dict]:
    """Real rows from several languages (different lengths: some articles beyond 512 tokens)."""
    from peftsum.data.xlsum import load_split

    out = []
    for lang in ("english", "russian", "hindi", "chinese_simplified", "arabic", "turkish")[:n]:
        out.append(dict(load_split(lang, "train", "sample").rows[0], language=lang))
    return out


def test_slow_reference_tokenizer_gives_the_fast_tokenizer_ids(tiny_model_dir, tiny_tokenizer):
    """The benchmark's slow tokenizer (SentencePiece per text, in Python) is a faithful stand-in."""
    slow = R.slow_tokenizer(tiny_model_dir)
    texts = [r["text"] for r in rows(6)] + [r["summary"] for r in rows(6)]
    assert slow(texts, max_length=512, truncation=True)["input_ids"] == \
        tiny_tokenizer(texts, max_length=512, truncation=True)["input_ids"]
    assert slow.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>", "</s>", "<pad>"]) == \
        tiny_tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>", "</s>", "<pad>"])


def test_dynamic_padding_gives_the_padded_loss(tiny_model_dir, tiny_tokenizer):
    """Loss and per-token logits of a dynamically padded batch equal those of the 512/128 padded one."""
    from peftsum.data.features import make_collator, tokenize_rows
    from peftsum.modeling.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    model.eval()
    rs = rows(4)
    feats = [{k: v for k, v in f.items() if k in ("input_ids", "attention_mask", "labels")}
             for f in tokenize_rows(rs, tiny_tokenizer, max_source_length=512, max_target_length=84)]
    fast = make_collator(tiny_tokenizer, model)(feats)
    padded = {k: torch.tensor([f[k] for f in R.preprocess(rs, R.slow_tokenizer(tiny_model_dir))])
              for k in ("input_ids", "attention_mask", "labels")}
    assert padded["input_ids"].shape == (4, 512) and padded["labels"].shape == (4, 128)
    assert fast["input_ids"].shape[1] < 512 or fast["labels"].shape[1] < 128  # really less padding
    with torch.no_grad():
        a = model(**fast)
        b = model(**padded)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-5)
    t = fast["labels"].shape[1]
    real = fast["labels"] != -100
    assert (a.logits[real] - b.logits[:, :t][real]).abs().max().item() < 1e-4


def test_fused_activation_matches_gelu_new(tiny_model_dir, tiny_tokenizer):
    """``load_model`` swaps transformers' Python ``gelu_new`` for the fused kernel; outputs agree."""
    from transformers import AutoModelForSeq2SeqLM
    from transformers.activations import GELUTanh, NewGELUActivation

    from peftsum.modeling.load import load_model

    fast, _ = load_model(str(tiny_model_dir))
    plain = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir))
    acts = [type(m) for m in fast.modules() if isinstance(m, (GELUTanh, NewGELUActivation))]
    assert acts and set(acts) == {GELUTanh}
    assert any(isinstance(m, NewGELUActivation) for m in plain.modules())
    assert fast.config.dense_act_fn == plain.config.dense_act_fn == "gelu_new"  # saved checkpoints unchanged
    batch = tiny_tokenizer([r["text"] for r in rows(2)], max_length=128, truncation=True, padding=True,
                           return_tensors="pt")
    labels = tiny_tokenizer([r["summary"] for r in rows(2)], max_length=32, truncation=True, padding=True,
                            return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = fast.eval()(**batch, labels=labels)
        b = plain.eval()(**batch, labels=labels)
    assert (a.logits - b.logits).abs().max().item() < 1e-4
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)


def test_skinny_output_head_matches_linear(tiny_model_dir, tiny_tokenizer):
    """The decoding-step output projection ((W @ x.T).T for a few rows on CPU) equals F.linear;
    greedy decoding gives the same tokens as the plain model, and gradients still flow."""
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.modeling.load import SKINNY_ROWS, load_model

    fast, _ = load_model(str(tiny_model_dir))
    plain = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir))
    head = fast.get_output_embeddings()
    assert isinstance(head, torch.nn.Linear) and type(head) is not torch.nn.Linear
    assert set(fast.state_dict()) == set(plain.state_dict())
    for n in (1, 2, 8, SKINNY_ROWS, SKINNY_ROWS + 1, 100):
        x = torch.randn(n, head.in_features)
        assert (head(x) - torch.nn.functional.linear(x, head.weight)).abs().max().item() < 1e-5
        assert head(x.reshape(1, n, -1)).shape == (1, n, head.out_features)
    batch = tiny_tokenizer([r["text"] for r in rows(4)], max_length=128, truncation=True, padding=True,
                           return_tensors="pt")
    with torch.no_grad():
        a = fast.eval().generate(**batch, num_beams=1, do_sample=False, max_new_tokens=12)
        b = plain.eval().generate(**batch, num_beams=1, do_sample=False, max_new_tokens=12)
    assert torch.equal(a, b)
    fast.train()
    labels = torch.tensor([[5, 6], [7, 8], [9, 10], [11, 12]])  # 8 rows: the skinny path
    fast(**batch, labels=labels).loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_fused_adamw_makes_the_foreach_update():
    """Same parameters, same gradients: fused and foreach AdamW agree after several steps."""
    torch.manual_seed(0)
    init = [torch.randn(300, 64), torch.randn(64), torch.randn(1000, 64)]
    grads = [[torch.randn_like(p) for p in init] for _ in range(5)]
    out = {}
    for kind in ("foreach", "fused"):
        params = [torch.nn.Parameter(p.clone()) for p in init]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01, **{kind: True})
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        out[kind] = params
    for a, b in zip(out["foreach"], out["fused"]):
        assert (a - b).abs().max().item() < 1e-6
    assert (out["fused"][0] - init[0]).abs().max().item() > 1e-2  # the steps did move the weights


def test_trainer_defaults_are_the_fast_ones(tiny_model_dir, tmp_path):
    from transformers.training_args import OptimizerNames

    from peftsum.generation.decode import DEFAULT_BATCH_SIZE

    setup = build_trainer(TrainConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), max_steps=1,
                                      train_samples=4, val_samples=2), log=quiet)
    args = setup.trainer.args
    assert args.optim == OptimizerNames.ADAMW_TORCH_FUSED
    assert args.train_sampling_strategy == "group_by_length"
    assert setup.trainer.data_collator.padding == "longest"
    assert DEFAULT_BATCH_SIZE >= 32


def _peftsum_losses(model_dir, out, method: str, steps: int, batch: list[dict], **kw):
    """Losses of peftsum's trainer (its defaults) on one batch of rows, repeated ``steps`` times."""
    data = out.parent / f"{out.name}.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("id", "url", "title", "summary", "text")},
                                       ensure_ascii=False) + "\n" for r in batch), encoding="utf-8")
    cfg = TrainConfig(model=str(model_dir), method=method, data=str(data), output_dir=str(out), max_steps=steps,
                      batch_size=len(batch), lora_dropout=0.0, eval_steps=0, save_steps=10**6, **kw)
    setup = build_trainer(cfg, log=quiet)
    init = {k: v.detach().clone() for k, v in setup.trainer.model.named_parameters() if v.requires_grad}
    setup.trainer.train()
    return [r["loss"] for r in setup.trainer.state.log_history if "loss" in r], init


def _reference_losses(model_dir, out, method: str, steps: int, batch: list[dict], init: dict):
    """The seed study's pipeline on the same rows: padded 512/128, slow tokenizer, foreach AdamW, fp32."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if method == "lora":
        model = R.lora_model(model, dropout=0.0)
        with torch.no_grad():  # same adapter initialisation as peftsum's run
            named = dict(model.named_parameters())
            for k, v in init.items():
                named[k].copy_(v)
    args = R.training_args(str(out), method, len(batch), steps, logging_steps=1)
    trainer = R.make_trainer(model, R.slow_tokenizer(model_dir), batch, args)
    trainer.train()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fast_training_gives_the_reference_losses(no_dropout_dir, tmp_path, method):
    """Three optimizer steps on one batch: peftsum's fast defaults and the seed-study pipeline agree.

    One batch per step makes the batch order irrelevant (the loss is a mean over the batch's
    tokens), so any difference would come from padding, the optimizer or the activation.
    """
    batch = rows(4)
    fast, init = _peftsum_losses(no_dropout_dir, tmp_path / "fast", method, 3, batch)
    plain = _reference_losses(no_dropout_dir, tmp_path / "plain", method, 3, batch, init)
    assert len(fast) == len(plain) == 3
    # fp32: to float rounding. Where bf16 is on (PEFTSUM_BF16=1 in the test command's second pass) peftsum's side runs
    # in bf16 against the fp32 reference: measured 1.0-1.05e-4 apart, bf16's precision being 2**-8 per element
    from peftsum.runtime import resolve_bf16

    assert fast == pytest.approx(plain, rel=1e-3 if resolve_bf16(None) else 1e-4)
    assert fast[2] < fast[0]  # training moved


@pytest.mark.slow
def test_bf16_training_stays_within_bf16_tolerance_of_the_reference(no_dropout_dir, tmp_path):
    """Where bf16 is used (``--bf16``; fast on CPUs with AMX and on recent GPUs), the loss is the
    fp32 reference's to bf16 precision (~3 significant digits)."""
    batch = rows(4)
    fast, init = _peftsum_losses(no_dropout_dir, tmp_path / "bf16", "lora", 2, batch, bf16=True)
    plain = _reference_losses(no_dropout_dir, tmp_path / "plain", "lora", 2, batch, init)
    assert fast != plain
    assert fast == pytest.approx(plain, rel=2e-2)


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "prefix", "prompt"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_packed_head_loss_is_the_models_loss(no_dropout_dir, tiny_tokenizer, method, smoothing):
    """The trainer's loss (output head on target tokens only) equals the model's own padded loss,
    with its gradients; the logits it builds have one row per target token, not batch x length."""
    from peft import get_peft_model

    from peftsum.data.features import make_collator, tokenize_rows
    from peftsum.modeling.load import load_model
    from peftsum.modeling.methods import MethodHyper, build_peft_config, get_method
    from peftsum.training.loss import packed_head_loss

    torch.manual_seed(0)
    model, _ = load_model(str(no_dropout_dir))
    m = get_method(method)
    if m.build is not None:
        model = get_peft_model(model, build_peft_config(m, MethodHyper(lora_dropout=0.0)))
    model.train()
    feats = [{k: v for k, v in f.items() if k in ("input_ids", "attention_mask", "labels")}
             for f in tokenize_rows(rows(4), tiny_tokenizer, max_source_length=256, max_target_length=84)]
    batch = make_collator(tiny_tokenizer, model)(feats)
    n_targets = int((batch["labels"] != -100).sum())
    assert n_targets < batch["labels"].numel()  # the batch has padded target positions
    trainable = [p for p in model.parameters() if p.requires_grad]

    out = model(**batch)
    logits = out.logits
    plain = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                              label_smoothing=smoothing)  # torch's definition
    assert plain.item() == pytest.approx(out.loss.item(), rel=1e-6) or smoothing > 0
    plain_grads = torch.autograd.grad(plain, trainable)

    packed, pout = packed_head_loss(model, batch, smoothing)
    assert pout.logits is None  # T5's head and loss fused: no n x vocab logits kept (head_loss.py)
    packed_grads = torch.autograd.grad(packed, trainable)
    assert packed.item() == pytest.approx(plain.item(), rel=1e-5)
    for a, b in zip(packed_grads, plain_grads):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())
    assert any(g.abs().sum() > 0 for g in packed_grads)


def test_packed_head_is_off_where_the_model_adds_to_its_own_loss(tiny_model_dir, tmp_path):
    """AdaLoRA's orthogonality regulariser lives in the model's loss: its trainer keeps that loss."""
    from peftsum.modeling.methods import METHODS

    assert [name for name, m in METHODS.items() if not m.packed_head] == ["adalora"]
    for method, expected in (("lora", True), ("adalora", False)):
        setup = build_trainer(TrainConfig(model=str(tiny_model_dir), method=method, output_dir=str(tmp_path / method),
                                          max_steps=4, train_samples=4, val_samples=2), log=quiet)
        assert setup.trainer.packed_head is expected


def test_the_allocator_is_tuned_once_per_process(tmp_path):
    """glibc keeps freed memory for reuse in every process that loads a model; PEFTSUM_SYSTEM_MALLOC=1
    opts out. Run in fresh interpreters: the setting is process-wide."""
    import os
    import subprocess

    code = ("from peftsum.runtime import tune_cpu_allocator as t, _STATE; a = t(); b = t(); "
            "print(a, b, _STATE)")
    env = dict(os.environ)
    env.pop("PEFTSUM_SYSTEM_MALLOC", None)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(env, PEFTSUM_SYSTEM_MALLOC="1")).stdout
    import platform

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert on.split()[:2] == ([str(glibc)] * 2)
    assert off.split()[:2] == ["False", "False"]


@pytest.mark.parametrize("command,expected", [("train", "10000"), ("experiment", "10000"), ("evaluate", "None")])
def test_training_commands_shorten_openmp_spinning_before_torch_loads(command, expected):
    """`peftsum train` / `experiment` set GOMP_SPINCOUNT before torch (and libgomp) load; `evaluate` (decoding is
    faster with libgomp's default) does not; a user's own value, and a process that imported torch first, are left
    alone. Fresh interpreters: libgomp reads the setting once per process."""
    import os
    import subprocess

    code = ("import os, sys; sys.argv = ['peftsum', sys.argv[1], '--help']\n"
            "from peftsum import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('SPIN', os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.split("SPIN")[-1].split()[0] == expected
    mine = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, check=True,
                          env=dict(env, GOMP_SPINCOUNT="5")).stdout
    assert mine.split("SPIN")[-1].split()[0] == "5"
    late = ("import torch, os\nfrom peftsum.runtime import tune_openmp_spin\n"
            "print(tune_openmp_spin(), os.environ.get('GOMP_SPINCOUNT'))")
    assert subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, env=env,
                          check=True).stdout.split() == ["False", "None"]


def test_bf16_auto_is_off_where_onednn_is_capped_below_bf16(monkeypatch):
    """``ONEDNN_MAX_CPU_ISA=AVX2`` on a bf16 CPU makes bf16 matmuls emulated; auto precision then picks fp32.

    The premise is checked for real in a fresh process: with the cap, a 384-square bf16 ``torch.mm``
    is slower than the fp32 one (on an AMX Xeon: ~1 GFLOP/s against ~130; on an AVX2-only CPU bf16
    is emulated anyway), and there ``bf16_is_fast()`` says no.
    """
    from peftsum.runtime import bf16_is_fast, onednn_caps_bf16

    for cap in ("AVX2", "avx2", "AVX512_CORE", "AVX2_VNNI_2", "SSE41"):
        assert onednn_caps_bf16(cap), cap
    for cap in ("", "ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2"):
        assert not onednn_caps_bf16(cap), cap
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name for the same cap
    assert not bf16_is_fast({"amx_bf16"}, cuda=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not bf16_is_fast({"amx_bf16", "avx512_bf16"}, cuda=False)
    assert bf16_is_fast(set(), cuda=True)  # the cap is oneDNN's, on CPUs
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert bf16_is_fast({"amx_bf16"}, cuda=False)

    probe = ("import time, torch\n"
             "from peftsum.runtime import bf16_is_fast\n"
             "def t(dt):\n"
             "    a = torch.randn(384, 384, dtype=dt); a @ a\n"
             "    s = time.perf_counter(); a @ a; return time.perf_counter() - s\n"
             "print(t(torch.bfloat16) > t(torch.float32), bf16_is_fast(cuda=False))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True,
                         timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stdout + out.stderr


def test_bf16_auto_follows_the_hardware(tiny_model_dir, tmp_path, monkeypatch):
    """``bf16`` unset = auto: on with native bf16 (GPU, AMX/AVX512-BF16 CPU flags), off elsewhere;
    an explicit value and ``--fp16`` win; the resolved config records a plain bool."""
    from peftsum.runtime import PRECISION_ENV, bf16_is_fast, cpu_flags

    monkeypatch.delenv(PRECISION_ENV, raising=False)  # auto itself (the suite pins fp32 through it)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    from peftsum.training.trainer import resolve

    assert bf16_is_fast({"avx2", "amx_bf16"}, cuda=False) and bf16_is_fast({"avx512_bf16"}, cuda=False)
    assert not bf16_is_fast({"avx2", "fma", "avx512f"}, cuda=False)
    assert bf16_is_fast(set(), cuda=True)
    here = bf16_is_fast()
    assert here == (torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                    or bool({"amx_bf16", "avx512_bf16"} & cpu_flags()))
    base = dict(model=str(tiny_model_dir), output_dir=str(tmp_path / "r"), max_steps=1)
    assert resolve(TrainConfig(**base)).bf16 is here
    assert resolve(TrainConfig(**base, bf16=False)).bf16 is False
    assert resolve(TrainConfig(**base, bf16=True)).bf16 is True
    assert resolve(TrainConfig(**base, fp16=True)).bf16 is False


def test_fast_dropout_has_nn_dropouts_distribution():
    """FastDropout keeps each element with probability 1 - p, scales survivors so the expectation is
    unchanged, back-propagates through the same mask, is seeded by the global generator, and is the
    identity in evaluation. (The mask is another draw than nn.Dropout's, and p is rounded to a
    multiple of 2**-16: 0.1 -> 6554/65536, so survivors are scaled by 65536/58982 = 1.11112 where
    nn.Dropout uses 1/0.9 = 1.11111; ``fast_paths.keep_mask``.)"""
    from peftsum.modeling.load import fast_dropout

    model = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Dropout(0.0), torch.nn.Identity())
    assert fast_dropout(model) == 2
    drop = model[0]
    assert isinstance(drop, torch.nn.Dropout) and type(drop) is not torch.nn.Dropout
    x = torch.rand(1_000_000) + 0.5  # no zeros of its own
    x.requires_grad_()
    torch.manual_seed(0)
    y = drop.train()(x)
    keep = y != 0
    # binomial: sd of the kept share = sqrt(0.9 * 0.1 / 1e6) = 3e-4, so +-0.003 is 10 sd
    assert abs(keep.float().mean().item() - 0.9) < 3e-3
    scale = 65536 / (65536 - 6554)
    assert abs(scale * 0.9 - 1) < 1e-5
    assert torch.allclose(y[keep], x[keep] * scale, rtol=1e-6, atol=0)
    y.sum().backward()
    assert torch.allclose(x.grad, keep.float() * scale, rtol=1e-6, atol=0)
    assert abs(y.detach().mean().item() / x.detach().mean().item() - 1) < 3e-3  # the expectation is kept
    torch.manual_seed(0)
    assert torch.equal(drop(x.detach()), y.detach())  # same seed, same mask
    assert torch.equal(drop.eval()(x.detach()), x.detach())
    plain = torch.nn.Dropout(0.1).train()
    assert abs((plain(x.detach()) != 0).float().mean().item() - 0.9) < 3e-3  # the same distribution


def test_training_models_get_fast_dropout(tiny_model_dir, tmp_path):
    """build_trainer swaps the model's and LoRA's dropout modules (after PEFT wrapped the model)."""
    setup = build_trainer(TrainConfig(model=str(tiny_model_dir), method="lora", output_dir=str(tmp_path / "r"),
                                      max_steps=1, train_samples=4, val_samples=2), log=quiet)
    drops = [(n, type(m).__name__) for n, m in setup.trainer.model.named_modules()
             if isinstance(m, torch.nn.Dropout)]
    assert any("lora_dropout" in n for n, _ in drops) and any("lora" not in n for n, _ in drops)
    assert {t for n, t in drops if "lora_dropout" not in n} == {"FastDropout"}
    assert {t for n, t in drops if "lora_dropout" in n} == {"LoraInputDropout"}  # a FastDropout (subclass)
