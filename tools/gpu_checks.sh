#!/usr/bin/env bash
# The CUDA tests and the GPU benchmarks in one run, a short table last; the targets' rows first (tests, training and
# its memory, then inference), each step's JSON written as it ends. On an H100 in session 14
# all steps took 548 s (the tests 1.7 minutes in 4 processes with pytest-xdist: most of their time is Triton
# compiling on the host; a fresh machine's start was about a minute more); steps were added since. In session 23
# (H100) the tests took 176 s and the training step was cut at 286 s while measuring peak memory: each entry's
# inference and training peaks were taken in fresh processes, about 20 s each (now one process per entry). In
# session 26 (H100) the tests took 156 s, the training tables 255 s and the training profile 51 s; the rest ran in a
# second call (181 s). In session 28 (H200) the tests took 177 s, the training table 188 s, the profiles and memory
# reports 97 s; the rest 164 s in a second call. In session 29 (H200) the tests took 188 s, the training table
# 202 s, the graphed row with expandable segments 62 s (alone then); the memory reports about 45 s. Session 30 (no
# GPU) added the recipe step after the tests, session 31 the data step; in session 37 (H200) the tests took 210 s, the
# recipe step was cut at 264 s in its fourth run (now three), the data step 45 s and the peers 135 s (a second
# call). The training table, measured in sessions 28 and 29, waits for a second call (STEP_NEEDS). All steps end by
# DEADLINE seconds (default 470: the run's 8 minutes, so that a session's 15 minutes of device time hold the
# machine's start, this run and a second call for the rest): a step that would start later is not run, one still
# running then is cut, and the summary says which, with the SKIP that runs the rest in a second call, and the
# seconds of each step.
#
#   bash tools/gpu_checks.sh [OUT_DIR]      # default: work_dirs/gpu
#   SKIP="tests inference training" bash tools/gpu_checks.sh OUT   # the rest only (steps: tests recipe
#                                           # data training memory train_profile inference peers haar focal
#                                           # profile level_mlp)
#   SWEEP=1 bash tools/gpu_checks.sh        # also the level-MLP kernels' tile sweep (about 1.5 minutes more)
#   COMPILE_TRAIN=1 bash tools/gpu_checks.sh  # also the recipe's training step under torch.compile (minutes more)
#   PLAIN=1 bash tools/gpu_checks.sh        # also the training step without memory_efficient (half a minute more)
#   INFERENCE_ALL=1 bash tools/gpu_checks.sh  # also the inference rows fast,no_fuse_mlp and fast,compile
#   ARCHIVE=$OUT/gpu.tar.gz bash tools/gpu_checks.sh /tmp/gpu  # the JSON files and the profiles' Chrome traces
#                                           # also packed in one file at the end
#                                           # (the device tool brings back a few files only)
#
# Needs torch with CUDA (its Triton included), the project's Python dependencies, pytest and the authors'
# wavemix==0.2.4 importable (or its directory in AUTHORS_PACKAGE). On a
# machine without a package index: ../shared/gpu/README.md (bundle .gpu/, then `source .gpu/env.sh &&`);
# pytest travels as wheels too: `pip download --no-deps --only-binary=:all: --python-version 3.12
# --platform manylinux2014_x86_64 -d .gpu/whl pytest pluggy iniconfig packaging hypothesis sortedcontainers
# pytest-xdist execnet`; the recipe and data steps make their data with cityscapesScripts (and its pyquaternion):
# `pip download ... -d .gpu/whl cityscapesScripts==2.3.0 pyquaternion` (session 37).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-work_dirs/gpu}"
mkdir -p "$OUT"
C=configs/wavemix/wavemix_256x16_l4_cityscapes.py
AUTHORS_PACKAGE="${AUTHORS_PACKAGE:-}"
status=0
START=$SECONDS
DEADLINE="${DEADLINE:-470}"
# A step that hangs (a compilation, say) is cut after STEP_TIMEOUT seconds, or at DEADLINE; the others still run.
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
MIN_STEP="${MIN_STEP:-20}"  # a step is not started with less time than this left
# NAME:SECONDS of steps that need more to give anything (cut early they waste the time): not started with less
# left, and later, shorter steps still run. The training table took 202 s in session 29; the recipe step writes each
# run as it ends.
STEP_NEEDS="${STEP_NEEDS-training:180 recipe:120 data:45}"
DONE="" UNFINISHED=""  # step names whose commands all ran to their end / one of which was cut or not started
TIMES=""  # each command's step name and seconds, for the summary (which steps to trim to keep the run short)
# step NAME TITLE COMMAND...: skipped where SKIP names it
step() {
  local name=$1 title=$2; shift 2
  if [[ " ${SKIP:-} " == *" $name "* ]]; then echo; echo "=== skipped: $title"; return; fi
  local left=$((DEADLINE - (SECONDS - START)))
  ((left > 0)) || left=0
  local limit=$((STEP_TIMEOUT < left ? STEP_TIMEOUT : left))
  local need=$MIN_STEP item
  for item in $STEP_NEEDS; do [[ ${item%%:*} == "$name" ]] && need=${item#*:}; done
  if ((limit < need)); then
    echo; echo "=== not started, ${left} s left of DEADLINE=${DEADLINE} (it needs ${need} s): $title"
    UNFINISHED+=" $name"; return
  fi
  echo; echo "=== $title"
  local begin=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  TIMES+=" $name $((SECONDS - begin))"
  if ((rc == 124)); then
    status=1; UNFINISHED+=" $name"; echo "=== cut after ${limit} s: $*"
  else
    ((rc == 0)) || { status=1; echo "=== failed (exit $rc): $*"; }
    DONE+=" $name"
  fi
}

python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())' || exit 1
# Most of the tests' time is Triton compiling and tuning kernels on the host: 8 processes share it (pytest-xdist,
# where installed; session 23 on an H100: 151 s in 4, the slowest test 72 s; 8 not measured yet). Their own Triton
# cache: the tuners keep their timings on disk (cache_results), and timings taken beside other processes must not
# choose the benchmarks' tiles.
TEST_ARGS=()
python3 -c 'import xdist' 2>/dev/null && TEST_ARGS=(-n "${TEST_WORKERS:-8}")
TRITON_CACHE_DIR="${TMPDIR:-/tmp}/gpu_checks_triton_tests" STEP_TIMEOUT=$((STEP_TIMEOUT > 420 ? STEP_TIMEOUT : 420)) \
  step tests "CUDA tests" python3 -m pytest tests/test_cuda.py "${TEST_ARGS[@]}" -q -p no:warnings \
  -p no:cacheprovider -rf --tb=short --durations=5
