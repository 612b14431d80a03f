"""The surrogate track's tools: logged transitions, fitting, validation (`docs/surrogate.md`).

The environment side (features, the ensemble, `LayerTying-Surrogate-*` ids) lives in
`tying_env.surrogate` and needs neither torch nor this package.
"""
