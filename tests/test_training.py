"""Training guards, options, multilingual mixing and the run record, on the tiny mT5 and real bundled rows.

Each check compares against an independent computation (a formula, a manual loss, a second run)
rather than against peftsum's own numbers.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError, PeftsumError
from peftsum.training.trainer import build_trainer, resolve, run_training, train


def quiet(*_args, **_kwargs):
    """A ``log`` that drops progress lines."""


pytestmark = pytest.mark.usefixtures("one_thread")


def small(model_dir, out, **kw) -> TrainConfig:
    """A few-second config: 4 English rows, short sequences, no evaluation during training."""
    base = dict(model=str(model_dir), method="lora", output_dir=str(out), max_steps=2, batch_size=2,
                train_samples=4, val_samples=2, max_source_length=64, max_target_length=32, eval_steps=0)
    base.update(kw)
    return TrainConfig(**base)


def losses(setup) -> list[float]:
    return [r["loss"] for r in setup.trainer.state.log_history if "loss" in r]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(Path(folder).glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return load_file(str(files[0]))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# --------------------------------------------------------------------------- guards


def test_fp16_refused_for_mt5_with_a_pointer_to_bf16(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from peftsum.cli import app

    with pytest.raises(ConfigError) as err:
        build_trainer(small(tiny_model_dir, tmp_path / "run", fp16=True), log=quiet)
    assert "--fp16 refused for mt5" in str(err.value) and "--bf16" in str(err.value) and "fp32" in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written or loaded
    res = CliRunner().invoke(app, ["train", "--model", str(tiny_model_dir), "--fp16", "--output-dir",
                                   str(tmp_path / "cli")])
    assert res.exit_code == 2 and "--bf16" in res.output


@pytest.mark.parametrize("kw, message", [
    (dict(fp16=True, bf16=True), "exclusive"),
    (dict(optimizer="sgd"), "choose adamw or adafactor"),
    (dict(lr_scheduler="poly"), "linear, constant or cosine"),
    (dict(load_best=True), "needs --eval-rouge"),
    (dict(load_best=True, eval_rouge=True, eval_steps=0), "needs evaluations during training"),
    (dict(early_stopping_patience=2), "needs --load-best"),
    (dict(max_steps=-1, num_epochs=0), "num_epochs > 0 or max_steps > 0"),
    (dict(warmup_ratio=1.5), "warmup_ratio"),
])
def test_bad_combinations_are_one_line_errors(tiny_model_dir, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        resolve(small(tiny_model_dir, tmp_path / "run", **kw))
    assert "\n" not in str(err.value)


def test_bf16_autocasts_on_cpu_and_stays_close_to_fp32(tiny_model_dir, tmp_path):
    """Trainer(bf16=True) on CPU runs the linear layers in bf16 while the weights stay fp32."""
    runs = {}
    for bf16 in (False, True):
        setup = build_trainer(small(tiny_model_dir, tmp_path / f"bf16-{bf16}", bf16=bf16), log=quiet)
        modules = dict(setup.trainer.model.named_modules())
        ffn = next(m for n, m in modules.items() if n.endswith("encoder.block.0.layer.1.DenseReluDense.wi_0"))
        seen = []
        hook = ffn.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
        setup.trainer.train()
        hook.remove()
        runs[bf16] = (set(seen), losses(setup), {p.dtype for p in setup.trainer.model.parameters()})
    assert runs[False][0] == {torch.float32}
    assert runs[True][0] == {torch.bfloat16}
    assert runs[True][2] == {torch.float32}  # master weights stay fp32
    for fp32_loss, bf16_loss in zip(runs[False][1], runs[True][1]):
        assert bf16_loss != fp32_loss  # really a different precision ...
        assert abs(bf16_loss - fp32_loss) < 1e-2 * fp32_loss  # ... within bf16's ~3 significant digits


def test_non_finite_loss_stops_the_run_naming_the_step(tiny_model_dir, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(PeftsumError, match=r"training loss became (nan|inf) at step 2\b"):
        train(small(tiny_model_dir, out, method="full", max_steps=5, learning_rate=1e30), log=quiet)
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1] and math.isfinite(log[0]["loss"])
    assert not (out / "metrics.json").exists()


def test_lm_head_tie_state_is_checked_against_the_checkpoint(tiny_model_dir):
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.modeling.load import lm_head_tie_state, load_model

    model, state = load_model(str(tiny_model_dir))
    assert state == {"lm_head_tied": False, "checkpoint_has_lm_head": True, "head_matches_checkpoint": True,
                     "ok": True}
    # a loader that tied the head would throw the stored one away: refused
    tied = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir))
    tied.lm_head.weight = tied.shared.weight
    with pytest.raises(PeftsumError, match="does not hold the checkpoint's stored lm_head"):
        lm_head_tie_state(tied, str(tiny_model_dir))


def test_models_load_without_hub_kernels(tiny_model_dir):
    """transformers >= 5.2x kernelizes a model by default where the `kernels` package is installed (a dependency of
    transformers 5.25) and kernelizes again for the model's device at each train()/eval() switch. On the H200 of
    2026-12-04 that fetched kernels-community/activation from the hub at the first ``model.eval()`` after training:
    every GPU training run failed offline. peftsum loads with ``use_kernels=False``; here the switch runs with the
    device transformers would kernelize for set to CUDA (on this CPU machine a kernelizing model raises "Torch not
    compiled with CUDA enabled")."""
    from peftsum.modeling.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    assert getattr(model, "use_kernels", False) is False
    model._kernels_device = "cuda"  # what transformers' kernelize() reads first for the device
    model.train()
    model.eval()


def test_untied_head_without_a_stored_head_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.modeling.load import lm_head_tie_state, load_model

    headless = tmp_path / "headless"
    shutil.copytree(tiny_model_dir, headless)
    tensors = load_file(str(headless / "model.safetensors"))
    tensors.pop("lm_head.weight")
    save_file(tensors, str(headless / "model.safetensors"), metadata={"format": "pt"})
    _, state = load_model(str(headless))  # transformers ties a missing head: fine
    assert state["lm_head_tied"] is True and state["checkpoint_has_lm_head"] is False
    model = AutoModelForSeq2SeqLM.from_pretrained(str(headless))
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())  # untied, never trained
    with pytest.raises(PeftsumError, match="randomly initialised"):
        lm_head_tie_state(model, str(headless))


