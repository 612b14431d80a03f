"""A surrogate of a benchmark track: the environment emulated by a model of logged runs.

`tying_env.surrogate.features` computes what the model sees of a decision and its episode,
`tying_env.surrogate.model` holds the ensemble (numpy inference);
`tying_env.surrogate.env` the environment, with the real one's spaces, info keys, masks
and budget; the fitted models ship beside them (`<track>.safetensors` and `.json`).
"""
