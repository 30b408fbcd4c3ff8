#!/bin/bash
# Runs inside the Vagrant VM as root: the README's test command, nothing cleverer.
set -euo pipefail
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q make
cd /fpd
make test
