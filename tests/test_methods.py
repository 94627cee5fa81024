"""The method registry: every method trains on the tiny mT5, saves in PEFT's format and reloads.

Adding a method is one row in ``peftsum.modeling.methods.METHODS`` plus its row in :data:`ROWS`
below: the registry checks, the end-to-end test, the merge test and the README check all read them.

The parametrised test trains each of the 11 methods for a few steps on real bundled English rows,
checks that the loss on those rows went down, saves, and then a *fresh* Python process that
imports only torch/transformers/peft reloads every adapter with plain ``PeftModel.from_pretrained``
(full fine-tuning: ``AutoModelForSeq2SeqLM.from_pretrained``) and must reproduce the logits
computed before saving (<= 1e-5), differ from the base model (> 1e-3) and generate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback

import pytest
import torch

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError
from peftsum.modeling.methods import ALL_LINEAR, METHODS, MethodHyper, build_peft_config, check_target_modules, \
    get_method, method_hyper, method_of_adapter, methods_markdown, resolve_target_modules

# One row per method, what its trained model must show: the PEFT type in its adapter_config.json
# (None: a full checkpoint), the adapter_config.json entries that tell it apart, whether
# `peftsum merge` folds it into the weights, and whether PEFT mixes it with other adapters in one batch.
ROWS = [
    # name      peft_type        adapter_config entries                   merges mixes
    ("full",    None,            {},                                      False, False),
    ("lora",    "LORA",          {"use_dora": False, "use_rslora": False}, True, True),
    ("dora",    "LORA",          {"use_dora": True},                      True,  False),
    ("rslora",  "LORA",          {"use_rslora": True},                    True,  True),
    # PiSSA saves a plain LoRA (rank 2r) that applies to the unmodified base
    ("pissa",   "LORA",          {"init_lora_weights": True, "r": 16},    True,  True),
    ("ia3",     "IA3",           {},                                      True,  False),
    ("adalora", "ADALORA",       {},                                      True,  False),
    ("prefix",  "PREFIX_TUNING", {},                                      False, False),
    ("prompt",  "PROMPT_TUNING", {},                                      False, False),
    ("loha",    "LOHA",          {},                                      True,  False),
    ("vera",    "VERA",          {},                                      True,  False),
]
EXPECTED = [row[0] for row in ROWS]
ROW = {row[0]: row for row in ROWS}
STEPS = 4
LR_FACTOR = 5  # a few steps at 5x the default rate move every method visibly (AdaLoRA starts from E = 0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_the_eleven_methods_once():
    assert sorted(METHODS) == sorted(EXPECTED)
    for name, m in METHODS.items():
        _, peft_type, _, merges, mixes = ROW[name]
        assert m.name == name and m.label and m.summary and m.learning_rate > 0
        assert m.is_peft == (peft_type is not None) == (m.peft_type is not None)
        assert ("target_modules" in m.uses) == bool(m.target_modules)
        assert (m.peft_type, m.mergeable, m.mixed_batch) == (peft_type, merges, mixes), name
    assert len({m.label for m in METHODS.values()}) == len(METHODS)


def test_readme_method_table_is_the_registry():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = methods_markdown()
    assert table in readme, "README.md's method table is out of date; paste methods_markdown() into it"
    assert table.count("\n") == len(METHODS) + 2  # header, rule, one line per method


def test_default_target_modules_are_peft_defaults_for_mt5():
    from peft.utils import constants as c

    peft_mt5 = {
        "lora": c.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["mt5"],
        "dora": c.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["mt5"],
        "rslora": c.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["mt5"],
        "pissa": c.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["mt5"],
        "adalora": c.TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING["mt5"],
        "loha": c.TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING["mt5"],
        "vera": c.TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING["mt5"],
    }
    for name, targets in peft_mt5.items():
        assert list(METHODS[name].target_modules) == list(targets), name
    assert list(ALL_LINEAR) == list(c.TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING["mt5"])
    # IA3: PEFT's t5 choice (k, v, wo with wo as feed-forward), set explicitly for mT5.
    ia3 = build_peft_config(METHODS["ia3"], method_hyper(METHODS["ia3"], TrainConfig(method="ia3")))
    assert set(ia3.target_modules) == {"k", "v", "wo"} == set(c.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING["t5"])
    assert set(ia3.feedforward_modules) == {"wo"} == set(c.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING["t5"])
    assert c.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING["mt5"] == []  # why peftsum sets it


def test_target_module_parsing_and_all_linear():
    lora = get_method("LoRA ")
    assert resolve_target_modules(lora, None) == ["q", "v"]
    assert resolve_target_modules(lora, "all-linear") == list(ALL_LINEAR)
    assert resolve_target_modules(lora, ["all-linear"]) == list(ALL_LINEAR)
    assert resolve_target_modules(lora, "q, k ,o") == ["q", "k", "o"]
    assert resolve_target_modules(get_method("prefix"), None) == []
    with pytest.raises(ConfigError, match="does not apply to prompt"):
        resolve_target_modules(get_method("prompt"), "q")
    assert method_hyper(get_method("vera"), TrainConfig()).r == 256  # PEFT's VeRA default rank
    assert method_hyper(get_method("lora"), TrainConfig()).r == 8
    assert method_hyper(get_method("vera"), TrainConfig(lora_r=16)).r == 16


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        get_method("qlora")
    msg = str(err.value)
    assert "qlora" in msg and all(name in msg for name in EXPECTED) and "\n" not in msg


def test_unknown_method_on_the_command_line_is_a_one_line_error(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from peftsum.cli import app

    res = CliRunner().invoke(app, ["train", "--method", "qlora", "--model", str(tiny_model_dir), "--output-dir",
                                   str(tmp_path / "run")], env={"COLUMNS": "400"})
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown method 'qlora'" in lines[0] and "vera" in lines[0]
    assert not (tmp_path / "run").exists()


def test_target_modules_matching_nothing_name_the_existing_ones(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.training.trainer import build_trainer

    model = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir))
    check_target_modules(model, list(ALL_LINEAR))  # all exist
    with pytest.raises(ConfigError) as err:
        check_target_modules(model, ["q", "q_proj", "v_proj"])
    msg = str(err.value)
    assert "q_proj, v_proj match no linear layer" in msg and "\n" not in msg
    assert all(name in msg.split("it has:")[1] for name in ALL_LINEAR)
    # through the trainer, before any training starts
    cfg = TrainConfig(model=str(tiny_model_dir), method="lora", target_modules=["query"], max_steps=1,
                      output_dir=str(tmp_path / "run"), max_source_length=32, max_target_length=16)
    with pytest.raises(ConfigError, match="query match no linear layer"):
        build_trainer(cfg, log=lambda *a: None)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_methods_command_lists_every_method_with_defaults():
    from typer.testing import CliRunner

    from peftsum.cli import app

    res = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for name, m in METHODS.items():
        row = next(line for line in lines if line.strip("│ ").startswith(name + " "))
        assert f"{m.learning_rate:g}" in row, name
        if m.target_modules:
            assert ",".join(m.target_modules) in row, name
    assert "all-linear = q,k,v,o,wi_0,wi_1,wo" in res.output


# --------------------------------------------------------------------------- every method, end to end

RELOAD = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from transformers import AutoModelForSeq2SeqLM
    from peft import PeftModel
    torch.set_num_threads(1)
    root, base_dir = Path(sys.argv[1]), sys.argv[2]
    batch = torch.load(root / "batch.pt")
    out = {}
    for run in sorted(p for p in root.iterdir() if (p / "model").is_dir()):
        model_dir = run / "model"
        if (model_dir / "adapter_config.json").is_file():
            model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(base_dir), str(model_dir))
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir))
        model.eval()
        with torch.no_grad():
            # no labels: an inference-mode AdaLoRA model cannot add its regulariser (peft 0.21.2)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"]).logits
            gen = model.generate(input_ids=batch["input_ids"][:2], attention_mask=batch["attention_mask"][:2],
                                 max_new_tokens=6, num_beams=1, do_sample=False)
        torch.save(logits, run / "reloaded_logits.pt")
        out[run.name] = {"class": type(model).__name__, "generated_shape": list(gen.shape)}
    out["_peftsum_imported"] = any(m.split(".")[0] == "peftsum" for m in sys.modules)
    print(json.dumps(out))
""")


