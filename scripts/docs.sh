#!/usr/bin/env bash
# Builds the documentation site into site/ (or the directory given) with
# mkdocs --strict: a broken link, a page missing from the nav or a reference
# that does not resolve fails the build. Needs no Rust build: the Python
# reference is read from the source and the stub. `mkdocs serve` in the same
# environment serves it while you edit.
#
#   bash scripts/docs.sh [SITE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
usm_venv "${USM_DOCS_VENV:-.venv-docs}"
python -m pip install -q -r docs/requirements.txt
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "${1:-site}"
