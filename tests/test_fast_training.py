"""The training fast paths of issue #11 give the plain path's numbers.

- peftsum's attention (``peftsum.modeling.attention``) against transformers' SDPA attention on
  the tiny mT5 with real rows: with an attention dropout that drops nothing (p = 1e-9 rounds to 0
  of 65,536 levels) the training path runs and its loss and gradients must equal SDPA's in fp32 and
  stay within bf16 rounding under bf16 autocast (there the scores come from a bf16 matmul, as in
  transformers' eager T5 attention, where SDPA's math path upcasts Q, K and V to fp32); the bias mask is built once per stack.
- One embedding lookup for encoder and decoder (``training.loss.one_lookup``) gives the two
  lookups' loss and embedding gradient.
- The trainer switches the model to peftsum's attention, and no checkpoint records it.
- bf16 weights for decoding (``load_for_inference(bf16=True)``).
- The fused head loss (``training.head_loss``) equals ``cross_entropy`` of the head's logits, alone
  and inside the trainer's packed loss, in fp32 and under bf16 autocast.
Runs the same on AVX2-only and AMX machines (bf16 is forced where a test needs it; slow there
only in speed).
"""

from __future__ import annotations

import json

import pytest
import torch

from peftsum.config import TrainConfig
from peftsum.modeling.attention import NAME, use_fast_attention
from peftsum.modeling.load import load_model
from peftsum.training.trainer import build_trainer


