"""The recipe of ragapp's default chat model (models/ragchat) and of the gate's calibration.

`make_model` remakes the model from ../shared/data's training sets with `llm` and the app-specific recipes
beside it (ragchat-*.toml): `training_data` builds the grounded examples, `model_eval` scores checkpoints on
the held-out dev prompts, `model_compare` measures the starting points, and `calibrate` writes the gate and
citation calibration (ragapp/answer/calibration.json). Paths are in `config`. It imports `ragapp` and `llm`, and
is never imported by them: run it from the repository root, e.g. `python -m recipes.ragchat.make_model`
(`make model`).
"""
