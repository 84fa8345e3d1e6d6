#!/usr/bin/env bash
# One prepared run of every GPU row that BENCHMARKS.md leaves unmeasured, in at most 8 minutes:
#   1. method overhead (bench_overhead.py; fused AdamW as the engine uses it; target ≤ 1.10),
#   2. sampling throughput eager / torch.compile / CUDA graphs (bench_sampling.py; target
#      compiled ≥ 1.5× eager): every method at the toy size, BSI and VDM at the image size,
#   3. training throughput and MFU of experiment=cifar10-vdm and DiT-L/2 (imagenet32-dit, all 24
#      blocks) in bf16 at batch 128 (bench_training.py; target DiT-L/2 ≥ 35% MFU against the
#      datasheet peak, 989 TFLOP/s for an H100/H200),
#   4. a full-size network on MNIST for a fixed wall-clock budget (75 s): bench_bfn_mnist.py,
#      i.e. `bayesgen train experiment=mnist-bfn` with the 24.8M U-Net (128 channels, 2 blocks
#      per level; its short-budget recipe: no dropout, lr 1e-3) at batch 512, as a stand-in for
#      the compare preset's mnist run, then the 784-step test NLL of 1000 test images.
#   5. if time is left: DiT-L/2 bf16 again with the training loss under torch.compile,
#   6. then DiT-L/2 bf16 under FSDP2 (fully_shard per block, as trainer=fsdp2) next to DDP on
#      every GPU: peak memory per GPU and tokens/s (bench_fsdp.py, torchrun).
#
#   bash benchmarks/gpu_suite.sh             # on a GPU machine, from the repository root
#   bash benchmarks/gpu_suite.sh --dry-run   # the same steps at tiny sizes on the CPU, eager
#                                            # only (compilation and CUDA graphs need the GPU)
#
# Prints one JSON line per measurement (stdout) and one "gpu_suite" line per section with its
# exit status and seconds; the same lines go to $OUT/gpu_suite.jsonl (or runs/gpu_suite/), the
# sections' logs beside them. Every section runs under a time limit cut to what is left of the
# total budget (SUITE_SECONDS, default 470 s on a GPU, 900 s for --dry-run), so the suite ends
# inside 8 minutes even when a compilation is slow; a section that ran out reports rc 124.
# Environment: PYTHON (default python3) with torch, lightning and hydra; bayesgen from ./src.
# MNIST: the idx files in $BAYESGEN_DATA_DIR/mnist, ../shared/data/mnist or ./data/mnist (on a
# device machine copy them to ./data/mnist, which git ignores, and carry that path); without
# them step 4 prints a "skipped" line.
set -u
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEST=${OUT:-runs/gpu_suite}/
mkdir -p "$DEST"
JSONL="$DEST/gpu_suite.jsonl"
: > "$JSONL"
START=$(date +%s)

if [ "$DRY" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""
  MODE=dry-run
  BUDGET=${SUITE_SECONDS:-900}  # a shared CPU can be slow; the sizes are tiny either way
elif ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_suite.sh: no CUDA device visible to $PY; run on a GPU machine or pass --dry-run" >&2
  exit 2
else
  MODE=gpu
  BUDGET=${SUITE_SECONDS:-470}
fi

emit() { echo "$1" | tee -a "$JSONL"; }

# section NAME LIMIT_SECONDS COMMAND...: run under min(LIMIT, time left); JSON lines of the
# command pass through, everything else goes to $DEST/NAME.log.
section() {
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    emit "{\"benchmark\": \"gpu_suite\", \"section\": \"$name\", \"mode\": \"$MODE\", \"skipped\": \"no time left in the ${BUDGET} s budget\"}"
    return
  fi
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2> "$DEST/$name.log" \
    | grep --line-buffered '^{' | tee -a "$JSONL"
  rc=${PIPESTATUS[0]}
  emit "{\"benchmark\": \"gpu_suite\", \"section\": \"$name\", \"mode\": \"$MODE\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0)), \"limit_s\": $limit}"
}

if [ "$MODE" = gpu ]; then
  GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
  case "$GPU" in
    *H100*|*H200*) PEAK=989 ;;   # dense bf16 datasheet peak (SXM)
    *A100*) PEAK=312 ;;
    *) PEAK= ;;                  # unknown: bench_training.py measures a matmul peak
  esac