def quiet(*_args, **_kwargs):
    """A ``log`` that drops progress lines."""


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(tokenizer):
    """Four real rows of four scripts, padded (two articles beyond the 128-token cut)."""
    from peftsum.data.xlsum import load_split

    rows = [load_split(lang, "train", "sample").rows[0] for lang in ("english", "russian", "hindi", "arabic")]
    enc = tokenizer([r["text"] for r in rows], max_length=128, truncation=True, padding=True, return_tensors="pt")
    labels = tokenizer(text_target=[r["summary"] for r in rows], max_length=32, truncation=True, padding=True,
                       return_tensors="pt")["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    return dict(enc, labels=labels)


def attention_dropout(model, p: float) -> None:
    """Set every attention module's probability dropout to ``p`` and the model's other dropouts to 0."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
        elif hasattr(mod, "relative_attention_num_buckets"):  # an (m)T5 attention module
            mod.dropout = p


def loss_and_grads(model, inputs, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**inputs).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("bf16,checkpointing", [(False, False), (True, False), (False, True)])
def test_fast_attention_gives_sdpa_loss_and_gradients(tiny_model_dir, tiny_tokenizer, bf16, checkpointing):
    from transformers.integrations import sdpa_attention

    model, _ = load_model(str(tiny_model_dir))
    inputs = batch(tiny_tokenizer)
    attention_dropout(model, 1e-9)  # > 0: the training path runs; rounds to dropping nothing
    model.train()
    if checkpointing:  # each layer recomputed in backward: the bias mask is built per layer, not reused
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.config._attn_implementation == NAME  # load_model switches T5 models to peftsum's attention
    model.set_attn_implementation("sdpa")  # transformers' own, for the plain run
    plain_loss, plain = loss_and_grads(model, inputs, bf16)
    built = []
    real = sdpa_attention.create_position_bias_mask
    def spy(*a, **k):  # records whether each call built a new mask (not the bias itself: nothing to add)
        out = real(*a, **k)
        built.append(out is not a[0])
        return out

    sdpa_attention.create_position_bias_mask = spy
    try:
        assert use_fast_attention(model)
        assert model.config._attn_implementation == NAME and model.encoder.config._attn_implementation == NAME
        fast_loss, fast = loss_and_grads(model, inputs, bf16)
    finally:
        sdpa_attention.create_position_bias_mask = real
    layers = model.config.num_layers + 2 * model.config.num_decoder_layers  # every attention call
    if checkpointing:  # every layer, forward and recomputation; with the kernel the encoder's and the cross-
        # attention's layers take the bias and a key mask instead (peftsum.modeling.attention._kernel_masks)
        from peftsum.modeling import cpu_kernel

        per_layer = model.config.num_decoder_layers if cpu_kernel._library() is not None else layers
        assert len(built) == 2 * per_layer
    else:  # once per stack and kind (encoder self, decoder self, cross), not per layer
        assert sum(built) <= 3 and len(built) < layers
    assert fast.keys() == plain.keys()
    if not bf16:  # the same operations in fp32
        assert fast_loss == pytest.approx(plain_loss, rel=1e-6)
        for name, g in plain.items():
            assert torch.allclose(fast[name], g, rtol=1e-4, atol=1e-6), name
    else:  # bf16 rounding of the attention probabilities: 2**-8 relative per element
        assert fast_loss == pytest.approx(plain_loss, rel=1e-2)
        num = sum((fast[n] - g).pow(2).sum() for n, g in plain.items()).sqrt()
        den = sum(g.pow(2).sum() for g in plain.values()).sqrt()
        assert (num / den).item() < 0.05


def test_fast_attention_drops_attention_probabilities_in_training_only(tiny_model_dir, tiny_tokenizer):
    """With p = 0.5 training losses change from draw to draw; in eval mode SDPA runs, deterministic."""
    model, _ = load_model(str(tiny_model_dir))
    inputs = batch(tiny_tokenizer)
    attention_dropout(model, 0.5)
    use_fast_attention(model)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(**inputs).loss.item()
        b = model(**inputs).loss.item()
        torch.manual_seed(0)
        assert model(**inputs).loss.item() == a  # seeded by the global generator
        model.eval()
        c, d = model(**inputs).loss.item(), model(**inputs).loss.item()
        model.set_attn_implementation("sdpa")
        e = model(**inputs).loss.item()
    assert a != b and c == d == pytest.approx(e, rel=1e-6)


def test_one_lookup_gives_two_lookups_gradient(tiny_model_dir, tiny_tokenizer):
    from peftsum.training.loss import one_lookup, packed_head_loss

    model, _ = load_model(str(tiny_model_dir))
    attention_dropout(model, 0.0)
    model.train()
    inputs = batch(tiny_tokenizer)
    kwargs = {"input_ids": inputs["input_ids"], "decoder_input_ids": inputs["input_ids"][:, :5]}
    assert one_lookup(model, kwargs) and set(kwargs) == {"inputs_embeds", "decoder_inputs_embeds"}
    loss, _ = packed_head_loss(model, inputs)  # one lookup inside
    loss.backward()
    fast = model.shared.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    plain = model(**inputs).loss  # the model's own two lookups
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    assert torch.allclose(fast, model.shared.weight.grad, rtol=1e-4, atol=1e-7)
    for p in model.parameters():  # frozen embeddings (PEFT methods) keep the model's own lookups
        p.requires_grad_(False)
    assert not one_lookup(model, {"input_ids": inputs["input_ids"], "decoder_input_ids": inputs["input_ids"]})


def test_trainer_trains_with_fast_attention_and_saves_plain_config(tiny_model_dir, tmp_path, monkeypatch):
    """...and clips with peftsum's clipping (one process, CPU gradients), whose norm it logs."""
    from peftsum.training import clipping
    from peftsum.training.trainer import run_training

    norms = []
    plain = clipping.clip_gradients
    monkeypatch.setattr(clipping, "clip_gradients", lambda *a: norms.append(plain(*a)) or norms[-1])
    setup = build_trainer(TrainConfig(model=str(tiny_model_dir), method="full", output_dir=str(tmp_path / "r"),
                                      max_steps=2, train_samples=4, val_samples=2, eval_steps=0), log=quiet)
    assert setup.trainer.model.config._attn_implementation == NAME
    run_training(setup, log=quiet)
    logged = [r["grad_norm"] for r in setup.trainer.state.log_history if "grad_norm" in r]
    assert len(norms) == 2 and logged and logged[-1] == pytest.approx(float(norms[-1]))
    saved = json.loads((tmp_path / "r" / "model" / "config.json").read_text())
    assert NAME not in json.dumps(saved)  # runtime state only: the checkpoint loads anywhere
    from transformers import AutoModelForSeq2SeqLM

    assert AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "r" / "model")).config._attn_implementation == "sdpa"


def test_bf16_weights_for_decoding(tiny_model_dir, tiny_tokenizer):
    from peftsum.generation.decode import GenerationSettings, generate_summaries
    from peftsum.modeling.load import load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir), "cpu", bf16=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    texts = ["Одна статья о погоде в Москве.", "An article about the weather."]
    out = generate_summaries(model, tok, texts, GenerationSettings(num_beams=1, max_new_tokens=6), progress=False,
                             bf16=True)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    fp32, _ = load_for_inference(str(tiny_model_dir), "cpu")
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    for (name, a), b in zip(model.named_parameters(), fp32.parameters()):  # the same weights, rounded
        assert torch.equal(a, b.to(torch.bfloat16)), name


