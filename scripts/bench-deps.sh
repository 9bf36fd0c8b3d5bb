#!/usr/bin/env bash
# What `make bench` needs beyond the virtualenv: wrk, the C load generator `strato faas bench` checks its
# Python generator against (Debian/Ubuntu package wrk). Idempotent: does nothing when wrk is on PATH.
# Installs it when run as root with apt-get; otherwise says how, and fails, so a bench run never silently
# judges the throughput on the Python generator alone.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-deps: wrk is not installed; install it as root (Debian/Ubuntu: apt-get install wrk)," >&2
  echo "bench-deps: or run 'strato faas bench --load-generator python' to go without it" >&2
  exit 1
fi
echo "bench-deps: installing wrk" >&2
export DEBIAN_FRONTEND=noninteractive
# A stale package list is the usual reason an install fails; refresh it, then say what went wrong.
if ! apt-get update -qq; then
  echo "bench-deps: apt-get update failed; trying the install with the package lists as they are" >&2
fi
if ! apt-get install -y -qq --no-install-recommends wrk >/dev/null; then
  echo "bench-deps: apt-get install wrk failed (see above)" >&2
  exit 1
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "bench-deps: wrk was installed but is not on PATH ($PATH)" >&2
  exit 1
fi
echo "bench-deps: $(wrk -v 2>&1 | head -n 1 | sed 's/ Copyright.*//')" >&2
