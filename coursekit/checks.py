"""Auto-checks for the exercises, one namespace for the notebooks (``checks.check_soften(soften)``): Part 1's
checkers live in ``coursekit.imagechecks``, Part 2's in ``coursekit.textchecks``, chapter 11's in
``coursekit.quantchecks``, chapter 12's in ``coursekit.deploychecks``, chapter 13's in
``coursekit.speechchecks``, the hint ladder in
``coursekit.hints``. Each check returns True when it passes and raises AssertionError with a hint otherwise.
"""

from __future__ import annotations

from .deploychecks import *  # noqa: F403
from .deploychecks import __all__ as _deploy_checks
from .hints import reset_hints
from .imagechecks import *  # noqa: F403
from .imagechecks import __all__ as _image_checks
from .quantchecks import *  # noqa: F403
from .quantchecks import __all__ as _quant_checks
from .speechchecks import *  # noqa: F403
from .speechchecks import __all__ as _speech_checks
from .textchecks import *  # noqa: F403
from .textchecks import __all__ as _text_checks

__all__ = [*_image_checks, *_text_checks, *_quant_checks, *_deploy_checks, *_speech_checks, "reset_hints"]