def _lora_losses(model_dir, tmp_path, name, frozen_bf16: bool, monkeypatch, lora_dropout: float = 0.0):
    """Losses of 3 LoRA steps under bf16 autocast, with the frozen base stored in bf16 or not, and
    (dtype of a frozen q weight during training, the model after training)."""
    from transformers import TrainerCallback

    from peftsum.training import trainer as T

    monkeypatch.setattr(T, "_frozen_base_in_bf16", lambda cfg, method: frozen_bf16 and bool(cfg.bf16))
    setup = build_trainer(TrainConfig(model=str(model_dir), method="lora", output_dir=str(tmp_path / name),
                                      max_steps=3, train_samples=6, val_samples=2, batch_size=2,
                                      lora_dropout=lora_dropout,
                                      eval_steps=0, save_steps=10**6, bf16=True), log=quiet)
    seen = {}

    class Peek(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            base = model.get_base_model()
            seen["q"] = base.encoder.block[0].layer[0].SelfAttention.q.base_layer.weight.dtype
            seen["head"] = base.lm_head.weight.dtype
            seen["embedding"] = base.shared.weight.dtype
            seen["input cast"] = base.encoder.block[0].layer[0].SelfAttention.q.cast_input_dtype_enabled

    setup.trainer.add_callback(Peek())
    setup.trainer.train()
    return [r["loss"] for r in setup.trainer.state.log_history if "loss" in r], seen, setup.trainer.model


def test_frozen_base_in_bf16_gives_autocasts_losses_and_is_restored(no_dropout_dir, tmp_path, monkeypatch):
    """Storing the frozen Linear weights in bf16 is what autocast computes anyway: the same losses
    (exactly: autocast rounds fp32 weights to bf16 the same way), and after training every weight is
    the loaded fp32 value again."""
    plain, seen_plain, _ = _lora_losses(no_dropout_dir, tmp_path, "plain", False, monkeypatch)
    fast, seen_fast, model = _lora_losses(no_dropout_dir, tmp_path, "fast", True, monkeypatch)
    assert seen_plain == {"q": torch.float32, "head": torch.float32, "embedding": torch.float32, "input cast": True}
    assert seen_fast["q"] == torch.bfloat16 and seen_fast["embedding"] == torch.float32
    assert not seen_fast["input cast"]  # PEFT's upcast of the LoRA input off while training (frozen_bf16.py)
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_A"))  # and back on
    # the tiny mT5 ties its head to the input embedding: a tied head stays fp32 (it is also the embedding)
    base = model.get_base_model()
    assert seen_fast["head"] == (torch.float32 if base.lm_head.weight is base.shared.weight else torch.bfloat16)
    assert fast == plain and len(fast) == 3
    # with LoRA's input dropout (peftsum's kernel, bf16 input without PEFT's upcast): the same losses too
    drop_plain, _, _ = _lora_losses(no_dropout_dir, tmp_path, "plain-dropout", False, monkeypatch, 0.1)
    drop_fast, _, _ = _lora_losses(no_dropout_dir, tmp_path, "fast-dropout", True, monkeypatch, 0.1)
    assert drop_fast == drop_plain and drop_fast != fast
    loaded, _ = load_model(str(no_dropout_dir))
    after = dict(base.named_parameters())
    for name, p in loaded.named_parameters():
        key = name if name in after else name.replace(".weight", ".base_layer.weight")
        assert after[key].dtype == torch.float32 and torch.equal(after[key], p), name


def test_keep_masks_leave_extreme_p_to_pytorch():
    """p above MAX_P would round to dropping every element (and divide by zero): FastDropout uses nn.Dropout's
    kernel there; p below 2**-17 rounds to dropping nothing (documented)."""
    from peftsum.modeling.fast_paths import MAX_P, fast_dropout, keep_mask

    model = torch.nn.Sequential(torch.nn.Dropout(0.999999))
    assert 0.999999 > MAX_P and fast_dropout(model) == 1
    x = torch.ones(10_000)
    assert (model.train()(x) != 0).sum() < 10  # nn.Dropout's own draw: ~0.01 survivors expected
    keep, scale = keep_mask((10_000,), 1e-9)
    assert bool(keep.all()) and scale == 1.0


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_head_loss_is_cross_entropy(monkeypatch, smoothing, frozen):
    """head_cross_entropy equals torch's cross_entropy of the head's logits, value and gradients, in
    fp32 (to float rounding) and under bf16 autocast (to bf16 rounding: the plain path rounds the
    logits to bf16 at the same place), over several row blocks and with a loss scale that is not 1
    (gradient accumulation scales the loss); a frozen weight (PEFT methods) goes through the vocabulary
    by blocks of rows on CPU (here 4 blocks of at most 300 rows, the last partial)."""
    import torch.nn.functional as F

    from peftsum.modeling import cpu_kernel
    from peftsum.training import head_loss

    monkeypatch.setattr(head_loss, "ROW_BYTES", 4 * 1000 * 3)  # blocks of 3 rows: 10 rows = 4 blocks
    monkeypatch.setattr(cpu_kernel, "HEAD_BLOCK_ROWS", 300)
    blocked = []
    by_blocks = cpu_kernel.frozen_head_cross_entropy
    monkeypatch.setattr(cpu_kernel, "frozen_head_cross_entropy", lambda *a, **k: blocked.append(1) or by_blocks(*a, **k))
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 32, generator=g, requires_grad=True)
    weight = (0.3 * torch.randn(1000, 32, generator=g)).requires_grad_(not frozen)
    target = torch.randint(0, 1000, (10,), generator=g)
    inputs = (hidden,) if frozen else (hidden, weight)
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            plain = F.cross_entropy(F.linear(hidden, weight).float(), target, label_smoothing=smoothing)
            fused = head_loss.head_cross_entropy(hidden, weight, target, smoothing)
        grads_plain = torch.autograd.grad(0.37 * plain, inputs)
        grads_fused = torch.autograd.grad(0.37 * fused, inputs)
        assert fused.dtype == torch.float32
        assert fused.item() == pytest.approx(plain.item(), rel=1e-6 if not bf16 else 1e-4)
        for a, b in zip(grads_fused, grads_plain):
            assert a.dtype == b.dtype == torch.float32
            assert ((a - b).norm() / b.norm()).item() < (1e-5 if not bf16 else 1e-2)
    assert len(blocked) == (2 if frozen and cpu_kernel.available() else 0)  # the blocks ran for the frozen head


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fused_head_in_the_packed_loss_gives_the_plain_heads_loss(tiny_model_dir, tiny_tokenizer, monkeypatch, method):
    """On the tiny mT5 and real rows under bf16 autocast, the trainer's loss with the fused head equals
    the packed loss with the head's logits and cross_entropy (within bf16 rounding), gradients too."""
    from peft import get_peft_model

    from peftsum.modeling.methods import MethodHyper, build_peft_config, get_method
    from peftsum.training import loss as L

    model, _ = load_model(str(tiny_model_dir))
    attention_dropout(model, 0.0)
    if method != "full":
        model = get_peft_model(model, build_peft_config(get_method(method), MethodHyper(lora_dropout=0.0)))
    model.train()
    inputs = batch(tiny_tokenizer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    results = {}
    for fused in (True, False):  # peftsum's default (fused here: a T5 head in one process), then the plain head
        if not fused:
            monkeypatch.setattr(L, "fused_head_applies", lambda base, head: False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, out = L.packed_head_loss(model, inputs, 0.1)
        assert (out.logits is None) == fused
        results[fused] = (loss.item(), torch.autograd.grad(loss, trainable))
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-3)
    for a, b in zip(results[True][1], results[False][1]):
        assert ((a - b).norm() / b.norm().clamp_min(1e-12)).item() < 2e-2


def test_fused_head_reuses_one_cast_buffer_per_weight():
    """Under bf16 autocast an fp32 head weight is cast into one persistent buffer, which backward's product
    reuses: the same loss and gradients as a fresh cast (bit for bit), no new vocab x d allocation from the
    second step on, and the buffer goes with its weight."""
    import gc

    import torch.nn.functional as F

    from peftsum.training import head_loss

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 32, generator=g, requires_grad=True)
    weight = (0.3 * torch.randn(1000, 32, generator=g)).requires_grad_()
    target = torch.randint(0, 1000, (10,), generator=g)
    results, pointers = [], []
    for step in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = head_loss.head_cross_entropy(hidden, weight, target)
        results.append((loss.item(), *torch.autograd.grad(loss, (hidden, weight))))
        pointers.append(head_loss._CAST_BUFFERS[id(weight)][1].data_ptr())
    assert len(set(pointers)) == 1
    assert all(r[0] == results[0][0] and torch.equal(r[1], results[0][1]) and torch.equal(r[2], results[0][2])
               for r in results)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the plain path, to bf16 rounding
        plain = F.cross_entropy(F.linear(hidden, weight).float(), target)
    assert results[0][0] == pytest.approx(plain.item(), rel=1e-4)
    key = id(weight)
    del weight, results, plain, loss  # (the graphs hold the weight too)
    gc.collect()
    assert key not in head_loss._CAST_BUFFERS