# --------------------------------------------------------------------------- options


def test_gradient_accumulation_equals_the_large_batch(no_dropout_dir, tmp_path):
    """4 rows as one batch of 4, or as 2 micro-batches of 2: same losses, same weights (token-weighted).

    fp32 pinned: the 1e-5 tolerance is fp32's; the bf16 twin is in test_precision.py."""
    kw = dict(max_steps=2, learning_rate=1e-2, lora_dropout=0.0, bf16=False)
    big = build_trainer(small(no_dropout_dir, tmp_path / "big", batch_size=4, **kw), log=quiet)
    run_training(big, log=quiet)
    acc = build_trainer(small(no_dropout_dir, tmp_path / "acc", batch_size=2, gradient_accumulation_steps=2, **kw),
                        log=quiet)
    run_training(acc, log=quiet)
    assert losses(big) == pytest.approx(losses(acc), abs=1e-5)
    assert max_diff(weights(tmp_path / "big" / "model"), weights(tmp_path / "acc" / "model")) <= 1e-5
    # and it is not vacuous: two steps of batch 2 without accumulation differ
    two = build_trainer(small(no_dropout_dir, tmp_path / "two", batch_size=2, **kw), log=quiet)
    run_training(two, log=quiet)
    assert max_diff(weights(tmp_path / "big" / "model"), weights(tmp_path / "two" / "model")) > 1e-4


