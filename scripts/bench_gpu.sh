#!/usr/bin/env bash
# The GPU checks and benchmarks in one go (about 9-10 minutes on one H100 with 16 cores), so that
# a short lease of a GPU machine is enough: each step has its own time limit and a failing step
# does not stop the others. Results (JSON, logs) go to $OUT (default runs/bench/gpu, git-ignored;
# the committed figures in scripts/results/gpu change only with OUT=scripts/results/gpu).
#
#   OUT=/tmp/gpu bash scripts/bench_gpu.sh            # on a machine with a CUDA GPU
#   DEVICE=cpu SMALL=1 OUT=/tmp/g bash scripts/bench_gpu.sh   # a dry run of the script itself
#
# Steps: the PPO update alone per network (bench_update.py), and the GRU's two paths for episode
# starts (packed / stretches, 64 envs in 4 minibatches, episodes of ~26 steps); the whole training loop against
# the CleanRL-style loops with the issue's settings (8 envs; CleanRL's own code only at 64 envs,
# for time) and with 64 envs on all cores
# (bench_train.py); a short real `train` run on the GPU, its resume, and `evaluate` of its
# checkpoint with a video; the learner, training and evaluation tests with device auto (= CUDA there).
set -u
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/bench/gpu}
SMALL=${SMALL:-0}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/bench_gpu.log") 2>&1  # the whole log next to the results
CORES=$(nproc)
failed=0
step() {  # step NAME SECONDS CMD...: run CMD with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || failed=$((failed + 1))
}

if [ "$SMALL" = 1 ]; then
    UPD="--repeats 1 --archs nature --recurrent no"; GRU="--envs 4 --minibatches 2 --steps 32 --repeats 1"; TR8="--updates 1 --env-seconds 2"; TR64="--updates 1 --env-seconds 2 --envs 16"
    TRAIN_FRAMES=20000; EPISODES=1; TESTS="tests/test_gae.py"
else
    UPD=""; GRU="--envs 64 --minibatches 4"; TR8="--pool-variants --skip-reference"; TR64="--envs 64 --env-seconds 15"
    TRAIN_FRAMES=3000000; EPISODES=4; TESTS="tests/test_policy_learner.py tests/test_train.py tests/test_evaluate.py"
fi
nvidia-smi -L 2>/dev/null
lscpu 2>/dev/null | grep -m1 "Model name"; echo "$CORES cores"
$PY -c "import torch, ale_py, gymnasium, h5py, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ale_py', ale_py.__version__, 'gymnasium', gymnasium.__version__)"

step bench_update 150 $PY scripts/bench_update.py --device "$DEVICE" $UPD --json "$OUT/bench_update_$DEVICE.json"
for path in packed stretches; do  # the GRU's two ways of handling episode starts, with short (curriculum) episodes
    step bench_update_gru_$path 60 $PY scripts/bench_update.py --device "$DEVICE" --archs nature --recurrent yes \
        $GRU --episode-length 26 --gru-path $path --json "$OUT/bench_update_gru_${path}_$DEVICE.json"
done
step bench_train_8envs 260 $PY scripts/bench_train.py --device "$DEVICE" --rounds 1 --workers $((CORES < 8 ? CORES : 8)) $TR8 \
    --json "$OUT/bench_train_${DEVICE}_8envs.json"
step bench_train_64envs 230 $PY scripts/bench_train.py --device "$DEVICE" --rounds 1 --workers "$CORES" $TR64 \
    --json "$OUT/bench_train_${DEVICE}_64envs.json"
RUN=$(mktemp -d)/run
step train 100 $PY -m curriculum_ppo train --device "$DEVICE" --run-dir "$RUN" --num-envs 64 --workers "$CORES" \
    --frames "$TRAIN_FRAMES" --minutes 1 --status-every 10
step train_resume 60 $PY -m curriculum_ppo train --device "$DEVICE" --run-dir "$RUN" --resume \
    --frames "$TRAIN_FRAMES" --minutes 0.3 --status-every 10
cp "$RUN/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null
step evaluate 90 $PY -m curriculum_ppo evaluate --checkpoint "$RUN/checkpoints/latest.pt" --device "$DEVICE" \
    --episodes "$EPISODES" --max-frames 4500 --json "$OUT/evaluate_$DEVICE.json" --video "$OUT/evaluate_$DEVICE.mp4"
step tests 200 $PY -m pytest -q -x -p no:cacheprovider $TESTS
rm -rf "$(dirname "$RUN")"
echo "== $failed step(s) failed"
exit $((failed > 0))