def test_fused_head_loss_refuses_double_backward():
    """Its backward returns saved constants: a second-order gradient (a gradient penalty) must raise,
    not silently drop the head's contribution."""
    from peftsum.training.head_loss import head_cross_entropy

    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    loss = head_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 49]))
    (grad,) = torch.autograd.grad(loss, hidden, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad.square().sum(), weight)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("case", ["clipped", "not clipped", "nan"])
def test_clipping_gives_accelerates_update(case, fold):
    """peftsum's clipping then fused AdamW's step gives accelerate's clipping then the same step: the norm to
    float rounding (exact against float64, where accelerate's drifts), the parameters after the step to
    1e-6 whether the coefficient is folded into the optimizer's step or applied to the gradients, when it
    clips, when it does not, and when a gradient is NaN (NaN parameters both ways)."""
    from accelerate import Accelerator

    from peftsum.training.clipping import applies, clip_gradients, folds_into

    def params():
        g = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((300, 7), (11,), (1500, 1000))]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g) * (10.0 if case == "clipped" else 1e-4)
        if case == "nan":
            ps[1].grad[3] = float("nan")
        ps.append(torch.nn.Parameter(torch.ones(2)))  # no gradient
        return ps

    accelerator = Accelerator(cpu=True)
    ours, theirs = params(), params()
    exact = torch.cat([p.grad.double().flatten() for p in ours if p.grad is not None]).norm()
    opt_ours = torch.optim.AdamW(ours, lr=0.1, fused=True)
    opt_theirs = torch.optim.AdamW(theirs, lr=0.1, fused=True)
    assert applies(accelerator, ours) and folds_into(opt_ours)
    norm = clip_gradients(ours, 1.0, opt_ours if fold else None)
    expected = accelerator.clip_grad_norm_(theirs, 1.0)
    if case == "nan":
        assert norm.isnan() and expected.isnan()
    else:
        assert abs(float(norm) - float(exact)) <= 1e-6 * float(exact)  # exact; accelerate's within fp32 drift
        assert float(norm) == pytest.approx(float(expected), rel=1e-4)
    folded = getattr(opt_ours, "grad_scale", None) is not None
    assert folded == (fold and case == "clipped")  # only a finite norm above max_norm is folded
    opt_ours.step()
    opt_theirs.step()
    assert getattr(opt_ours, "grad_scale", None) is None  # one step only
    for a, b in zip(ours, theirs):
        if case == "nan":
            assert a.isnan().any() == b.isnan().any()
        else:
            assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert (float(norm) > 1.0) == (case == "clipped")


