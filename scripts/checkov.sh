#!/usr/bin/env bash
# Scan terraform/ with Checkov, in its own virtualenv (.venv-checkov): Checkov pins many packages
# that must not meet the project's. Skips, each with its reason, are in .checkov.yaml.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-checkov"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/checkov" ]]; then
  echo "checkov.sh: installing Checkov into $venv (takes a few minutes, once)" >&2
  "$python" -m venv "$venv"
  # The virtualenv is a build artefact: keep it out of git without touching .gitignore.
  printf '*\n' >"$venv/.gitignore"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'checkov>=3.2,<4' >"$venv/install.log" 2>&1 || {
    cat "$venv/install.log" >&2
    exit 1
  }
fi

cd "$root"
exec "$venv/bin/checkov" \
  --config-file "$root/.checkov.yaml" \
  -d terraform \
  --framework terraform \
  --skip-download \
  --compact \
  --quiet \
  "$@"
