"""``python -m orient.cli`` (used by torchrun)."""

from orient.cli import main

main()