def test_clipping_drops_a_folded_scale_whose_step_never_ran():
    """A coefficient folded into fused AdamW but never applied (an exception or a skipped step between clip and step)
    is not applied later on top of the next clip's (found in review: 20x too small updates)."""
    from peftsum.training.clipping import clip_gradients

    def run(stale: bool):
        p = torch.nn.Parameter(torch.zeros(4))
        opt = torch.optim.AdamW([p], lr=0.1, fused=True)
        if stale:
            p.grad = torch.full((4,), 10.0)
            clip_gradients([p], 1.0, opt)  # folded; no step follows
        p.grad = torch.tensor([3.0, -4.0, 0.5, 0.0])
        clip_gradients([p], 1.0, opt)
        opt.step()
        return p.detach().clone(), opt.state[p]["exp_avg"].clone()

    for got, want in zip(run(True), run(False)):
        assert torch.equal(got, want)


def test_fused_head_first_used_under_inference_mode_then_trains():
    """The fused head's buffers (the frozen head's block scratch, the trainable head's persistent bf16 cast) are normal
    tensors even when first made under inference_mode (found in review: later training raised); no scored token
    gives a NaN loss as cross_entropy does, not an exception."""
    from peftsum.training.head_loss import head_cross_entropy

    g = torch.Generator().manual_seed(0)
    for weight in (torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g).requires_grad_()):
        target = torch.randint(1000, (5,), generator=g)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            head_cross_entropy(torch.randn(5, 16, generator=g), weight, target)
        hidden = torch.randn(5, 16, generator=g, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = head_cross_entropy(hidden, weight, target)
        loss.backward()
        assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    empty = head_cross_entropy(torch.randn(0, 16, requires_grad=True), torch.randn(1000, 16), torch.zeros(0, dtype=torch.long))
    assert empty.isnan()
