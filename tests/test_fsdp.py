"""FSDP2: 2 CPU processes (gloo, real torchrun) on the tiny mT5, and the combinations refused at start.

accelerate 1.16 enables FSDP only for GPU processes (``peftsum.training.parallel.check_parallel``
refuses an FSDP config on CPU instead of letting it silently run DDP), so the 2-process test drives
FSDP2 (``fully_shard``) directly with peftsum's wrap policy and export (tests/fsdp_driver.py):
train, sharded checkpoint (one shard file per rank), resume to the same losses, and a standard
checkpoint that plain transformers loads with the same logits as the sharded model in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fsdp_run(no_dropout_dir, tmp_path_factory):
    import socket

    out = tmp_path_factory.mktemp("fsdp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), str(ROOT / "tests" / "fsdp_driver.py"), str(no_dropout_dir), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return out


@pytest.mark.slow
def test_fsdp2_trains_saves_sharded_and_resumes(fsdp_run):
    result = json.loads((fsdp_run / "result.json").read_text())
    assert result["wrapped"] == ["FSDPMT5Block", "FSDPMT5ForConditionalGeneration"]  # one unit per block + root
    assert len(result["losses"]) == 4 and result["losses"][-1] < result["losses"][0]
    assert result["resumed"] == pytest.approx(result["losses"][2:], abs=1e-5)
    shards = sorted(p.name for p in (fsdp_run / "ckpt").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard


@pytest.mark.slow
def test_fsdp2_export_loads_in_plain_transformers(fsdp_run):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    export = fsdp_run / "export"
    model = AutoModelForSeq2SeqLM.from_pretrained(str(export)).eval()
    assert all(type(p) is torch.nn.Parameter for p in model.parameters())  # no DTensor left
    tok = AutoTokenizer.from_pretrained(str(export))
    probe = tok(["A probe article about the sea wall in Portsmouth."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**probe, decoder_input_ids=torch.tensor([[0, 5, 9, 11]])).logits
    torch.testing.assert_close(logits, torch.load(fsdp_run / "logits.pt"), atol=1e-5, rtol=0)


def _build(tiny_model_dir, tmp_path, **kw):
    from peftsum.training.trainer import build_trainer

    cfg = TrainConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), max_steps=1, **kw)
    return build_trainer(cfg, log=lambda *a, **k: None)


@pytest.mark.parametrize("env, kw, message", [
    ({"ACCELERATE_USE_FSDP": "true"}, {"method": "prefix"},
     "prefix is not supported under FSDP; use --method full, lora or rslora with FSDP, or train prefix data-parallel"),
    ({"ACCELERATE_USE_FSDP": "true"}, {"method": "full"}, "FSDP needs CUDA GPUs"),
    ({"ACCELERATE_MIXED_PRECISION": "fp16"}, {"method": "lora"}, "mixed_precision fp16 is refused: --fp16 refused for mt5"),
    ({"ACCELERATE_MIXED_PRECISION": "bf16"}, {"method": "lora", "bf16": False}, "pass --bf16"),
])
def test_combinations_that_cannot_work_are_refused_before_weights_load(tiny_model_dir, tmp_path, monkeypatch,
                                                                        env, kw, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        _build(tiny_model_dir, tmp_path, **kw)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # refused before the run folder is prepared


def test_merge_refuses_several_processes(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "peftsum", "merge", "--adapter", str(tmp_path), "--output-dir",
                          str(tmp_path / "merged")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2
    assert "merge does not run under FSDP or several processes; run `peftsum merge` as one plain process" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_shipped_fsdp2_config_is_an_accelerate_config_for_mt5_blocks():
    from accelerate.commands.config.config_args import ClusterConfig

    path = ROOT / "configs" / "accelerate" / "fsdp2_mt5_large.yaml"
    text = path.read_text()
    assert text.startswith("#") and "accelerate launch --config_file configs/accelerate/fsdp2_mt5_large.yaml" in text
    cfg = ClusterConfig.from_yaml_file(str(path))  # what `accelerate launch --config_file` reads
    assert cfg.distributed_type == "FSDP" and cfg.mixed_precision == "bf16"
    fsdp = cfg.fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_transformer_layer_cls_to_wrap"] == "MT5Block"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    from transformers import MT5ForConditionalGeneration

    assert "MT5Block" in MT5ForConditionalGeneration._no_split_modules
