#!/usr/bin/env bash
# Debian packages the monitor (C2MS) tests use: real Ganglia, OpenSSH, Chromium for the dashboard tests.
# Installs what is missing when run as root with apt; otherwise says what is missing. Daemons are
# never started by the packages (policy-rc.d 101): our tests start their own, unicast on 127.0.0.1.
set -euo pipefail
need=()
for pair in gmond:ganglia-monitor gmetad:gmetad gmetric:ganglia-monitor sshd:openssh-server ssh:openssh-client \
            ssh-keygen:openssh-client chromium:chromium ip:iproute2 ss:iproute2; do
  binary=${pair%%:*}; package=${pair#*:}
  if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ]; then
    need+=("$package")
  fi
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing Debian packages: ${need[*]} (install them as root; tests that need them skip)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
trap 'if [ $created_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
export DEBIAN_FRONTEND=noninteractive
running_before=" $(pgrep -x 'gmond|gmetad' | tr '\n' ' ') "
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# A package's init script may still have started a daemon with its default (multicast) configuration:
# stop exactly the ones that appeared during this install, by PID, and nothing that ran before.
for pid in $(pgrep -x 'gmond|gmetad' || true); do
  case "$running_before" in *" $pid "*) ;; *) kill "$pid" 2>/dev/null || true ;; esac
done
