"""FSDP2 on 2 CPU processes (gloo) with the tiny mT5: train, sharded checkpoint, resume, export.

Run by tests/test_fsdp.py as ``torchrun --nproc-per-node 2 tests/fsdp_driver.py MODEL OUT``.
accelerate 1.16 does not enable FSDP for CPU processes (see ``peftsum.training.parallel``), so
this drives ``torch.distributed.fsdp.fully_shard`` directly, with peftsum's wrap policy
(:func:`~peftsum.training.parallel.shard_model`: one unit per ``MT5Block``) and export
(:func:`~peftsum.training.parallel.full_state_dict`), and ``torch.distributed.checkpoint`` for the
sharded checkpoint (each rank writes its own shard file), as the Trainer does under FSDP2.

Writes into OUT (rank 0 only, except the checkpoint shards): ``ckpt/`` (sharded, after step 2),
``export/`` (a standard checkpoint after step 4), ``result.json`` (per-step losses of the run and
of the resumed run) and ``logits.pt`` (the in-memory sharded model's logits on a fixed batch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STEPS, SAVE_AT = 4, 2


def batches(tokenizer, rank: int, world_size: int):
    """4 global batches of 4 real English rows (bundled sample + validation), this rank's share of each."""
    from peftsum.data.xlsum import load_split

    rows = load_split("english", "train", "sample").rows + load_split("english", "validation", "sample").rows
    out = []
    for step in range(STEPS):
        mine = [rows[(4 * step + k) % len(rows)] for k in range(4)][rank::world_size]
        enc = tokenizer([r["text"] for r in mine], max_length=64, truncation=True, padding=True, return_tensors="pt")
        labels = tokenizer([r["summary"] for r in mine], max_length=16, truncation=True, padding=True,
                           return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    return out


def build(model_dir: str):
    """The tiny model, sharded per MT5Block, and its AdamW."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.training.parallel import shard_model

    torch.manual_seed(0)
    model = shard_model(AutoModelForSeq2SeqLM.from_pretrained(model_dir))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def step(model, opt, batch) -> float:
    """One optimizer step; returns the loss averaged over the ranks."""
    import torch.distributed as dist

    loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    t = loss.detach().clone()
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def main() -> int:
    """Train 4 steps (checkpoint after 2), export; resume a fresh model from the checkpoint, train 2 steps."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from transformers import AutoTokenizer

    from peftsum import distributed
    from peftsum.training.parallel import full_state_dict

    model_dir, out = sys.argv[1], Path(sys.argv[2])
    distributed.init()
    w = distributed.world()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = batches(tokenizer, w.rank, w.world_size)

    model, opt = build(model_dir)
    losses = []
    for i in range(STEPS):
        losses.append(step(model, opt, data[i]))
        if i + 1 == SAVE_AT:
            msd, osd = get_state_dict(model, opt)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(out / "ckpt"))
    state = full_state_dict(model)  # collective: every rank takes part
    probe = tokenizer(["A probe article about the sea wall in Portsmouth."], return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"],
                       decoder_input_ids=torch.tensor([[0, 5, 9, 11]])).logits
    if distributed.is_main():
        model.save_pretrained(str(out / "export"), state_dict=state)
        tokenizer.save_pretrained(str(out / "export"))
        torch.save(logits, out / "logits.pt")

    fresh, fresh_opt = build(model_dir)
    msd, osd = get_state_dict(fresh, fresh_opt)
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=str(out / "ckpt"))
    set_state_dict(fresh, fresh_opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    resumed = [step(fresh, fresh_opt, data[i]) for i in range(SAVE_AT, STEPS)]
    if distributed.is_main():
        (out / "result.json").write_text(json.dumps({"losses": losses, "resumed": resumed,
                                                     "wrapped": sorted({type(m).__name__ for m in model.modules()
                                                                        if type(m).__name__.startswith("FSDP")})}))
    distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