def test_gradient_checkpointing_works_with_peft(tiny_model_dir, tmp_path):
    """Same losses and adapter weights with and without activation checkpointing (dropout on: RNG replayed)."""
    runs = {}
    for gc in (False, True):
        setup = build_trainer(small(tiny_model_dir, tmp_path / f"gc-{gc}", max_steps=3, gradient_checkpointing=gc,
                                    learning_rate=1e-2), log=quiet)
        run_training(setup, log=quiet)
        runs[gc] = (losses(setup), weights(tmp_path / f"gc-{gc}" / "model"))
        if gc:
            assert setup.trainer.model.base_model.model.is_gradient_checkpointing
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-6)
    assert max_diff(runs[True][1], runs[False][1]) <= 1e-6
    lora_b = [v for k, v in runs[True][1].items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # gradients reached the adapter (B starts at 0)


@pytest.mark.parametrize("optimizer, scheduler, warmup", [
    ("adamw", "linear", 0.2), ("adafactor", "cosine", 0.3), ("adamw", "constant", 0.4)])
def test_optimizer_and_schedule_with_warmup(tiny_model_dir, tmp_path, optimizer, scheduler, warmup):
    from transformers.optimization import Adafactor

    total, lr = 10, 1e-3
    setup = build_trainer(small(tiny_model_dir, tmp_path / "run", max_steps=total, optimizer=optimizer,
                                lr_scheduler=scheduler, warmup_ratio=warmup, learning_rate=lr), log=quiet)
    trainer = setup.trainer
    trainer.create_optimizer_and_scheduler(num_training_steps=total)
    if optimizer == "adafactor":
        assert isinstance(trainer.optimizer, Adafactor)
        assert trainer.optimizer.defaults["relative_step"] is False and trainer.optimizer.defaults["lr"] == lr
    else:
        assert isinstance(trainer.optimizer, torch.optim.AdamW)
    w = round(warmup * total)
    for step in range(total):
        if step < w:
            expected = lr * step / w
        elif scheduler == "linear":
            expected = lr * (total - step) / (total - w)
        elif scheduler == "cosine":
            expected = lr * 0.5 * (1 + math.cos(math.pi * (step - w) / (total - w)))
        else:
            expected = lr
        assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(expected, abs=1e-12), step
        trainer.optimizer.step()
        trainer.lr_scheduler.step()


def test_label_smoothing_is_the_smoothed_cross_entropy(no_dropout_dir, tmp_path):
    """The first logged loss equals (1 - eps) * NLL + eps * mean over the vocabulary of -log p, computed by hand."""
    eps = 0.1
    setup = build_trainer(small(no_dropout_dir, tmp_path / "ls", batch_size=4, max_steps=1, label_smoothing=eps),
                          log=quiet)
    trainer = setup.trainer
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    model = trainer.model.eval()
    batch = {k: v.to(model.device) for k, v in batch.items()}  # the Trainer put the model on the GPU where there is one
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"]).logits
    labels = batch["labels"]
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].mean()
    uniform = -logp.mean(dim=-1)[mask].mean()
    expected = ((1 - eps) * nll + eps * uniform).item()
    trainer.train()
    assert losses(setup)[0] == pytest.approx(expected, abs=1e-4)
    assert abs(expected - nll.item()) > 1e-3  # smoothing changed the loss


def test_eval_every_n_steps_rouge_best_checkpoint_and_early_stopping(tiny_model_dir, tmp_path):
    """Evaluations at steps 2, 4, ... carry eval_loss and ROUGE in one row; training stops when ROUGE-L has not
    improved for ``patience`` evaluations; the final model is the best checkpoint's weights."""
    out, every, patience = tmp_path / "best", 2, 1
    cfg = small(tiny_model_dir, out, max_steps=12, eval_steps=every, eval_rouge=True, eval_rouge_samples=2,
                load_best=True, early_stopping_patience=patience, save_total_limit=1, learning_rate=5e-2,
                max_target_length=16)
    metrics = train(cfg, log=quiet)
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_loss" in r]
    assert evals and all({"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum"} <= set(r) for r in evals)
    in_training, final = evals[:-1], evals[-1]  # the last row is run_training's final evaluate()
    # replay EarlyStoppingCallback + best-metric tracking from the logged values
    best, best_step, waited, stop = None, None, 0, None
    for row in in_training:
        if best is None or row["eval_rougeL"] > best:
            best, best_step, waited = row["eval_rougeL"], row["step"], 0
        else:
            waited += 1
        if waited >= patience:
            stop = row["step"]
            break
    assert [r["step"] for r in in_training] == list(range(every, (stop or 12) + 1, every))
    assert metrics["global_step"] == (stop or 12)
    assert metrics["best_checkpoint_step"] == best_step and metrics["best_metric"] == pytest.approx(best)
    best_ckpt = out / "checkpoints" / f"checkpoint-{best_step}"
    assert best_ckpt.is_dir()  # kept despite save_total_limit=1
    assert max_diff(weights(out / "model"), weights(best_ckpt)) == 0.0
    # the final evaluation is of the best model: its ROUGE-L and its validation loss
    assert final["eval_rougeL"] == metrics["eval_rougeL"] == pytest.approx(best)
    best_row = next(r for r in in_training if r["step"] == best_step)
    assert final["eval_loss"] == pytest.approx(best_row["eval_loss"], abs=1e-6)
    if stop is not None and stop != best_step:
        last_row = next(r for r in in_training if r["step"] == stop)
        assert last_row["eval_loss"] != best_row["eval_loss"]  # so the check above tells the two apart


