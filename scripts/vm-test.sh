#!/bin/bash
# Boots a throw-away Debian 12 VM (KVM, plain QEMU), runs fpd's integration suite inside,
# prints the summary and destroys the VM. Root; needs /dev/kvm. Opt-in (`make vm-test`).
#
#   scripts/vm-test.sh                 # the integration suite: ./run.sh test PYTEST_ARGS=tests/integration
#   scripts/vm-test.sh tests/unit      # other pytest arguments
#   FPD_VM_CACHE=/var/cache/fpd-vm     # where the image, kernel and SSH key are cached
#   FPD_VM_ACCEL=auto|kvm|tcg          # auto: KVM, or TCG when the guest kernel does not start
#
# The image is built once, offline afterwards: debootstrap (minbase + systemd, a kernel,
# openssh-server and every apt package the Makefile lists), the suite's Python wheels
# downloaded with pip on the host into /opt/fpd-wheels in the image (the VM has no network
# beyond QEMU's restricted user-mode NIC), an SSH key of the cache's own, mkfs.ext4 -d,
# qcow2. Each run boots a copy-on-write overlay of it (discarded afterwards) with direct
# kernel boot; the VM's only network is QEMU user mode with restrict=on, its SSH forwarded
# to a 127.0.0.1 port. The repository's HEAD goes in with git archive over SSH.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FPD_VM_CACHE:-/var/cache/fpd-vm}
PORT=${FPD_VM_SSH_PORT:-2222}
MEM=${FPD_VM_MEM:-4096}
ARGS=${*:-tests/integration}
[ "$(id -u)" = 0 ] || { echo "vm-test: needs root (debootstrap, KVM)" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "vm-test: /dev/kvm is missing or not writable: KVM is needed" >&2; exit 1; }

need=()
for t in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap \
         ssh:openssh-client; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "vm-test: installing ${need[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}')
  echo "${m:-http://deb.debian.org/debian}"
}

t0=$(date +%s)
IMG=$CACHE/fpd-vm.qcow2
if [ ! -e "$CACHE/.complete" ]; then
  rm -rf "$CACHE"; mkdir -p "$CACHE"
  ROOT=$CACHE/rootfs
  PKGS=$(make -s -C "$REPO" print-apt-pkgs | tr ' ' ',')
  echo "vm-test: building the image in $CACHE (debootstrap, once)"
  debootstrap --variant=minbase \
    --include=systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,openssh-server,ca-certificates,git,$PKGS \
    bookworm "$ROOT" "$(mirror)" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
  ssh-keygen -q -t ed25519 -N "" -f "$CACHE/id_ed25519"
  install -d -m 700 "$ROOT/root/.ssh"
  install -m 600 "$CACHE/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
  echo fpd-vm > "$ROOT/etc/hostname"
  echo "root:fpd-vm" | chroot "$ROOT" chpasswd
  cat > "$ROOT/etc/systemd/network/10-eth.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
