#!/bin/bash
# Runs inside the Vagrant VM as root: the README's test command, nothing cleverer.
set -euo pipefail
cd /fpd
./run.sh test
