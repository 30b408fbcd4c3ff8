#!/bin/bash
# Runs inside the Vagrant VM as root: the README's test command, nothing cleverer.
# (In the offline box, /etc/environment points pip at the wheels baked into the image.)
set -euo pipefail
if [ -r /etc/environment ]; then set -a; . /etc/environment; set +a; fi
cd /srv/fpd
./run.sh test
