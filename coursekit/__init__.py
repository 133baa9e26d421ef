"""coursekit: the tested helpers behind the course notebooks on making networks smaller and faster.

One module per idea: profiles, env, data, models, train, metrics, ledger,
plots, checks, session, cli. Notebooks import from here; nothing is copied
between notebooks.
"""

__version__ = "0.1.0"
