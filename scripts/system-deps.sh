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
# The packages' maintainer scripts start gmond/gmetad with their default (multicast) configuration through
# invoke-rc.d or deb-systemd-invoke; both ask /usr/sbin/policy-rc.d first, and 101 means "do not". So no
# daemon starts, and there is nothing to stop afterwards: this script never signals a process (a pgrep by
# name would also hit other users' daemons). A policy already in place that forbids both starts is left
# alone; any other is set aside for the install and put back.
policy=/usr/sbin/policy-rc.d
saved=""
forbids() { [ -x "$policy" ] && { "$policy" "$1" start >/dev/null 2>&1; [ $? = 101 ]; }; }
restore() {
  if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
if ! { forbids ganglia-monitor && forbids gmetad; }; then
  if [ -e "$policy" ]; then
    saved=$(mktemp /usr/sbin/policy-rc.d.strato-saved.XXXXXX)
    mv -f "$policy" "$saved"
  fi
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  trap restore EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
