#!/usr/bin/env bash
# Build the HTML documentation as CI does: every warning is an error, and the
# gallery runs every examples/plot_*.py. Output: docs/_build/html/index.html.
# Needs the docs extra: pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")"
rm -rf _build generated auto_examples
python -m sphinx -W --keep-going -b html . _build/html "$@"
echo "The HTML documentation is in $PWD/_build/html: open $PWD/_build/html/index.html"