NET
  chroot "$ROOT" systemctl enable systemd-networkd ssh >/dev/null 2>&1 || true
  printf '/dev/vda / ext4 rw 0 1\n' > "$ROOT/etc/fstab"
  # the suite's Python packages, for a VM without network: PIP_NO_INDEX + PIP_FIND_LINKS
  mkdir -p "$ROOT/opt/fpd-wheels"
  PIP_FIND_LINKS= /usr/bin/python3 -m pip download -q -d "$ROOT/opt/fpd-wheels" \
    setuptools wheel pip "$REPO[test]" 2>&1 | tail -3
  rm -f "$ROOT"/opt/fpd-wheels/fpd-*
  printf 'PIP_NO_INDEX=1\nPIP_FIND_LINKS=/opt/fpd-wheels\n' >> "$ROOT/etc/environment"
  cp "$ROOT"/boot/vmlinuz-* "$CACHE/vmlinuz"
  cp "$ROOT"/boot/initrd.img-* "$CACHE/initrd"
  rm -rf "$ROOT"/var/cache/apt/archives/*.deb
  mkfs.ext4 -q -F -L fpd-root -d "$ROOT" "$CACHE/root.raw" 6G
  qemu-img convert -O qcow2 "$CACHE/root.raw" "$IMG"
  rm -rf "$ROOT" "$CACHE/root.raw"
  touch "$CACHE/.complete"
fi
t1=$(date +%s)

RUN=$(mktemp -d /tmp/fpd-vm.XXXXXX)
QPID=
cleanup() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$QPID" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
boot() {   # $1 = kvm | tcg
  rm -f "$RUN/overlay.qcow2" "$RUN/console.log"
  qemu-img create -q -f qcow2 -F qcow2 -b "$IMG" "$RUN/overlay.qcow2"
  local accel=(-enable-kvm -cpu host,-arch-capabilities)
  [ "$1" = tcg ] && accel=(-accel tcg,thread=multi -cpu max)
  qemu-system-x86_64 "${accel[@]}" -smp 2 -m "$MEM" -nographic -no-reboot \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd" \
    -append "root=/dev/vda rw console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 net.ifnames=0" \
    -drive "file=$RUN/overlay.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22" \
    -device virtio-net-pci,netdev=n0 \
    -serial "file:$RUN/console.log" -monitor none -display none > "$RUN/qemu.log" 2>&1 &
  QPID=$!
}
stop_vm() {
  kill "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=
}
ACCEL=${FPD_VM_ACCEL:-auto}
if [ "$ACCEL" != tcg ]; then
  echo "vm-test: booting with KVM (console log: $RUN/console.log while it runs)"
  boot kvm
  # nested KVM (a VM inside a VM, as here) may start the firmware but never the kernel
  for _ in $(seq 45); do grep -q "Linux version" "$RUN/console.log" 2>/dev/null && break; sleep 1; done
  if ! grep -q "Linux version" "$RUN/console.log" 2>/dev/null; then
    stop_vm
    [ "$ACCEL" = kvm ] && { echo "vm-test: the kernel printed nothing in 45 s under KVM"; tail -5 "$RUN/qemu.log"; exit 1; }
    echo "vm-test: under KVM the guest kernel printed nothing in 45 s (nested KVM that runs" \
         "the firmware but not Linux): falling back to TCG emulation (much slower)"
    ACCEL=tcg
  else
    ACCEL=kvm
  fi
fi
[ "$ACCEL" = tcg ] && { [ -n "$QPID" ] || boot tcg; }
SSH=(ssh -q -i "$CACHE/id_ed25519" -p "$PORT" -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o BatchMode=yes root@127.0.0.1)
up=0
for _ in $(seq 300); do
  kill -0 "$QPID" 2>/dev/null || { echo "vm-test: QEMU exited:"; cat "$RUN/qemu.log"; tail -30 "$RUN/console.log"; exit 1; }
  if "${SSH[@]}" true 2>/dev/null; then up=1; break; fi
  sleep 2
done
[ $up = 1 ] || { echo "vm-test: no SSH after 600 s; console:"; tail -40 "$RUN/console.log"; exit 1; }
t2=$(date +%s)
echo "vm-test: VM up in $((t2 - t1)) s ($ACCEL, $("${SSH[@]}" uname -sr)); copying HEAD and running the suite"
git -C "$REPO" archive --format=tar --prefix=fpd/ HEAD | "${SSH[@]}" "tar -x -C /srv"
rc=0
"${SSH[@]}" "set -a; . /etc/environment; set +a; cd /srv/fpd && CI=${CI:-} ./run.sh test PYTEST_ARGS='$ARGS'" \
  > "$RUN/suite.log" 2>&1 || rc=$?
t3=$(date +%s)
grep -E "^(FAILED|ERROR) |passed|failed|error" "$RUN/suite.log" | tail -15 || true
[ $rc = 0 ] || tail -60 "$RUN/suite.log"
"${SSH[@]}" poweroff >/dev/null 2>&1 || true
echo "vm-test: exit $rc ($ACCEL); image $((t1 - t0)) s (0 = cached), boot $((t2 - t1)) s, suite $((t3 - t2)) s"
exit $rc