# The recipe as users train it: tools/train.py on Cityscapes-format data made here at 1024x2048 (loading from disk
# in the config's 4 workers, the hooks, AdamW, the logging), RECIPE_ITERS iterations each, the first 20 left out
# (kernel tuning, the graphs' recording): as the config is (since session 37 with CUDA graphs, expandable segments,
# the batches pinned and copied without the host waiting), eagerly (--no-cuda-graphs), and last (the one a deadline
# cuts) with mmseg's int64 labels (PackSegInputs: 84 MB a batch to copy, against 10.5 MB in uint8). Session 37
# (H200), before these defaults: eager 0.205 s a step, graphed 0.165 s, graphed and pinned 0.154 s; 264 s for the
# data and 3.6 runs. Each run also validates on 20 images after iterations 30 and 60 as the recipe does (fp32,
# batch 1): what a validation costs per image (every 2,975 iterations, 500 images), and that graphed training
# validates and then trains on at its speed.
RECIPE_DATA="${TMPDIR:-/tmp}/gpu_checks_cityscapes_1024x2048"
MAKE_RECIPE_DATA="{ [[ -f '$RECIPE_DATA/val.txt' ]] || { python3 tools/dataset_converters/make_demo_cityscapes.py \
  '$RECIPE_DATA' --num-train 20 --num-val 20 --size 1024 2048 && python3 tools/dataset_converters/cityscapes.py \
  '$RECIPE_DATA' --nproc 8; }; } > /dev/null"
step recipe "The recipe through tools/train.py, batch 5 at 1024x2048: as configured, eager, int64 labels" \
  bash -c "$MAKE_RECIPE_DATA &&
  python3 tools/analysis_tools/benchmark_recipe.py $C '$RECIPE_DATA' --iters ${RECIPE_ITERS:-60} --val-interval 30 \
    --run recipe= --run eager=--no-cuda-graphs \
    --run 'int64_labels=--cfg-options train_dataloader.dataset.pipeline.3.type=PackSegInputs' \
    --work-dir '$OUT/recipe_runs' --json '$OUT/recipe_b5_1024x2048_cuda.json'"
