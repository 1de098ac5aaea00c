#!/usr/bin/env bash
# The main job on built-in demo data, on a fresh machine:
#   set up .venv -> generate Cityscapes-format data -> convert it with
#   cityscapesscripts -> train a small WaveMix -> evaluate with tools/test.py
#   (mIoU table) -> save prediction overlays.
# Usage: bash tools/run_demo.sh [extra tools/train.py --cfg-options ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
DATA=data/cityscapes_demo
CONFIG=configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py
WORK_DIR=work_dirs/wavemix_16x2_l4_cityscapes-demo
export PYTHONUNBUFFERED=1

if [[ ! -f "$DATA/val.txt" ]]; then
  echo "== generating Cityscapes-format demo data in $DATA"
  "$PY" tools/dataset_converters/make_demo_cityscapes.py "$DATA" --num-train 8 --num-val 2
  echo "== converting polygons to train IDs with cityscapesscripts"
  "$PY" tools/dataset_converters/cityscapes.py "$DATA" --nproc 2
fi

echo "== training $CONFIG (a few minutes on CPU)"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"

CHECKPOINT="$(cat "$WORK_DIR/last_checkpoint")"
echo "== evaluating $CHECKPOINT"
"$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR/test" \
  --show-dir "$WORK_DIR/overlays"

cat <<MSG

== done
  data:        $DATA (raw leftImg8bit/ + gtFine/ polygons, converted *_labelTrainIds.png)
  checkpoints: $WORK_DIR (best: $(ls "$WORK_DIR"/best_mIoU_*.pth 2>/dev/null | head -1))
  train log:   $(ls -d "$WORK_DIR"/2*/ | tail -1)
  mIoU table:  $(ls -d "$WORK_DIR"/test/2*/ | tail -1)*.log
  overlays:    $WORK_DIR/overlays/vis_data/vis_image/ (ground truth | prediction)
MSG
