"""Full fine-tuning's touched-rows AdamW for the input embedding (``training.sparse_rows``) is the dense update.

Two copies of the tiny mT5 take the same steps on real rows (four scripts) with peftsum's loss,
clipping and torch's fused AdamW: one with the embedding's dense gradient (PyTorch's own path), one
with :class:`RowSparseEmbedding`. The weights, both AdamW moments and the step count must agree
(to float rounding: the duplicate ids' gradient rows are summed in another order), rows that no
batch touched must be bit-for-bit untouched, the clipping norm must count the rows, gradient
accumulation must add up, and a resume from the optimizer's state dict must continue the same way.
Runs the same on AVX2-only and AMX machines (fp32, no autocast).
"""

from __future__ import annotations

import copy

import pytest
import torch

from peftsum.modeling.load import load_model
from peftsum.training.clipping import clip_gradients
from peftsum.training.loss import packed_head_loss
from peftsum.training.sparse_rows import ATTR, RowSparseEmbedding, applies

pytestmark = pytest.mark.usefixtures("one_thread")


def batches(tokenizer, groups=(("english", "russian"), ("hindi", "arabic"))):
    """Batches of two real rows each (English + Russian, Hindi + Arabic), padded, labels masked."""
    from peftsum.data.xlsum import load_split

    out = []
    for langs in groups:
        rows = [load_split(lang, "train", "sample").rows[0] for lang in langs]
        enc = tokenizer([r["text"] for r in rows], max_length=96, truncation=True, padding=True, return_tensors="pt")
        labels = tokenizer(text_target=[r["summary"] for r in rows], max_length=24, truncation=True, padding=True,
                           return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        out.append(dict(enc, labels=labels))
    return out


def step(model, opt, micro_batches, max_norm, seed):
    """One optimizer step over ``micro_batches`` (their losses summed), peftsum's clipping, then the learning
    rate halved (as a scheduler writes it into the param groups); returns the norm."""
    model.train()
    for i, inputs in enumerate(micro_batches):
        torch.manual_seed(seed + i)  # the same dropout masks in both copies
        loss, _ = packed_head_loss(model, inputs)
        loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm = clip_gradients(params, max_norm, opt)
    opt.step()
    opt.zero_grad(set_to_none=True)
    for group in opt.param_groups:
        group["lr"] = group["lr"] / 2
    return float(norm)


def pair(tiny_model_dir, lr=1e-2):
    dense, _ = load_model(str(tiny_model_dir))
    sparse = copy.deepcopy(dense)
    opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0, fused=True) for m in (dense, sparse)]
    RowSparseEmbedding(sparse.get_input_embeddings(), opts[1])
    return (dense, opts[0]), (sparse, opts[1])


