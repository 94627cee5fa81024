"""The tiny mT5: standard HF folder, multilingual tokenizer without <unk>, reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from peftsum.data.xlsum import load_split
from peftsum.errors import PeftsumError
from peftsum.modeling.tiny import build_tiny_model


def test_loads_with_plain_transformers_without_peftsum(tiny_model_dir):
    code = (
        "import sys\n"
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
        f"m = AutoModelForSeq2SeqLM.from_pretrained({str(tiny_model_dir)!r})\n"
        f"t = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})\n"
        "assert type(m).__name__ == 'MT5ForConditionalGeneration'\n"
        "assert m.lm_head.weight.data_ptr() != m.shared.weight.data_ptr(), 'head must be untied like mT5'\n"
        "ids = t('Hello world', return_tensors='pt').input_ids\n"
        "assert ids[0, -1].item() == t.eos_token_id == 1 and t.pad_token_id == 0\n"
        "assert 'peftsum' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("language", ["russian", "hindi", "chinese_simplified", "amharic", "burmese"])
def test_no_unknown_tokens_and_round_trip(tiny_tokenizer, language):
    rows = load_split(language, "validation").rows
    for row in rows:
        ids = tiny_tokenizer(row["summary"])["input_ids"]
        assert tiny_tokenizer.unk_token_id not in ids
    # byte fallback: a character that never occurs in the bundled rows still has no <unk>
    ids = tiny_tokenizer("ꙮ Ꙭ")["input_ids"]
    assert tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == "ꙮ Ꙭ"


def test_sentinels_exist(tiny_tokenizer):
    ids = tiny_tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"])
    assert ids[0] == len(tiny_tokenizer) - 1 and ids[1] == len(tiny_tokenizer) - 100


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_and_no_silent_overwrite(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model_dir)
    with pytest.raises(PeftsumError, match="--overwrite"):
        build_tiny_model(tmp_path / "again")
