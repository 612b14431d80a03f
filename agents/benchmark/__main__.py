"""`python -m agents.benchmark`."""

from agents.benchmark.cli import main

raise SystemExit(main())
