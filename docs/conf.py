"""Sphinx configuration for physode's documentation site.

``make docs`` builds it with the example gallery executed; ``make docs-check`` (what CI
runs) builds it with warnings as errors and the gallery rendered but not executed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import physode  # noqa: E402

project = "physode"
author = "the physode developers"
copyright = "2026, the physode developers"
release = physode.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json",
                    "sg_execution_times.rst"]

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autosummary_generate = False

# The docstrings are Google style ("Args:", "Returns:", "Attributes:"); napoleon turns those
# sections into field lists instead of RST block quotes.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

# The gallery runs every example when PHYSODE_DOCS_EXECUTE=1 (``make docs``); CI renders the
# pages without running them, which keeps the check fast.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",
    "plot_gallery": os.environ.get("PHYSODE_DOCS_EXECUTE", "0") == "1",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "remove_config_comments": True,
}

html_theme = "furo"
html_title = f"physode {release}"
nitpicky = False