def test_tensorboard_logging(tiny_model_dir, tmp_path):
    cfg = small(tiny_model_dir, tmp_path / "tb", tensorboard=True)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'peftsum\[tensorboard\]'"):
            resolve(cfg)
        return
    train(cfg, log=quiet)
    events = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert len(acc.Scalars("train/loss")) == 2


# --------------------------------------------------------------------------- languages and the run record


@pytest.fixture(scope="module")
def multilingual_run(tiny_model_dir, tmp_path_factory):
    """One epoch on English (5 rows) + Russian (2 rows) from a local folder in XL-Sum's per-language layout."""
    from _rows import multilingual_folder

    root = tmp_path_factory.mktemp("multi")
    data = multilingual_folder(root)
    cfg = TrainConfig(model=str(tiny_model_dir), method="lora", languages=["english", "ru"], data=str(data),
                      output_dir=str(root / "run"), num_epochs=1, batch_size=4, val_samples=2,
                      max_source_length=64, max_target_length=32, eval_steps=0, save_steps=1)
    setup = build_trainer(cfg, log=quiet)
    dataset = setup.trainer.train_dataset
    tokens = sum(len(x) for x in dataset["attention_mask"]) + sum(len(x) for x in dataset["labels"])
    metrics = run_training(setup, log=quiet)
    return root / "run", metrics, tokens, len(dataset)


def test_languages_are_mixed_with_exponent_smoothing(multilingual_run):
    run, metrics, _, n_rows = multilingual_run
    n = {"english": 5, "russian": 2}
    alpha = 0.5
    z = sum(v ** alpha for v in n.values())
    expected = {lang: round(sum(n.values()) * v ** alpha / z) for lang, v in n.items()}  # 4 and 3
    assert metrics["language_sampling"] == {"alpha": alpha, "rows_per_language": expected}
    assert metrics["train_rows"] == n_rows == sum(expected.values())
    assert metrics["train_languages"] == ["english", "russian"]
    assert metrics["config"]["languages"] == ["english", "russian"]
    assert "english, russian" in (run / "README.md").read_text()


