"""Run several ``peftsum`` commands in one process launched by ``torchrun`` (used by test_distributed.py).

Starting torch, transformers and a process group costs ~10 s per process on the 2 shared test
cores, so the multi-process tests launch *one* ``torchrun --nproc-per-node 2`` job that runs every
command of a JSON list in turn, exactly as ``torchrun -m peftsum <command>`` would run each
(``peftsum experiment`` runs several trainings and evaluations in one process the same way).

Usage: ``torchrun --nproc-per-node 2 tests/dist_driver.py JOBS.json`` where JOBS.json is a list
of argument lists (``[["train", "--model", ...], ["evaluate", ...]]``). Exits with the first
non-zero status.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Run each job of ``sys.argv[1]`` through peftsum's CLI; return the first failing status (else 0)."""
    from peftsum import cli
    from peftsum.distributed import is_main

    cli.console.quiet = not is_main()
    for argv in json.loads(open(sys.argv[1], encoding="utf-8").read()):
        try:
            code = cli.app(args=[str(a) for a in argv], standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        if code:
            print(f"job failed ({code}): {argv}", file=sys.stderr)
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
