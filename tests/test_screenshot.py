"""The README's screenshot shows a real run of the shipped default experiment."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_screenshot_is_of_the_shipped_default():
    from peftsum.experiments.config import load_experiment
    from peftsum.modeling.pretrain import pretrained_tiny_name

    side = json.loads((DOCS / "report_screenshot.json").read_text(encoding="utf-8"))
    assert (DOCS / side["screenshot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown, default = side["experiment"], load_experiment(None)
    assert shown["name"] == default.name and shown["model"] == default.model
    assert shown["pretrain_steps"] == default.pretrain_steps
    assert shown["methods"] == default.methods and shown["languages"] == default.languages
    assert shown == default.to_dict()  # budgets, generation settings: all of it
    assert side["base_models"] == [pretrained_tiny_name(default.pretrain_steps)]
    assert sorted(side["runs"]) == sorted(f"{m['method']}-{lang}-s42" for m in default.methods
                                          for lang in default.languages)
    assert set(side["runs"].values()) == {"done"}


def test_report_css_names_fonts_for_every_bundled_script():
    from peftsum.reporting.render import _CSS

    for family in ("Noto Sans", "Noto Sans CJK SC", "Noto Sans Devanagari", "Noto Sans Arabic",
                   "Noto Sans Ethiopic", "Noto Sans Myanmar", "Noto Sans Thai"):
        assert f"'{family}'" in _CSS, family