def assert_same(dense, sparse, opt_dense, opt_sparse, start):
    emb_d, emb_s = dense.get_input_embeddings().weight, sparse.get_input_embeddings().weight
    assert emb_s.grad is None  # the rows never became a dense gradient
    assert torch.allclose(emb_d, emb_s, rtol=1e-5, atol=1e-7)
    moved = (emb_d != start).any(dim=1)
    assert 0 < int(moved.sum()) < emb_d.shape[0] // 2  # some rows trained, most untouched
    assert torch.equal(emb_s[~moved], start[~moved])  # untouched rows: bit for bit
    sd, ss = opt_dense.state[emb_d], opt_sparse.state[emb_s]
    assert torch.equal(sd["step"], ss["step"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(sd[key], ss[key], rtol=1e-5, atol=1e-12), key
        assert torch.equal(ss[key][~moved], torch.zeros_like(ss[key][~moved]))
    for (name, a), b in zip(dense.named_parameters(), sparse.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name


def test_touched_rows_adamw_equals_dense(tiny_model_dir, tiny_tokenizer):
    (dense, opt_d), (sparse, opt_s) = pair(tiny_model_dir)
    start = dense.get_input_embeddings().weight.detach().clone()
    data = batches(tiny_tokenizer)
    plan = [([data[0]], 0.05), ([data[1]], 1e9), ([data[0], data[1]], 0.05)]  # clipped, not, accumulated+clipped
    for k, (micro, max_norm) in enumerate(plan):
        nd = step(dense, opt_d, micro, max_norm, seed=10 * k)
        ns = step(sparse, opt_s, micro, max_norm, seed=10 * k)
        assert ns == pytest.approx(nd, rel=1e-5)  # the rows count in the clipping norm
    assert nd > 0.05  # clipping was active (the coefficient went to fused AdamW)
    assert_same(dense, sparse, opt_d, opt_s, start)


def test_resume_from_state_dict_continues_the_dense_run(tiny_model_dir, tiny_tokenizer):
    (dense, opt_d), (sparse, opt_s) = pair(tiny_model_dir)
    start = dense.get_input_embeddings().weight.detach().clone()
    data = batches(tiny_tokenizer)
    step(dense, opt_d, [data[0]], 0.05, seed=1)
    step(sparse, opt_s, [data[0]], 0.05, seed=1)
    # a new process: the model and the optimizer state from the checkpoint, the touched rows from the moments
    resumed = copy.deepcopy(sparse)
    opt_r = torch.optim.AdamW(resumed.parameters(), lr=1e-2, weight_decay=0.0, fused=True)
    opt_r.load_state_dict(copy.deepcopy(opt_s.state_dict()))
    RowSparseEmbedding(resumed.get_input_embeddings(), opt_r)
    step(dense, opt_d, [data[1]], 0.05, seed=2)
    step(resumed, opt_r, [data[1]], 0.05, seed=2)
    assert_same(dense, resumed, opt_d, opt_r, start)


def test_where_it_applies(tiny_model_dir):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model, _ = load_model(str(tiny_model_dir))
    fused = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=True)  # (torch's default: 0.01)
    assert applies(model, fused, acc) is None
    assert "weight decay" in applies(model, torch.optim.AdamW(model.parameters(), weight_decay=0.01, fused=True), acc)
    assert "fused" in applies(model, torch.optim.AdamW(model.parameters(), weight_decay=0.0), acc)
    assert "fused" in applies(model, torch.optim.SGD(model.parameters(), lr=0.1), acc)
    model.get_input_embeddings().weight.requires_grad_(False)  # PEFT methods: a frozen embedding
    assert applies(model, fused, acc) == "no trainable nn.Embedding"


def test_trainer_sets_it_up_for_full_fine_tuning_only(tiny_model_dir, tmp_path):
    from peftsum.config import TrainConfig
    from peftsum.training.trainer import build_trainer

    for method, wd, expected in (("full", 0.0, True), ("full", 0.01, False), ("lora", 0.0, False)):
        setup = build_trainer(TrainConfig(model=str(tiny_model_dir), method=method, weight_decay=wd,
                                          output_dir=str(tmp_path / f"{method}{wd}"), max_steps=1, train_samples=2,
                                          val_samples=2, eval_steps=0), log=lambda *a, **k: None)
        trainer = setup.trainer
        trainer.create_optimizer()
        base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        rows = getattr(base.get_input_embeddings(), ATTR, None)
        assert (rows is not None) == expected, (method, wd)
        if rows is not None:  # rows a failed earlier train() left behind are dropped when training starts again
            weight = base.get_input_embeddings().weight
            rows.add(torch.tensor([5]), torch.full((1, weight.shape[1]), float("nan")))
            trainer.train()
            assert not weight.isnan().any()


def test_dense_steps_in_between_keep_it_exact(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """A step whose gradient is dense (the module's own forward) or that crosses DENSE_SHARE takes torch's dense
    update; the touched set is rebuilt or kept so that later touched-rows steps stay exact; so is a state loaded
    into the same optimizer after some steps (a second resume)."""
    import peftsum.training.sparse_rows as sr

    (dense, opt_d), (sparse, opt_s) = pair(tiny_model_dir)
    start = dense.get_input_embeddings().weight.detach().clone()
    data = batches(tiny_tokenizer)
    step(dense, opt_d, [data[0]], 0.05, seed=1)
    step(sparse, opt_s, [data[0]], 0.05, seed=1)
    for model, opt in ((dense, opt_d), (sparse, opt_s)):  # the model's own lookups: a dense embedding gradient
        model.train()
        torch.manual_seed(2)
        model(**data[1]).loss.backward()
        clip_gradients([p for p in model.parameters() if p.requires_grad], 0.05, opt)
        opt.step()
        opt.zero_grad(set_to_none=True)
    step(dense, opt_d, [data[0]], 0.05, seed=3)
    step(sparse, opt_s, [data[0]], 0.05, seed=3)
    assert_same(dense, sparse, opt_d, opt_s, start)
    step(dense, opt_d, batches(tiny_tokenizer, (("japanese", "turkish"),)), 0.05, seed=4)  # rows sparse never saw
    opt_s.load_state_dict(copy.deepcopy(opt_d.state_dict()))  # the same optimizer object takes that state
    sparse.load_state_dict(dense.state_dict())
    step(dense, opt_d, [data[0]], 0.05, seed=5)
    step(sparse, opt_s, [data[0]], 0.05, seed=5)
    assert_same(dense, sparse, opt_d, opt_s, start)
    monkeypatch.setattr(sr, "DENSE_SHARE", 0.0)  # a dense step: torch's own update
    step(dense, opt_d, [data[1]], 0.05, seed=6)
    step(sparse, opt_s, [data[1]], 0.05, seed=6)
    monkeypatch.setattr(sr, "DENSE_SHARE", 0.35)
    step(dense, opt_d, [data[0]], 0.05, seed=7)
    step(sparse, opt_s, [data[0]], 0.05, seed=7)
    assert_same(dense, sparse, opt_d, opt_s, start)


def test_a_second_optimizer_takes_over(tiny_model_dir, tiny_tokenizer):
    (dense, opt_d), (sparse, first) = pair(tiny_model_dir)
    data = batches(tiny_tokenizer)
    step(sparse, first, [data[0]], 0.05, seed=1)
    second = torch.optim.AdamW(sparse.parameters(), lr=1e-2, weight_decay=0.0, fused=True)
    rows = RowSparseEmbedding(sparse.get_input_embeddings(), second)
    assert getattr(sparse.get_input_embeddings(), ATTR) is rows and not getattr(first, ATTR)
    before = sparse.get_input_embeddings().weight.detach().clone()
    step(sparse, second, [data[1]], 0.05, seed=2)
    assert (sparse.get_input_embeddings().weight != before).any(dim=1).sum() > 0  # trained by the second one
    assert not rows.pending
    after = sparse.get_input_embeddings().weight.detach().clone()
    first.step()  # the first optimizer's hook is gone: it does not move the embedding
    assert torch.equal(sparse.get_input_embeddings().weight, after)
