#!/usr/bin/env bash
# Create Airflow's own virtualenv .venv-airflow/ from airflow/requirements.txt.
#
# Idempotent and quick when done: a stamp file named after the requirements' hash says the
# install is current; edit requirements.txt and the next run reinstalls.
#
# Environment:
#   PYTHON               interpreter for a new venv (default python3; Airflow 3.1 needs 3.10-3.13)
#   AIRFLOW_VENV         where to create it (default <project>/.venv-airflow)
#   AIRFLOW_CONSTRAINTS  optional pip constraints file or URL (e.g. Airflow's official one)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(dirname "$here")"
venv="${AIRFLOW_VENV:-$project/.venv-airflow}"
requirements="$here/requirements.txt"
python="${PYTHON:-python3}"
hash="$(cat "$requirements" | sha1sum | cut -c1-12)"
stamp="$venv/.installed-$hash"

if [[ -f "$stamp" ]]; then
    echo "airflow venv up to date: $venv"
    exit 0
fi

"$python" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 13)))' || {
    echo "setup-venv.sh: error: Airflow 3.1 needs Python 3.10-3.13; set PYTHON to one" >&2
    exit 2
}
started=$SECONDS
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
constraints=()
if [[ -n "${AIRFLOW_CONSTRAINTS:-}" ]]; then
    constraints=(--constraint "$AIRFLOW_CONSTRAINTS")
fi
"$venv/bin/python" -m pip install -q -r "$requirements" "${constraints[@]}"
rm -f "$venv"/.installed-*
touch "$stamp"
echo "airflow venv ready in $((SECONDS - started))s: $venv"
