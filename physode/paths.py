"""Where physode keeps files it generates: ``cache_root()``.

Generated PEtab model code (:mod:`physode.petab.cache`) and the small-block allocator
library (:mod:`physode.ode.allocator`) live under one folder, so one setting moves or
clears both: ``$PHYSODE_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/physode``
(``~/.cache/physode``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """physode's cache folder (not created here)."""
    root = os.environ.get("PHYSODE_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "physode"


__all__ = ["cache_root"]
