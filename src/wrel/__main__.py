"""`python -m wrel` (also what `torchrun -m wrel` runs)."""

from wrel.cli import main

raise SystemExit(main())
