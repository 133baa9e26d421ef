"""coursekit: the tested helpers behind the course notebooks on making networks smaller and faster.

One module per idea, in three layers: the shared core (settings, recipe, training loop, measurement, ledger, model
cache, files and paths), Part 1 on images (chapters 00-06) and Part 2 on text and language models (07-10), with
three front doors (session, checks, cli). The module map and the import rules are docs/ARCHITECTURE.md;
tests/test_architecture.py checks both against this folder. Notebooks import from here; nothing is copied between
notebooks.
"""

__version__ = "0.1.0"
