"""Sphinx configuration of the sklearn-cnn documentation.

Build with ``docs/build.sh`` (warnings are errors; the gallery runs every
``examples/plot_*.py``).
"""

from datetime import date

import sklearn_cnn

project = "sklearn-cnn"
author = "The sklearn-cnn developers"
copyright = f"2024-{date.today().year}, {author}"
release = sklearn_cnn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
default_role = "literal"

# -- API reference -------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
# numpydoc lists the methods itself (from the class template below); without
# this, every method would also get a stub page of its own.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    # scikit-learn generates set_{method}_request for metadata routing on every
    # estimator; their docstrings point into scikit-learn's own user guide.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)


# -- gallery -----------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Run every example at build time, so that the gallery shows real output.
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    # "Examples using X" on every API page (see _templates/autosummary/).
    "backreferences_dir": "generated",
    "doc_module": ("sklearn_cnn",),
    "reference_url": {"sklearn_cnn": None},
    "inspect_global_variables": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "matplotlib_animations": False,
    "show_memory": False,
}

# -- changelog (Markdown) -----------------------------------------------------------
myst_heading_anchors = 2
suppress_warnings = ["myst.header"]

# -- HTML -------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-cnn {release}"
html_theme_options = {
    "github_url": "https://github.com/sklearn-cnn/sklearn-cnn",
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
# custom.css and wrap_names.js: long API names wrap between their parts, and
# long code lines wrap, at every width (see the comments in custom.css).
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_js_files = ["wrap_names.js"]
html_show_sourcelink = False