else
  GPU=none
  PEAK=
fi
emit "{\"benchmark\": \"gpu_suite\", \"section\": \"start\", \"mode\": \"$MODE\", \"gpu\": \"$GPU\", \"peak_tflops\": \"${PEAK:-measured}\", \"budget_s\": $BUDGET, \"commit\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\"}"

B=benchmarks
if [ "$MODE" = gpu ]; then
  section overhead 70 "$PY" $B/bench_overhead.py --sizes toy image --batch-image 64 \
    --fused-adamw --threads 0
  section sampling_toy 120 "$PY" $B/bench_sampling.py --sizes toy --steps 50 256 \
    --methods bsi vdm bfn_continuous bfn_discretized bfn_discrete if \
    --variants eager compile cudagraphs --repeats 3 --threads 0
  section sampling_image 60 "$PY" $B/bench_sampling.py --sizes image --methods bsi vdm \
    --n-image 64 --steps 50 --variants eager compile cudagraphs --repeats 3 --threads 0
  section training 80 "$PY" $B/bench_training.py --configs cifar10-vdm imagenet32-dit \
    --precisions bf16 --batch 128 --dit-depth 24 --steps 10 ${PEAK:+--peak-tflops $PEAK} \
    --threads 0
  MNIST_LIMIT=150
  MNIST=(--minutes 1.25 --channels 128 --res-blocks 2 --batch-size 512 --test-examples 1000)
else
  section overhead 240 "$PY" $B/bench_overhead.py --sizes toy --batch-toy 16 --repeats 2
  section overhead_image 240 "$PY" $B/bench_overhead.py --sizes image --methods bsi vdm \
    --batch-image 1 --repeats 1
  section sampling_toy 240 "$PY" $B/bench_sampling.py --sizes toy --steps 2 3 --n-toy 16 \
    --variants eager --repeats 1
  # bf16 matmuls can be very slow on a CPU without AVX512-BF16 (1 GFLOP/s here): small nets
  # and a given peak (MFU is meaningless in a dry run) instead of the measured matmul peak
  section training_vdm 240 "$PY" $B/bench_training.py --configs cifar10-vdm --precisions bf16 \
    --batch 1 --steps 1 --peak-tflops 1 --overrides net.n_blocks=1 net.width=32
  section training_dit 240 "$PY" $B/bench_training.py --configs imagenet32-dit \
    --precisions bf16 --batch 1 --dit-depth 1 --steps 1 --peak-tflops 1 \
    --overrides net.hidden_size=64 net.num_heads=2
  MNIST_LIMIT=240
  MNIST=(--minutes 0.1 --channels 32 --res-blocks 1 --batch-size 8 --test-examples 16
         --n-steps 10 --overrides sample.n=4 method.sample_kwargs.n_steps=5
         data.eval_batch_size=16 trainer.limit_val_batches=0)
fi

# 4. the full-size MNIST network for a fixed wall-clock budget (stand-in for the mnist preset)
section mnist_budget $MNIST_LIMIT "$PY" $B/bench_bfn_mnist.py "${MNIST[@]}" --run-dir "$DEST/mnist"

if [ "$MODE" = gpu ]; then
  section training_compiled 120 "$PY" $B/bench_training.py --configs imagenet32-dit \
    --precisions bf16 --batch 128 --dit-depth 24 --steps 10 --compile \
    ${PEAK:+--peak-tflops $PEAK} --threads 0
fi

NPROC=1
[ "$MODE" = gpu ] && NPROC=$(nvidia-smi -L | wc -l)
[ "$MODE" = gpu ] || NPROC=2
if [ "$MODE" = gpu ]; then
  section fsdp 120 "$PY" -m torch.distributed.run --nproc-per-node="$NPROC" $B/bench_fsdp.py \
    --batch 64 --steps 10
else
  section fsdp 240 "$PY" -m torch.distributed.run --nproc-per-node="$NPROC" $B/bench_fsdp.py \
    --dry-run
fi

emit "{\"benchmark\": \"gpu_suite\", \"section\": \"end\", \"mode\": \"$MODE\", \"seconds\": $(($(date +%s) - START)), \"jsonl\": \"$JSONL\"}"
