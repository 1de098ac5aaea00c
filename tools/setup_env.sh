#!/usr/bin/env bash
# Creates (or reuses) the virtual environment `.venv` at the repository root with
# torch, full mmcv (with ops), mmsegmentation, mmpretrain and this plugin in editable mode.
#
# Idempotent: a finished environment is recognised by a stamp that records the inputs
# it was built from, so a second run returns in seconds. pip's wheel cache keeps the
# compiled mmcv wheel, so even a fresh `.venv` rebuilds in a minute or two.
#
# Environment variables:
#   VENV           where to create the environment (default: <repo>/.venv)
#   PYTHON         interpreter used to create it (default: python3)
#   TORCH_SPEC     torch requirement installed when no torch is present
#                  (default: torch==2.13.0, the CPU build; CUDA users see README "GPU")
#   TORCH_INDEX_URL  extra index for TORCH_SPEC (e.g. https://download.pytorch.org/whl/cu121)
#   MMCV_SPEC      mmcv requirement (default: mmcv==2.1.0, compiled with ops if no wheel fits)
#   FORCE=1        reinstall even if the stamp says the environment is up to date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MMCV_SPEC="${MMCV_SPEC:-mmcv==2.1.0}"
STAMP="$VENV/.mmseg_wavemix-installed"

log() { printf '[setup_env] %s\n' "$*" >&2; }

# What the environment is built from: when any of it changes, the install runs again.
inputs_digest() {
  cat "$ROOT/setup.py" "$ROOT/requirements"/*.txt "$ROOT/tools/setup_env.sh" 2>/dev/null |
    { printf '%s|%s|' "$TORCH_SPEC" "$MMCV_SPEC"; cat; } | sha256sum | cut -d' ' -f1
}

DIGEST="$(inputs_digest)"
if [[ "${FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$DIGEST" ]]; then
  log "environment $VENV is up to date"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
export PIP_PROGRESS_BAR=off

# Build tools first: mmcv is built without isolation against them, and
# pytorch_wavelets needs pkg_resources (gone from setuptools >= 81).
"${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja

# torch before anything that depends on it, so no package pulls a second (CUDA) torch.
if "$PY" -c "import torch" 2>/dev/null; then
  log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing $TORCH_SPEC"
  if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    "${PIP[@]}" install "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" install "$TORCH_SPEC"
  fi
fi

# Full mmcv with compiled ops (mmseg imports mmcv.ops). No prebuilt wheel exists for
# recent torch, so pip compiles it once (15-25 min on 2 cores) and caches the wheel.
if "$PY" -c "import mmcv.ops" 2>/dev/null; then
  log "keeping installed mmcv $("$PY" -c 'import mmcv; print(mmcv.__version__)')"
else
  log "installing $MMCV_SPEC with ops (first build compiles for 15-25 minutes; later runs reuse pip's cache)"
  "${PIP[@]}" install -q mmengine==0.10.7 opencv-python-headless
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" install --no-build-isolation "$MMCV_SPEC"
fi

# mmpretrain imports torchvision. Install the release that matches the installed
# torch without its dependencies, so it cannot replace torch; on a CPU-only torch
# its compiled ops do not load, which mmseg_wavemix.compat works around.
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)"; then
  TORCHVISION_SPEC="$("$PY" -c "import torch; minor = int(torch.__version__.split('.')[1]); print(f'torchvision==0.{minor + 15}.*')")"
  log "installing $TORCHVISION_SPEC (no dependencies) for mmpretrain"
  "${PIP[@]}" install -q --no-deps "$TORCHVISION_SPEC"
fi

log "installing mmseg_wavemix (editable) with its test, classification and deployment extras"
"${PIP[@]}" install -q -r "$ROOT/requirements/constraints.txt" -e "$ROOT[tests,cls,deploy]"

"$PY" - <<'PY'
import mmcv.ops  # noqa: F401  (fails if mmcv was built without ops)
import mmengine, mmseg, torch, mmseg_wavemix
import mmseg_wavemix.classification  # noqa: F401  (mmpretrain, torchvision)
import mmcv, mmpretrain.models  # noqa: F401
print(f'[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, '
      f'mmseg_wavemix {mmseg_wavemix.__version__}')
PY
echo "$DIGEST" > "$STAMP"
log "ready: source $VENV/bin/activate"