def test_zero_shot_evaluation_on_an_unseen_language(multilingual_run, tmp_path):
    from peftsum.generation.decode import GenerationSettings
    from peftsum.generation.evaluate import evaluate_model

    run, metrics, _, _ = multilingual_run
    assert "french" not in metrics["train_languages"]
    result = evaluate_model(str(run), "french", tmp_path / "fr" / "results.json", data="sample", num_samples=2,
                            settings=GenerationSettings(num_beams=1, max_new_tokens=8), n_resamples=10,
                            progress=False, log=quiet)
    assert result["language"] == "french" and result["num_examples"] == 2
    preds = (tmp_path / "fr" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(preds) == 2


def test_run_record_metrics(multilingual_run):
    run, metrics, tokens, n_rows = multilingual_run
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    # throughput from counted tokens: every non-padding source and target token of the one epoch
    assert metrics["tokens_seen"] == tokens and metrics["examples_seen"] == n_rows
    assert metrics["tokens_per_second"] == pytest.approx(tokens / metrics["train_runtime_s"])
    assert metrics["examples_per_second"] == pytest.approx(n_rows / metrics["train_runtime_s"])
    assert metrics["peak_rss_mb"] > 50
    assert (metrics["peak_gpu_mb"] is None) == (not torch.cuda.is_available())
    # the exact resolved config, as written at the start of the run
    saved = json.loads((run / "peftsum_config.json").read_text())
    assert metrics["config"] == saved and saved["learning_rate"] == 5e-4 and saved["method"] == "lora"
    import peft
    import transformers

    assert metrics["versions"]["torch"] == torch.__version__
    assert metrics["versions"]["transformers"] == transformers.__version__
    assert metrics["versions"]["peft"] == peft.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    if head.returncode == 0:
        assert metrics["git_commit"].split("-")[0] == head.stdout.strip()
    assert metrics["lm_head"]["ok"] is True and metrics["lm_head"]["checkpoint_has_lm_head"] is True
    hp = metrics["hyperparameters"]
    assert hp["r"] == 8 and hp["lora_alpha"] == 16 and hp["target_modules"] == ["q", "v"]
    assert hp["total_steps"] == metrics["global_step"] == 2
    # checkpoints are complete-marked
    assert all((p / ".peftsum_complete").is_file() for p in (run / "checkpoints").glob("checkpoint-*"))


def test_model_card_describes_the_run_and_its_loading_code_works(multilingual_run, tiny_model_dir):
    run, metrics, _, _ = multilingual_run
    card = (run / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: peft\n")
    assert f"base_model: {tiny_model_dir}" in card
    assert "| method | lora |" in card and "| r | 8 |" in card and "| target_modules | q, v |" in card
    assert "english, russian" in card and f"(data: `{metrics['data']}`)" in card
    assert f"| validation loss | {metrics['eval_loss']:,.4f} |" in card
    assert "p_i ~ n_i^0.5" in card and "english: 4, russian: 3" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "import peftsum" not in code and "from peftsum" not in code  # plain transformers/peft
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(run)  # the snippet loads "model" relative to the run folder, as the card says
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    model, tokenizer = namespace["model"], namespace["tokenizer"]
    assert type(model).__name__.startswith("PeftModel")
    out = model.generate(**tokenizer(["a short text"], return_tensors="pt"), max_new_tokens=3)
    assert out.shape[0] == 1


def test_single_file_data_warns_that_validation_is_training_data(tiny_model_dir, tmp_path):
    """One .jsonl serves every split (documented); training says so, because validation then measures fit."""
    from peftsum.data.xlsum import load_split

    rows = load_split("english", "train", "sample").rows[:4]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("id", "url", "title", "summary", "text")},
                                       ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    lines = []
    build_trainer(small(tiny_model_dir, tmp_path / "one-file", data=str(data)), log=lines.append)
    assert any("validation rows come from the training rows" in str(line) for line in lines)
    lines.clear()
    build_trainer(small(tiny_model_dir, tmp_path / "sample"), log=lines.append)
    assert not any("validation rows come from" in str(line) for line in lines)


@pytest.mark.parametrize("case", ["unknown method", "existing output"])
def test_cheap_input_errors_come_before_the_heavy_imports(tmp_path, case):
    """A typo or an existing run folder is reported before transformers is imported (seconds, not ~10 s)."""
    import subprocess
    import sys

    out = tmp_path / "run"
    if case == "existing output":
        out.mkdir()
        (out / "metrics.json").write_text("{}")
    method = "lroa" if case == "unknown method" else "lora"
    code = ("import sys\nfrom peftsum.config import TrainConfig\nfrom peftsum.errors import PeftsumError\n"
            "from peftsum.training.trainer import build_trainer\n"
            f"try:\n    build_trainer(TrainConfig(model='tiny', method={method!r}, output_dir={str(out)!r}))\n"
            "except PeftsumError as exc:\n    print('ERR', exc)\n"
            "print('transformers loaded:', 'transformers' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ERR" in res.stdout and ("did you mean lora" in res.stdout or "already exists" in res.stdout), res.stdout
    assert "transformers loaded: False" in res.stdout
