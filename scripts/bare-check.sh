#!/bin/bash
# Proves the README's commands on a bare Debian 12: builds (once, cached) a debootstrap
# minbase system with only git, ca-certificates, python3 and iproute2 - what a small
# server or cloud image has: no make, no compiler, no pip - copies it, enters the copy as a
# chroot (same kernel, so the test bed's namespaces and XDP work), clones this repository's
# HEAD into it and runs the README's command there. Needs root and debootstrap (installed
# here if missing). Takes ~10 min (apt + pip downloads, then the whole suite).
#
#   scripts/bare-check.sh            # the README's test command: ./run.sh test
#   scripts/bare-check.sh demo       # the README's demo command: ./run.sh demo
#   FPD_BARE_CACHE=/var/tmp/x scripts/bare-check.sh   # where the base system is cached
#   FPD_BARE_KEEP=1 ...              # keep the copy (default: removed afterwards)
#
# The check runs on the committed HEAD (a clone), not on uncommitted changes. apt inside
# uses the host's Debian sources (/etc/apt/sources.list*); pip uses PyPI as a fresh
# machine would (the host's pip indexes and wheel directories are not copied; its network
# settings are: resolv.conf, local CA certificates, proxy and certificate variables).
set -euo pipefail
TARGET=${1:-test}
case "$TARGET" in test|demo) ;; *) echo "usage: $0 [test|demo]" >&2; exit 2;; esac
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FPD_BARE_CACHE:-/var/cache/fpd-bare}
BASE=$CACHE/base
WORK=$CACHE/run.$$
SUITE=bookworm
[ "$(id -u)" = 0 ] || { echo "bare-check: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }

mirror() {   # the host's Debian mirror (first deb822 URIs or one-line deb entry)
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}')
  [ -n "$m" ] || m=$(cat /etc/apt/sources.list 2>/dev/null | awk '$1=="deb" && $0 ~ /debian\/? / {for(i=2;i<=NF;i++) if ($i ~ /^http/) {print $i; exit}}')
  echo "${m:-http://deb.debian.org/debian}"
}

t0=$(date +%s)
if [ ! -e "$BASE/.complete" ]; then
  command -v debootstrap >/dev/null || { apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
  rm -rf "$BASE"; mkdir -p "$CACHE"
  echo "bare-check: debootstrap $SUITE minbase into $BASE ($(mirror))"
  debootstrap --variant=minbase --include=git,ca-certificates,python3,iproute2 \
    "$SUITE" "$BASE" "$(mirror)" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
  rm -rf "$BASE"/var/cache/apt/archives/*.deb "$BASE"/var/lib/apt/lists/*
  touch "$BASE/.complete"
fi
t1=$(date +%s)

cleanup() {
  if [ -z "${FPD_BARE_KEEP:-}" ]; then rm -rf --one-file-system "$WORK"; else echo "bare-check: kept $WORK"; fi
}
trap cleanup EXIT
echo "bare-check: copying the base system to $WORK"
cp -a "$BASE" "$WORK"
for t in make cc gcc clang pip pip3; do
  if chroot "$WORK" sh -c "command -v $t" >/dev/null 2>&1; then
    echo "bare-check: the base system has $t: it is not bare" >&2; exit 1
  fi
done
# apt: the host's Debian sources whose keyrings exist in the new system
rm -f "$WORK"/etc/apt/sources.list "$WORK"/etc/apt/sources.list.d/*
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  grep -qE 'debian\.org|debian/?($| )' "$f" || continue
  ok=1
  for k in $(awk '/^Signed-By:/ {print $2}' "$f"); do [ -f "$WORK$k" ] || ok=0; done
  [ $ok = 1 ] && cp "$f" "$WORK$f"
done
for f in /etc/apt/apt.conf.d/99artifact-registry; do [ -f "$f" ] && cp "$f" "$WORK$f"; done
cp -L /etc/resolv.conf "$WORK/etc/resolv.conf"
# this network's TLS trust (an intercepting proxy's CA, if the host has one), as any
# machine on this network has it: the host's local CAs, merged by update-ca-certificates
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$WORK/usr/local/share/ca-certificates/"
  chroot "$WORK" update-ca-certificates >/dev/null 2>&1 || true
fi
# the environment's network settings (not the host's pip indexes or wheel directories)
NETENV=()
for v in PIP_CERT SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE PIP_DEFAULT_TIMEOUT \
         http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [ -n "${!v:-}" ]; then NETENV+=("$v=${!v}"); fi
done
git clone -q "$REPO" "$WORK/srv/fpd"   # /srv: readable by the tests that run as nobody
git -C "$WORK/srv/fpd" checkout -q "$(git -C "$REPO" rev-parse HEAD)"
echo "bare-check: testing commit $(git -C "$REPO" log -1 --format='%h %s' | cut -c1-70)"

# private mount and PID namespaces: every mount below disappears with them, and the
# chroot's /proc shows only its own processes (as on a machine of its own; tests that check
# for left-over processes would otherwise see other users' on the host)
rc=0
unshare --mount --propagation private --pid --fork bash -euo pipefail -c '
  R=$1; T=$2; shift 2
  mount --bind "$R" "$R"       # / of the chroot is a mount point (ip netns exec needs it)
  mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs tmpfs "$R/run"
  mount -t tmpfs tmpfs "$R/tmp"
  mountpoint -q "$R/sys/fs/bpf" || mount -t bpf bpf "$R/sys/fs/bpf" 2>/dev/null || true
  chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI="${CI:-}" "$@" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /srv/fpd && ./run.sh $T"
' bare-check "$WORK" "$TARGET" "${NETENV[@]}" || rc=$?
t2=$(date +%s)
echo "bare-check: ./run.sh $TARGET in a bare Debian 12 chroot: exit $rc; base system" \
     "$((t1 - t0)) s (0 = cached), install + run $((t2 - t1)) s"
exit $rc
