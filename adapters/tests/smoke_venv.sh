#!/usr/bin/env bash
# Creates (or reuses) the virtual environment the psr smoke test runs in: CPU-capable torch and
# diffusers from PyPI, pinned by adapters/psr/requirements.txt. Prints its python on stdout.
#
#   SCRBENCH_SMOKE_VENV  where (default: $HOME/.cache/scrbench/smoke-venv-psr, outside the
#                        repository so that a fresh clone, as in CI, reuses it on the same machine)
#
# The venv is rebuilt when the requirements change (their copy is kept inside it). A cold install
# downloads about 3 GB (PyPI's Linux torch wheels carry CUDA libraries) and takes about 2 minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$here/psr/requirements.txt"
venv="${SCRBENCH_SMOKE_VENV:-$HOME/.cache/scrbench/smoke-venv-psr}"
stamp="$venv/scrbench-requirements.txt"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
  echo "smoke venv: $venv (up to date)" >&2
else
  echo "smoke venv: installing $requirements into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
"$venv/bin/python" -c "import torch, diffusers, transformers; print('smoke venv: torch', torch.__version__, 'diffusers', diffusers.__version__, file=__import__('sys').stderr)"
echo "$venv/bin/python"
