#!/usr/bin/env bash
# Debian packages the test suite needs (bubblewrap for the sandbox; runsc for gVisor tests).
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v runsc >/dev/null 2>&1 || need+=(runsc)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need[*]} (install them as root); their tests will skip" >&2
  fi
fi
