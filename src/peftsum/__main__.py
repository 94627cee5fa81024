"""``python -m peftsum`` = the ``peftsum`` command."""

from peftsum.cli import main

main()
