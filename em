#!/usr/bin/env bash
# Bootstrap + entry point. On a fresh Debian/Ubuntu machine with Python 3.11:
#   ./em up      -> sets everything up, then runs the whole product locally (broker, Redis, worker, demo, dashboard)
#   ./em test    -> sets everything up, then runs the test suite (real servers started by the test fixtures)
#   ./em <subcommand> ...  -> any `emotion-monitor` subcommand inside the project's virtual environment
# Set-up is idempotent: a virtual environment in .venv (re-installed when pyproject.toml changes),
# OpenSSL 1.1 for Redis Stack in ~/.cache/emotion-monitor, and (for tests, as root) Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")"
venv="${EMOTION_MONITOR_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/emotion-monitor" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
  echo "[em] installing into $venv (a few minutes the first time)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # torch first and exactly: this CPU wheel is on the machine's disk; an unpinned torch pulls a multi-GB CUDA build.
  "$venv/bin/pip" install -q "torch==2.13.0"
  "$venv/bin/pip" install -q -e '.[test]'
  touch "$venv/.installed"
fi

libssl_dir=$(deploy/fetch-libssl11.sh 2>/dev/null) || {
  echo "[em] could not fetch OpenSSL 1.1 for Redis Stack; run deploy/fetch-libssl11.sh to see why" >&2; exit 1; }
[ "$libssl_dir" = system ] || export EMOTION_MONITOR_LIBSSL_DIR="$libssl_dir"

if [ "${1:-}" = test ]; then
  shift
  if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[em] installing Debian's chromium for the real-browser tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  exec "$venv/bin/python" -m pytest "$@"
fi
exec "$venv/bin/emotion-monitor" "$@"
