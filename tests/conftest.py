"""Shared fixtures: the tiny mT5 (built once per session) and real bundled XL-Sum rows."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Precision: tests run in fp32 unless PEFTSUM_BF16 says otherwise, so no outcome depends on whether
# this CPU has native bf16 (AMX/AVX512-BF16: auto would turn bf16 on). .ci/run runs the suite with
# PEFTSUM_BF16=0 and the precision-sensitive files again with PEFTSUM_BF16=1.
os.environ.setdefault("PEFTSUM_BF16", "0")
# The data cache (validated and tokenized Arrow tables, peftsum.data.cache) goes to a folder of this session
# (inherited by the CLI subprocesses of the tests), never into the user's ~/.cache/peftsum.
if "PEFTSUM_DATA_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["PEFTSUM_DATA_CACHE"] = tempfile.mkdtemp(prefix="peftsum-test-data-cache-")
    atexit.register(shutil.rmtree, os.environ["PEFTSUM_DATA_CACHE"], True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random mT5 + SentencePiece tokenizer trained on the bundled rows (built once, ~20 s)."""
    from peftsum.modeling.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-mt5")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny model's tokenizer, loaded with plain transformers."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def one_thread():
    """Two shared cores: one torch thread is faster than two fighting ones.

    Modules that train opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def no_dropout_dir(tiny_model_dir, tmp_path_factory):
    """The tiny mT5 with dropout 0: a training step is then a deterministic function of the batch."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("nodrop") / "tiny-mt5-nodrop"
    shutil.copytree(tiny_model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["dropout_rate"] = 0.0
    (out / "config.json").write_text(json.dumps(cfg))
    return out
