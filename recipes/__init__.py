"""Recipes that make the artifacts ragapp ships, kept out of the runtime packages.

Each subpackage is run as a module from the repository root (`python -m recipes.ragchat.make_model`). A
recipe imports `ragapp` and `llm` (and, to write its BENCHMARKS.md section, `benchmarks`); neither
`ragapp` nor `llm` ever imports a recipe, and `recipes` is not part of the installed distribution.
"""
