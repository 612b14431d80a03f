"""The harness that runs one agent on one environment.

| module   | role                                                              |
|----------|-------------------------------------------------------------------|
| `spec`   | `RunSpec`: what defines a run, checked up front, saved as run.json |
| `driver` | `run(spec)`: build, drive, summarize and save one run              |
| `resume` | checkpoints at the agent's boundaries, and continuing from one     |
| `runlog` | `RunLog`: the wrapper that records every decision                  |
| `plots`  | the run's figures (tie map over time, perplexity curves)           |
| `folder` | the run folder's lock; never overwriting another run               |
| `result` | `RunResult`: the one writer and reader of `result.json`            |
| `factory` | the environment and the agent of a spec, errors as the spec's     |
| `card`   | the model card of a run's `model/` folder                          |
| `protocol` | the train-then-evaluate protocol (`RunSpec.train_episodes`)      |
| `episodelog` | a train-then-evaluate run's per-episode curves (TensorBoard, tracker) |
| `tracking` | an optional experiment tracker (MLflow or W&B, offline by default) |
| `config` | `--config FILE`: options from YAML, TOML or JSON                   |
| `cli`    | `train-agent`: options -> `RunSpec` -> `driver.run`                |
| `replay` | a run's tie-map video from its log; its saved agent played again   |
"""