# The recipe's data path alone, no model: the 4 workers loading batches, and the data preprocessor's copy to the GPU
# (its time on one batch alone), as configured (pinned), with mmseg's int64 labels, and unpinned. Session 37 (H200),
# unpinned: 106.7 ms a batch of 5 (46.8 images/s), the copy 7.5 ms; int64 labels 110.6 ms, 17.3 ms; pinned 96.7 ms,
# 3.5 ms: the workers keep up with the graphed step (0.154 s) on these synthetic images.
step data "The recipe's data loading and copy to the GPU, batch 5 at 1024x2048: pinned, int64 labels, unpinned" \
  bash -c "$MAKE_RECIPE_DATA && python3 tools/analysis_tools/benchmark_data.py $C '$RECIPE_DATA' --batches 12 \
    --rounds 3 --run uint8_pinned= --run int64_pinned=train_dataloader.dataset.pipeline.3.type=PackSegInputs \
    --run uint8=train_dataloader.pin_memory=False --json '$OUT/data_b5_1024x2048_cuda.json'"
# The recipe's step, its options and the authors' in one interleaved run: the target's ratio is to the authors'
# step of the same run. cuda_graphs: the parts' forward and backward as CUDA graphs (session 29, H200: 0.133 s
# against 0.186 s, 12.28 GiB reserved against 7.98 GiB; its memory comes with a replayed step's alone, "replayed").
# A failed recording says why in a warning ("CUDA graphs: the training step cannot be recorded (...)"). loop: the recipe's step as tools/train.py runs it (fused AdamW
# under AmpOptimWrapper, NonFiniteLossHook, the batch from the host through the data preprocessor, the logged
# values read), data loading aside. The authors' fp32 step needs 55 GB: beside one graphed entry (its graphs'
# memory held through the run) it fits an 80 GB card; in session 23, beside two, it failed. keep_levels is left
# out (session 23: 4 ms less with cuda_graphs for 17.8 GB reserved). Each kernel chosen by timing logs "...: X
# serves" with each way's time (session 26: cuDNN's BatchNorm and an addition served, 1.556 ms against the
# Triton pass's 1.716 ms, whose backward was not cuDNN's then; session 27 added "convolution of ... with its bias").
# Session 26 ran this as two tables, 255 s together.
TRAIN_ENTRIES=($C@fp16,fast_train $C@fast_train,loop authors)
# PLAIN=1: also the recipe's model without memory_efficient (session 10: 0.159 s and 25.6 GB against 0.176 s and
# 8.4 GB), the trade of recomputing in backward to keep little
if [[ -n "${PLAIN:-}" ]]; then
  PLAIN_MLPS="$OUT/wavemix_256x16_l4_plain-layers.py"
  printf "_base_ = '%s'\nmodel = dict(backbone=dict(memory_efficient=False), decode_head=dict(memory_efficient=False))\n" \
    "$PWD/$C" > "$PLAIN_MLPS"
  TRAIN_ENTRIES=("$PLAIN_MLPS@fp16,fast_train" "${TRAIN_ENTRIES[@]}")
fi
step training "Training 1024x2048, batch 5: the recipe, its options and the authors'" python3 tools/benchmark.py \
  $C@fp16,fast_train,cuda_graphs --compare "${TRAIN_ENTRIES[@]}" --authors-package "$AUTHORS_PACKAGE" \
  --device cuda --shape 1024 2048 --batch 5 --train --repeat 3 --warmup 1 --no-flops \
  --json "$OUT/train_b5_1024x2048_cuda.json"
# The graphed step's memory: with PyTorch's expandable segments each pool is one range of addresses mapped page by
# page as it grows (private pools too since PyTorch 2.4), which leaves less memory in blocks of the wrong size
# (session 29, H200: 10.99 GiB reserved against 12.28 GiB; the issue's 12 GB met this way). The variable reaches
# the benchmark's processes. Beside it the step as tools/train.py would run it with FastTrainingHook(cuda_graphs=True),
# not measured yet: whether the recipe should turn the graphs on.
step memory "Training 1024x2048, batch 5, graphed, with expandable segments" \
  env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 tools/benchmark.py $C@fp16,fast_train,cuda_graphs \
  --compare $C@fast_train,cuda_graphs,loop --device cuda --shape 1024 2048 --batch 5 --train --repeat 3 \
  --warmup 1 --no-flops --json "$OUT/train_b5_1024x2048_cuda_expandable_segments.json"
# What is allocated at the training step's peak, and what each memory pool holds after it, by the source lines that
# allocated it
for options in fp16,fast_train,cuda_graphs fp16,fast_train; do
  step memory "Training memory at its peak, $options" python3 tools/analysis_tools/profile_model.py \
    $C@$options --device cuda --shape 1024 2048 --batch 5 --memory-peak --rows 15 \
    --json "$OUT/memory_train_b5_${options//,/_}.json"
