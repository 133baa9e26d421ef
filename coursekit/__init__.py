"""coursekit: the tested helpers behind the course notebooks on making networks smaller and faster.

One module per idea, in three layers: the core (paths, files, distributed, runsettings, validate, env, settings,
profiles, recipe, train, checkpoints, metrics, stats, ledger, plots, params, downloads, runtimes, editions), Part 1 on
images (data, models, transfer, distill, prune, trim) and Part 2 on text and language models (pretrained, textdata,
textmodels, textprune, layerscores, sparsity, llm), with three front doors (session, checks, cli).
docs/ARCHITECTURE.md is the map and the import rules; tests/test_architecture.py checks them. Notebooks import from
here; nothing is copied between notebooks.
"""

__version__ = "0.1.0"
