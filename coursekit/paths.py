"""Where the course's files are: the repository, the data dir, the cache folder, and what a relative path a user
typed means.

A relative path (``COURSEKIT_DATA=../shared/datasets``, ``-p data_dir=...``) means what it means in the shell it
was typed in. The course's commands resolve it once, where they start (``coursekit run``, ``coursekit lab``), and
pass the absolute path on; a kernel started some other way (papermill with ``--cwd notebooks``, a Jupyter server
started by hand) runs in another folder than the user's shell, so a relative path is taken from ``$PWD``: the
shell sets it to the folder the command was typed in, and a process started with another working directory
(``subprocess.Popen(cwd=...)``, as papermill and Jupyter start their kernels) inherits it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "user_path", "default_data_dir", "cache_dir", "absolute_data_env"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "COURSEKIT_DATA"


def _shell_dir() -> Path:
    """The folder of the shell that started this process tree: $PWD when it names an existing absolute folder,
    else the working directory."""
    pwd = os.environ.get("PWD", "")
    if pwd and os.path.isabs(pwd) and os.path.isdir(pwd):
        return Path(pwd)
    return Path.cwd()


def user_path(raw: str | os.PathLike) -> Path:
    """``raw`` as an absolute path: ``~`` expanded, a relative path taken from the user's shell folder."""
    p = Path(raw).expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(_shell_dir() / p))


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else $COURSEKIT_DATA, else the repository's data/ folder; always absolute."""
    if data_dir is not None:
        return user_path(data_dir)
    env = os.environ.get(DATA_ENV)
    return user_path(env) if env else REPO_ROOT / "data"


def absolute_data_env(environ=None) -> dict:
    """A copy of ``environ`` (default os.environ) with $COURSEKIT_DATA made absolute (``user_path``), for the commands
    that start kernels elsewhere (``coursekit run``, ``coursekit lab``)."""
    env = dict(os.environ if environ is None else environ)
    if env.get(DATA_ENV):
        env[DATA_ENV] = str(user_path(env[DATA_ENV]))
    return env


def cache_dir() -> Path:
    """$COURSEKIT_CACHE, else $XDG_CACHE_HOME/coursekit, else ~/.cache/coursekit."""
    env = os.environ.get("COURSEKIT_CACHE")
    if env:
        return user_path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "coursekit"