def _ce(logits, labels) -> float:
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100).item()


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=batch["decoder_input_ids"]).logits


@pytest.fixture(scope="module")
def method_runs(tiny_model_dir, tmp_path_factory):
    """Train every method (4 steps), keep losses and logits, then reload all in one fresh process."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from peftsum.data.xlsum import load_split
    from peftsum.training.trainer import build_trainer, run_training

    root = tmp_path_factory.mktemp("methods")
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = load_split("english", "train", "sample", 4).rows
    enc = tok([r["text"] for r in rows], max_length=64, truncation=True, padding=True, return_tensors="pt")
    labels = tok(text_target=[r["summary"] for r in rows], max_length=32, truncation=True, padding=True,
                 return_tensors="pt")["input_ids"]
    labels[labels == tok.pad_token_id] = -100
    base = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir))
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels,
             "decoder_input_ids": base.prepare_decoder_input_ids_from_labels(labels=labels)}
    torch.save(batch, root / "batch.pt")
    base_logits = _logits(base, batch)

    results = {}
    for name in EXPECTED:
        cfg = TrainConfig(model=str(tiny_model_dir), method=name, output_dir=str(root / name), max_steps=STEPS,
                          batch_size=4, train_samples=4, val_samples=2, max_source_length=64, max_target_length=32,
                          eval_steps=0, learning_rate=LR_FACTOR * METHODS[name].learning_rate)
        try:
            setup = build_trainer(cfg, log=lambda *a: None)
            before = _ce(_logits(setup.trainer.model, batch), labels)
            metrics = run_training(setup, log=lambda *a: None)
            logits = _logits(setup.trainer.model, batch)
            torch.save(logits, root / name / "logits.pt")
            results[name] = {"before": before, "after": _ce(logits, labels), "metrics": metrics,
                             "base_diff": (logits - base_logits).abs().max().item(), "dir": root / name}
        except Exception:  # reported by the test of that method, not as a fixture error for all
            results[name] = {"error": traceback.format_exc()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(root), str(tiny_model_dir)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reloaded.pop("_peftsum_imported") is False  # plain transformers/peft only
    return results, reloaded


@pytest.mark.parametrize("name", EXPECTED)
def test_method_trains_saves_reloads_in_a_fresh_process_and_generates(method_runs, name):
    results, reloaded = method_runs
    res = results[name]
    assert "error" not in res, res.get("error")
    # a few steps lower the loss on the rows trained on (cross-entropy from the logits, so AdaLoRA's
    # orthogonality regulariser is not part of it)
    assert res["after"] < res["before"], (res["before"], res["after"])
    model_dir = res["dir"] / "model"
    _, peft_type, entries, _, _ = ROW[name]
    if peft_type is None:
        assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
        assert reloaded[name]["class"] == "MT5ForConditionalGeneration"
        # the generation length saved with the model is the configured summary length, not a default
        assert json.loads((model_dir / "generation_config.json").read_text())["max_new_tokens"] == 32
    else:
        adapter_cfg = json.loads((model_dir / "adapter_config.json").read_text())
        assert (model_dir / "adapter_model.safetensors").is_file()
        assert adapter_cfg["peft_type"] == peft_type
        assert {k: adapter_cfg[k] for k in entries} == entries
        assert adapter_cfg["task_type"] == "SEQ_2_SEQ_LM"
        assert reloaded[name]["class"].startswith("PeftModel")
        assert res["metrics"]["trainable_params"] < res["metrics"]["total_params"]
        # serving and merge tell the method from the saved file (PiSSA's is a plain LoRA)
        saved = method_of_adapter(adapter_cfg).name
        assert saved == name or (METHODS[name].convert_on_save and saved == "lora"), saved
    before_save = torch.load(res["dir"] / "logits.pt")
    after_reload = torch.load(res["dir"] / "reloaded_logits.pt")
    assert (after_reload - before_save).abs().max().item() <= 1e-5
    assert res["base_diff"] > 1e-3
    assert reloaded[name]["generated_shape"][0] == 2 and reloaded[name]["generated_shape"][1] >= 2


def test_adalora_prunes_ranks_to_the_target_budget(method_runs):
    """The rank-allocation callback ran: the saved rank pattern keeps exactly target_r ranks per layer on average."""
    results, _ = method_runs
    res = results["adalora"]
    assert "error" not in res, res.get("error")
    adapter_cfg = json.loads((res["dir"] / "model" / "adapter_config.json").read_text())
    pattern = adapter_cfg["rank_pattern"]
    assert pattern, "update_and_allocate never ran: no rank pattern"
    kept = sum(sum(mask) for mask in pattern.values())
    init_r, target_r = adapter_cfg["init_r"], adapter_cfg["target_r"]
    assert all(len(mask) == init_r for mask in pattern.values())
    assert kept == target_r * len(pattern) < init_r * len(pattern)
    hyper = res["metrics"]["hyperparameters"]
    assert hyper["total_step"] == STEPS and hyper["target_r"] == target_r


def test_adalora_cannot_resume_and_prefix_cannot_checkpoint_activations(tiny_model_dir, tmp_path):
    from peftsum.training.trainer import resolve

    with pytest.raises(ConfigError, match="--resume is not supported for adalora"):
        resolve(TrainConfig(model=str(tiny_model_dir), method="adalora", resume=True))
    with pytest.raises(ConfigError, match="--gradient-checkpointing does not work with prefix"):
        resolve(TrainConfig(model=str(tiny_model_dir), method="prefix", gradient_checkpointing=True))
    with pytest.raises(ConfigError, match="at least 3 training steps"):
        build_peft_config(METHODS["adalora"], MethodHyper(total_steps=2))


def test_every_weight_method_merges_into_a_standalone_model(method_runs, tmp_path):
    """``peftsum merge``: the merged checkpoint (plain transformers) reproduces the adapter's logits."""
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.errors import PeftsumError
    from peftsum.modeling.merge import merge_adapter

    results, _ = method_runs
    batch = torch.load(results["lora"]["dir"].parent / "batch.pt")
    for name in EXPECTED[1:]:
        res = results[name]
        assert "error" not in res, res.get("error")
        if not ROW[name][3]:
            with pytest.raises(PeftsumError, match="cannot be merged"):
                merge_adapter(res["dir"], tmp_path / name)
            assert not (tmp_path / name).exists()
            continue
        out = merge_adapter(res["dir"], tmp_path / name)
        assert not (out / "adapter_config.json").exists()
        merged = AutoModelForSeq2SeqLM.from_pretrained(str(out))
        diff = (_logits(merged, batch) - torch.load(res["dir"] / "logits.pt")).abs().max().item()
        assert diff <= 1e-4, (name, diff)