done
# where the eager training step's time goes (its host launches more slowly than the GPU runs: session 28's trace)
step train_profile "Where the training step's time goes" python3 tools/analysis_tools/profile_model.py \
  $C@fp16,fast_train --device cuda --shape 1024 2048 --batch 5 --train --rows 20 --json "$OUT/profile_train_b5.json" \
  --trace "$OUT/trace_train_b5.json.gz"
step train_profile "The training step's operators by input shapes" python3 tools/analysis_tools/profile_model.py \
  $C@fp16,fast_train --device cuda --shape 1024 2048 --batch 5 --train --shapes --rows 20 \
  --json "$OUT/profile_train_b5_shapes.json"
# The targets' rows, and SegFormer-B5 (the paper's peer; session 23: 12.1 images/s against our 114.5) for
# issue #16's table of ours, the authors' and SegFormer-B5 in one run. The float32 rows of the README are session 8's.
# INFERENCE_ALL=1: also the level MLPs as layers and the compiled graphs (session 14: 14.4 and 12.4 ms against
# 11.6 ms; the compilation takes a minute)
SEGFORMER=mmseg::segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py@fp16
INFERENCE_ENTRIES=(authors@fp16 $SEGFORMER)
[[ -n "${INFERENCE_ALL:-}" ]] && INFERENCE_ENTRIES=($C@fp16,fast,no_fuse_mlp $C@fp16,fast,compile authors@fp16
  $SEGFORMER)
step inference "Inference 1024x2048, batch 1" python3 tools/benchmark.py $C@fp16,fast --compare \
  "${INFERENCE_ENTRIES[@]}" --authors-package "$AUTHORS_PACKAGE" --device cuda \
  --shape 1024 2048 --repeat 10 --warmup 3 --no-memory --no-flops --json "$OUT/inference_1024x2048_cuda.json"
# The paper's point against its peer in training: SegFormer-B5 under AMP (mmseg's Cityscapes config, which trains one
# crop per GPU) and the recipe's model, eager and graphed, at batch 1, step time and peak memory in one interleaved
# run (session 37, H200: 0.041 s graphed and 2.8 GiB, 0.152 s eager, SegFormer-B5 0.222 s and 36.8 GiB; 135 s).
step peers "Training 1024x2048, batch 1: ours against SegFormer-B5" python3 tools/benchmark.py \
  $C@fp16,fast_train,cuda_graphs --compare $C@fp16,fast_train $SEGFORMER --device cuda --shape 1024 2048 --batch 1 \
  --train --repeat 3 --warmup 1 --no-flops --json "$OUT/train_b1_1024x2048_peers_cuda.json"
# COMPILE_TRAIN=1: the recipe's step compiled by Inductor against the eager one (a few minutes of compilation)
if [[ -n "${COMPILE_TRAIN:-}" ]]; then
  step compile_train "Training compiled, batch 5" python3 tools/benchmark.py $C@fp16,fast_train,compile \
    --compare $C@fp16,fast_train --device cuda --shape 1024 2048 --batch 5 --train --repeat 3 --warmup 1 \
    --no-flops --json "$OUT/train_b5_1024x2048_cuda_compile.json"
fi
for dtype in fp32 fp16; do
  step haar "Haar DWT $dtype, 5x64x256x512" python3 tools/analysis_tools/benchmark_haar.py --device cuda \
    --dtype $dtype --shape 5 64 256 512 --repeat 20 --warmup 5 --json "$OUT/haar_dwt_5x64x256x512_cuda_$dtype.json"
done
# channels_last: the layout of a prepared model
step haar "Haar DWT fp16 channels_last, 5x64x256x512" python3 tools/analysis_tools/benchmark_haar.py --device cuda \
  --dtype fp16 --channels-last --shape 5 64 256 512 --repeat 20 --warmup 5 \
  --json "$OUT/haar_dwt_5x64x256x512_cuda_fp16_channels_last.json"
# the focal loss's passes over the recipe's logits: the Triton kernels (session 16) against PyTorch's, time and memory
step focal "Focal loss passes, fp16 channels_last 5x19x1024x2048" python3 tools/analysis_tools/benchmark_focal_loss.py \
  --device cuda --shape 5 19 1024 2048 --dtype fp16 --channels-last --json "$OUT/focal_loss_5x19x1024x2048_cuda.json"
# the inference target is met (session 14): its analyses come last
# the fast inference's kernels and the idle time between them (session 10: 10.9 ms of kernels in a 12.9 ms step)
step profile "Where the fast inference's time goes" python3 tools/analysis_tools/profile_model.py $C@fp16,fast \
  --device cuda --shape 1024 2048 --rows 25 --json "$OUT/profile_inference_fast.json" \
  --trace "$OUT/trace_inference_fast.json.gz"
