"""Write docs/run_format.md from peftsum.run_format (``python scripts/gen_run_format_doc.py``).

``tests/test_run_format.py`` checks that the committed file equals this output.
"""

from __future__ import annotations

from pathlib import Path

from peftsum.run_format.docs import render_docs

if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "run_format.md"
    target.write_text(render_docs(), encoding="utf-8")
    print(f"wrote {target}")
