#!/usr/bin/env bash
# The README's two commands on a fresh clone with nothing beside it, as a new user runs them:
#   1. clones this repository's committed HEAD into <work>/home/emotion-monitor (the common ~/emotion-monitor layout,
#      with HOME=<work>/home, so no ../shared, no ~/.cache/emotion-monitor, no .venv);
#   2. `./em test -q` there (the README's test command: installs .venv, then the default suite; the tests use the
#      GoEmotions sample shipped in the package);
#   3. `./em up` there as a smoke test (deploy/smoke_up.py: dashboard URL printed, a post counted, the demo spike's
#      alert, clean Ctrl-C).
# Prints the time of each step and writes them to <work>/bare-clone-timing.json. Called by .ci/run.
#
# Usage: deploy/bare_clone_check.sh [WORK_DIR] [-- PYTEST_ARGS...]
#   WORK_DIR defaults to a temporary folder, removed afterwards when everything passed.
#   PYTEST_ARGS replace `-q` (e.g. `-- -q tests/runtime` for a shorter run while developing).
# The environment is emptied (env -i) except PATH, the locale, proxies, the machine's CA bundle variables (npm needs
# NODE_EXTRA_CA_CERTS behind an intercepting proxy) and pip's/npm's settings; pip's download cache is
# shared with the calling user (machine state, not something beside the clone). CI=true is NOT passed on: a user's
# machine has no full GoEmotions, so the tests fall back to the shipped sample as they would there.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then work=$1; shift; fi
pytest_args=(-q)
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; pytest_args=("$@"); fi
cleanup=0
if [ -z "$work" ]; then work=$(mktemp -d -t em-bare-XXXXXX); cleanup=1; fi
home="$work/home"
clone="$home/emotion-monitor"
pip_cache="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
rm -rf "$home"
mkdir -p "$home"

bare() {  # run "$@" in the clone with a fresh user's environment
  local keep=(PATH="$PATH" HOME="$home" LANG="${LANG:-C.UTF-8}" PIP_CACHE_DIR="$pip_cache" TERM=dumb)
  local name
  for name in $(compgen -e); do
    case "$name" in
      PIP_CACHE_DIR) ;;
      PIP_*|NPM_CONFIG_*|npm_config_*|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|PYTHON) ;&
      NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE) keep+=("$name=${!name}") ;;
    esac
  done
  (cd "$clone" && env -i "${keep[@]}" "$@")
}

now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }

t0=$(now)
git clone -q --no-hardlinks "$src" "$clone"
echo "[bare-clone] $(git -C "$clone" log --oneline -1) cloned into $clone"
for beside in "$home/shared" "$home/.cache/emotion-monitor" "$clone/.venv"; do
  [ ! -e "$beside" ] || { echo "[bare-clone] $beside exists: not a bare clone" >&2; exit 1; }
done
t1=$(now)
echo "[bare-clone] ./em --help (installs .venv; fetches OpenSSL 1.1 for Redis Stack into the fresh HOME)"
bare ./em --help >/dev/null
t2=$(now)
echo "[bare-clone] ./em test ${pytest_args[*]}"
tests_rc=0
bare ./em test "${pytest_args[@]}" -p no:cacheprovider || tests_rc=$?
t3=$(now)
echo "[bare-clone] ./em up (smoke test)"  # also after failed tests: CI then reports both
up_rc=0
bare .venv/bin/python deploy/smoke_up.py --out "$work/smoke-up.json" ./em up || up_rc=$?
t4=$(now)
[ -s "$work/smoke-up.json" ] || echo '{"ok": false}' > "$work/smoke-up.json"

cat > "$work/bare-clone-timing.json" <<EOF
{
  "commit": "$(git -C "$clone" rev-parse HEAD)",
  "clone_s": $(secs "$t0" "$t1"),
  "install_s": $(secs "$t1" "$t2"),
  "tests_s": $(secs "$t2" "$t3"),
  "tests_command": "./em test ${pytest_args[*]}",
  "tests_exit_code": $tests_rc,
  "up_smoke_s": $(secs "$t3" "$t4"),
  "total_s": $(secs "$t0" "$t4"),
  "up": $(cat "$work/smoke-up.json"),
  "machine": "$(uname -m), $(nproc) CPUs",
  "measured_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
cat "$work/bare-clone-timing.json"
if [ "$tests_rc" != 0 ] || [ "$up_rc" != 0 ]; then
  echo "[bare-clone] FAILED: ./em test exit $tests_rc, ./em up smoke exit $up_rc (kept: $work)" >&2
  exit 1
fi
echo "[bare-clone] ok: both README commands work on a clone with nothing beside it"
if [ "$cleanup" = 1 ]; then rm -rf "$work"; fi
