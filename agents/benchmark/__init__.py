"""The benchmark: agents x seeds on one environment, as run specs, with tables and plots.

| module           | role                                                                      |
|------------------|---------------------------------------------------------------------------|
| `tracks`         | named, versioned settings (`--track NAME`): everything but the agents     |
| `cells`          | `Request`: the validated sweep, one `RunSpec` per (agent, seed) cell      |
| `launcher`       | `run_benchmark`: the missing cells, claimed, run in a pool, reported      |
| `attempt`        | one attempt at a cell (in this process) and how it ended                  |
| `claims`         | a runner's claim on a cell's folder: exclusive, heartbeat, stale          |
| `local_launcher` | the cells in processes on this machine (`--launcher local`, `--gpus`)     |
| `ray_launcher`   | the same cells as Ray tasks (`--launcher ray`)                            |
| `stats`          | IQM, intervals, P(improvement), profiles, hypervolume (rliable, pymoo)    |
| `report`         | `summarize`: results.json, results.md and the plots from the cells        |
| `plots`          | interval, Pareto, learning-curve and profile figures                      |
| `leaderboard`    | `docs/leaderboard.md` from the tracks' results files                      |
| `noise`          | a track's reward noise against the effect of one decision                 |
| `cli`            | `python -m agents.benchmark`: options or a track -> `Request` -> launcher |
"""

from agents.benchmark.cli import main
from agents.benchmark.launcher import run_benchmark
from agents.benchmark.report import summarize

__all__ = ["main", "run_benchmark", "summarize"]
