"""Sphinx configuration for the mq_transaction documentation site (Markdown via myst-parser).

Built by ``make docs`` with warnings as errors (``-W --keep-going``), so a broken link, a
page missing from the toctree or an unknown code-block language fails the build, and CI.
Nothing is suppressed here: a warning is a real problem to fix in the page.
"""

from mq_transaction import __version__

project = "mq_transaction"
release = __version__
author = "the mq_transaction developers"
copyright = "the mq_transaction developers"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Anchors for headings down to ###, so pages can link to "mq-send.md#exit-status".
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "mq_transaction"
html_theme_options = {
    "description": "A transactional, persistent outgoing mail queue for Python web apps",
    "fixed_sidebar": True,
}
