#!/bin/bash
# fpd's entry point on any Debian 12, even a minimal one (no make, no compiler, no pip):
#   ./run.sh demo     installs what is missing, then `fpd demo`
#   ./run.sh test     installs what is missing, builds bpf/steer.o, runs the whole suite
#   ./run.sh TARGET   any other Makefile target (test-fast, vm-test, bare-check, ...)
# It only makes sure `make` itself is there (apt, as root), then hands over to the
# Makefile, which installs everything else (its APT_PKGS, a venv, pip extras).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v make >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "run.sh: make is not installed and installing it needs root: run as root, or" \
         "apt-get install make first" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: make is not installed and this is not a Debian-like system (no apt-get):" \
         "install make with your package manager" >&2
    exit 1
  fi
  echo "run.sh: installing make"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make
fi
exec make "$@"
