"""Sphinx configuration: ``nox -s docs`` builds the site into docs/_build/html.

Everything is built offline: no intersphinx, no diagram tools, no
JavaScript fetched from elsewhere. The state diagram is drawn at build time
from the library's own transition table (``_ext/netstream_docs.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the package, when it is not installed

import trio_netstream  # noqa: E402

project = "trio_netstream"
author = "the trio_netstream developers"
copyright = "the trio_netstream developers, MIT licence"
release = version = trio_netstream.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxcontrib_trio",
    "myst_parser",
    "netstream_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to ###, so pages can link to sections.
myst_heading_anchors = 3

# autodoc: members in source order, signatures with their types.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Defaults as values (host='127.0.0.1'), not as the source spells them (DEFAULT_HOST).
autodoc_preserve_defaults = False
autodoc_default_options = {"members": True, "show-inheritance": False}
add_module_names = False
python_use_unqualified_type_names = True

pygments_style = "sphinx"
html_theme = "alabaster"
html_title = f"trio_netstream {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "description": "Node.js net streams on Trio's structured concurrency",
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_show_sourcelink = True

# The docstrings use Google style sections (Args:, Returns:, Raises:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
