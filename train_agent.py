"""Train one agent on one layer-tying environment: `python train_agent.py --help`."""

from agents.runs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
