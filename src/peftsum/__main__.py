"""``python -m peftsum`` = the ``peftsum`` command."""

from peftsum.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports this module in a run's process
    main()
