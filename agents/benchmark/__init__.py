"""The benchmark: agents x seeds on one environment, as run specs, with tables and plots.

| module     | role                                                                |
|------------|---------------------------------------------------------------------|
| `cells`    | `Request`: the validated sweep, one `RunSpec` per (agent, seed) cell |
| `launcher` | `run_benchmark`: the missing cells, each in its own process         |
| `report`   | `summarize`: results.json, results.md and the plots from the cells  |
| `cli`      | `python -m agents.benchmark`: options -> `Request` -> launcher      |
"""

from agents.benchmark.cli import main
from agents.benchmark.launcher import run_benchmark
from agents.benchmark.report import summarize

__all__ = ["main", "run_benchmark", "summarize"]