step level_mlp "Level MLPs, fp16 1024x2048" python3 tools/analysis_tools/benchmark_level_mlp.py $C --device cuda \
  --shape 1024 2048 ${SWEEP:+--sweep} --json "$OUT/level_mlp_1024x2048_cuda.json"
echo; echo "=== Summary ($OUT)"
python3 - "$OUT" <<'PY'
import glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], '*.json'))):
    data = json.load(open(path))
    # benchmark.py saves as it goes: a step cut at the deadline leaves what it had measured
    print(os.path.basename(path) + ('' if data.get('finished', True) else ' (cut before its end)'))
    if 'pools' in data:  # profile_model.py --memory-peak
        print(f'  peak {data["peak_bytes"] / 2**30:.2f} GiB; ' + ', '.join(
            f'pool {p["pool"]} {p["reserved_bytes"] / 2**30:.2f} GiB reserved' for p in data['pools']))
    if data.get('timeline'):  # profile_model.py on CUDA
        t = data['timeline']
        print(f'  step {t["step_ms"]:.2f} ms: kernels {t["busy_ms"]:.2f} ms, idle {t["idle_in_span_ms"]:.2f} ms '
              f'between them, {t["before_first_kernel_ms"]:.2f} before, {t["after_last_kernel_ms"]:.2f} after')
    for name, r in data.get('results', {}).items():
        if 'batch_s' in r:  # benchmark_data.py
            print(f'  {name:24s} {r["batch_s"] * 1e3:7.1f} ms a batch {r["images_per_s"]:6.1f} img/s, preprocessor '
                  f'{r["preprocessor_s"] * 1e3:.1f} ms, labels {r["labels_mb"]:.1f} MiB')
            continue
        if 'candidates' in r:  # benchmark_level_mlp.py
            print(f'  {name:24s} ' + ', '.join(f'{k} {v["us"]:.0f} us' for k, v in r['candidates'].items()
                                                 if v['us'] is not None))
            continue
        if 'median_ms' in r:
            gpu = r.get('device_median_ms')
            print(f'  {name:24s} {r["median_ms"]:8.2f} ms' + ('' if gpu is None else f' (GPU {gpu:.3f} ms)'))
            continue
        cells = []
        for mode in ('inference', 'train'):
            if mode in r:
                m = r[mode]
                cells.append(f'{mode} {m["median_s"] * 1e3:7.1f} ms {m["images_per_s"]:6.1f} img/s '
                             f'{m.get("peak_memory_mb", float("nan")):7.0f} MB' +
                             (f' ({m["replay_peak_memory_mb"]:.0f} MB replayed)' if 'replay_peak_memory_mb' in m else '') +
                             (f' host {100 * m["host_share"]:3.0f}%' if 'host_share' in m else '') +
                             # benchmark_recipe.py: the wait for the data loader's batches
                             (f' data wait {m["data_time_s"] * 1e3:.1f} ms' if 'data_time_s' in m else ''))
        errors = '; '.join(f'{k}: {v}' for k, v in r.get('errors', {}).items())
        print(f'  {os.path.basename(name):48s} ' + ' | '.join(cells) + (f' ERRORS {errors}' if errors else ''))
PY
# seconds per step (a step of several commands summed)
python3 - $TIMES <<'PY'
import sys
seconds = {}
for name, s in zip(sys.argv[1::2], sys.argv[2::2]):
    seconds[name] = seconds.get(name, 0) + int(s)
print('Seconds per step: ' + ', '.join(f'{name} {s}' for name, s in seconds.items()))
PY
DONE_ALL=""
for name in $DONE; do [[ " $UNFINISHED $DONE_ALL " == *" $name "* ]] || DONE_ALL+=" $name"; done
if [[ -n "$UNFINISHED" ]]; then
  echo "Not finished by DEADLINE: $(tr ' ' '\n' <<< "$UNFINISHED" | sort -u | xargs)"
  echo "The rest, in a second call: SKIP=\"${SKIP:+$SKIP }${DONE_ALL# }\" bash tools/gpu_checks.sh $OUT"
fi
if [[ -n "${ARCHIVE:-}" ]]; then
  tar -C "$OUT" -czf "$ARCHIVE" $(cd "$OUT" && ls *.json *.json.gz 2>/dev/null) && echo "JSON files packed in $ARCHIVE"
fi
echo "($((SECONDS - START)) s)"
exit $status
