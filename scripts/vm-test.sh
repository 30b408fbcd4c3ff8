#!/bin/bash
# Boots a throw-away Debian 12 VM, runs fpd's integration suite inside, prints the summary
# and destroys the VM. Root. Opt-in (`make vm-test`, `make vm-test FPD_VM_DRIVER=vagrant`).
#
#   scripts/vm-test.sh                 # the integration suite: ./run.sh test PYTEST_ARGS=tests/integration
#   scripts/vm-test.sh tests/unit      # other pytest arguments
#   scripts/vm-test.sh --build         # only build (or refresh) the cached image
#   scripts/vm-test.sh --box           # ... and the Vagrant box, added as fpd/bookworm-offline
#   FPD_VM_DRIVER=qemu|vagrant         # plain QEMU (default) or vagrant + vagrant-libvirt
#   FPD_VM_CACHE=/var/cache/fpd-vm     # where the image, kernel, SSH key and box are cached
#   FPD_VM_ACCEL=auto|kvm|tcg          # auto: KVM where it can boot a stock kernel, else TCG
#   FPD_VM_SSH_PORT=2222 FPD_VM_MEM=4096 FPD_VM_CPUS=2
#
# The image is built once, offline afterwards: debootstrap (minbase + systemd, a kernel,
# openssh-server, rsync, sudo and every apt package the Makefile lists), the suite's Python
# wheels downloaded with pip on the host into /opt/fpd-wheels in the image (the VM has no
# network beyond QEMU's restricted user-mode NIC), an SSH key of the cache's own,
# mkfs.ext4 -d, qcow2. The root file system is kept, so a change of the apt list or of
# pyproject.toml refreshes the image (apt-get and pip download into it) instead of
# rebuilding it. Each run boots a copy-on-write copy (discarded afterwards) with direct
# kernel boot; the VM's only network is QEMU user mode with restrict=on, its SSH forwarded
# to a 127.0.0.1 port. qemu: the repository's HEAD goes in with git archive over SSH.
# vagrant: `vagrant up` with vagrant/Vagrantfile (libvirt, no libvirt network) rsyncs the
# work tree to /srv/fpd; `vagrant destroy -f` on every exit path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FPD_VM_CACHE:-/var/cache/fpd-vm}
PORT=${FPD_VM_SSH_PORT:-2222}
MEM=${FPD_VM_MEM:-4096}
CPUS=${FPD_VM_CPUS:-2}
DRIVER=${FPD_VM_DRIVER:-qemu}
BOX=fpd/bookworm-offline
MODE=test
case "${1:-}" in --build) MODE=build; shift;; --box) MODE=box; shift;; esac
ARGS=${*:-tests/integration}
case "$DRIVER" in qemu|vagrant) ;; *) echo "vm-test: FPD_VM_DRIVER is qemu or vagrant, not $DRIVER" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "vm-test: needs root (debootstrap, chroot, QEMU)" >&2; exit 1; }

need=()
for t in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap \
         ssh:openssh-client; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "vm-test: installing ${need[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if [ "$DRIVER" = vagrant ] || [ "$MODE" = box ]; then
  if ! command -v vagrant >/dev/null || ! command -v libvirtd >/dev/null || ! vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt; then
    make -s -C "$REPO" vm-deps
  fi
fi

mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}')
  echo "${m:-http://deb.debian.org/debian}"
}

t0=$(date +%s)
IMG=$CACHE/fpd-vm.qcow2
ROOT=$CACHE/rootfs
BASE_PKGS="systemd-sysv udev kmod linux-image-amd64 initramfs-tools openssh-server ca-certificates git rsync sudo"
PKGS=$(make -s -C "$REPO" print-apt-pkgs)
# what the image is made of: a change of the apt list or of pyproject.toml (pip extras)
# refreshes the cached image (apt-get + pip download into the kept root file system)
KEY=$( { echo "recipe 3"; echo "$BASE_PKGS $PKGS"; cat "$REPO/pyproject.toml"; } | sha256sum | cut -c1-16)
in_root() {   # a command in the image's root file system, with the host's network
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  unshare --mount --propagation private bash -c 'mount -t proc proc "$1/proc" && chroot "$@"' \
    in_root "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"
}
make_image() {   # rootfs -> wheels, kernel, qcow2 (the rootfs is kept for refreshes)
  mkdir -p "$ROOT/opt/fpd-wheels"
  # the build requirements too (pyproject's [build-system]: Cython builds the compiled
  # fast path), since pip in the VM builds fpd with no index
  local build_reqs
  build_reqs=$(/usr/bin/python3 -c 'import sys, tomllib; print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' "$REPO/pyproject.toml")
  # shellcheck disable=SC2086
  PIP_FIND_LINKS= /usr/bin/python3 -m pip download -q -d "$ROOT/opt/fpd-wheels" \
    setuptools wheel pip $build_reqs "$REPO[test]" 2>&1 | tail -3
  rm -f "$ROOT"/opt/fpd-wheels/fpd-*
  grep -q PIP_NO_INDEX "$ROOT/etc/environment" ||
    printf 'PIP_NO_INDEX=1\nPIP_FIND_LINKS=/opt/fpd-wheels\n' >> "$ROOT/etc/environment"
  cp "$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -1)" "$CACHE/vmlinuz"
  cp "$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -1)" "$CACHE/initrd"
  rm -rf "$ROOT"/var/cache/apt/archives/*.deb
  : > "$ROOT/etc/resolv.conf"
  rm -f "$IMG" "$CACHE/root.raw" "$CACHE"/*.box
  mkfs.ext4 -q -F -L fpd-root -d "$ROOT" "$CACHE/root.raw" 6G
  qemu-img convert -O qcow2 "$CACHE/root.raw" "$IMG"
  rm -f "$CACHE/root.raw"
  echo "$KEY" > "$CACHE/key"
  touch "$CACHE/.complete"
}
CURRENT=; [ -e "$CACHE/.complete" ] && [ "$(cat "$CACHE/key" 2>/dev/null)" = "$KEY" ] && CURRENT=1
if [ -z "$CURRENT" ] && [ -e "$ROOT/.fpd-base" ]; then
  echo "vm-test: the apt list or pyproject.toml changed: refreshing the image"
  rm -f "$CACHE/.complete"
  { in_root apt-get update -q && in_root apt-get install -y -q --no-install-recommends $BASE_PKGS $PKGS; } \
    > "$CACHE/refresh.log" 2>&1 || { tail -20 "$CACHE/refresh.log"; exit 1; }
  make_image
elif [ -z "$CURRENT" ]; then
  rm -rf "$CACHE"; mkdir -p "$CACHE"
  echo "vm-test: building the image in $CACHE (debootstrap, once)"
  debootstrap --variant=minbase --include="$(echo $BASE_PKGS $PKGS | tr ' ' ',')" \
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
  touch "$ROOT/.fpd-base"   # a complete base: from now on refreshed, not rebuilt
  make_image
fi
t1=$(date +%s)
[ "$MODE" != build ] || { echo "vm-test: image ready in $CACHE ($((t1 - t0)) s)"; exit 0; }

export VAGRANT_HOME=$CACHE/vagrant.d VAGRANT_DEFAULT_PROVIDER=libvirt
make_box() {   # the image as a vagrant-libvirt box: box.img + metadata.json + Vagrantfile
  local b=$CACHE/box
  rm -rf "$b"; mkdir -p "$b"
  ln "$IMG" "$b/box.img" 2>/dev/null || cp "$IMG" "$b/box.img"
  cp "$CACHE/vmlinuz" "$CACHE/initrd" "$CACHE/id_ed25519" "$b/"
  echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 6}' > "$b/metadata.json"
  cat > "$b/Vagrantfile" <<'BOXVF'
# fpd's offline Debian 12 box (scripts/vm-test.sh --box): direct kernel boot, root over SSH
# with the cache's own key.
Vagrant.configure("2") do |config|
  here = File.dirname(__FILE__)
  config.ssh.username = "root"
  config.ssh.private_key_path = File.join(here, "id_ed25519")
  config.vm.provider "libvirt" do |lv|
    lv.kernel = File.join(here, "vmlinuz")
    lv.initrd = File.join(here, "initrd")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 panic=-1 net.ifnames=0"
  end
end
BOXVF
  tar -C "$b" -cf "$CACHE/fpd-bookworm.box" metadata.json Vagrantfile box.img vmlinuz initrd id_ed25519
  rm -rf "$b"
  vagrant box remove -f --all "$BOX" >/dev/null 2>&1 || true
  vagrant box add -f --name "$BOX" "$CACHE/fpd-bookworm.box" >/dev/null
  rm -f "$CACHE/fpd-bookworm.box"
  # vagrant-libvirt keeps the box image in its storage pool as a volume: drop the old one
  local v
  for v in $(virsh -q vol-list fpd-vm 2>/dev/null | awk '$1 ~ /^fpd-VAGRANTSLASH-bookworm-offline/ {print $1}'); do
    virsh -q vol-delete --pool fpd-vm "$v" >/dev/null 2>&1 || true
  done
  echo "$KEY" > "$CACHE/box.key"
}

LIBVIRT_STARTED=()
KVM_MODE=
start_libvirt() {   # no systemd here: libvirtd and virtlogd as daemons, stopped at exit
  # libvirt runs QEMU as libvirt-qemu (group kvm) and re-probes QEMU on every call, for
  # ever, while that user cannot open /dev/kvm ("KVM was enabled when probing, but it is
  # not available now"): give /dev/kvm the group and mode Debian's udev rule gives it,
  # for this run (restored at exit)
  if [ -c /dev/kvm ] && [ -z "$KVM_MODE" ] && ! su -s /bin/sh libvirt-qemu -c 'test -w /dev/kvm' 2>/dev/null; then
    KVM_MODE=$(stat -c '%a %G' /dev/kvm)
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
  fi
  if ! { [ -S /var/run/libvirt/libvirt-sock ] && virsh -q uri >/dev/null 2>&1; }; then
    mkdir -p /var/run/libvirt /var/lib/libvirt /var/log/libvirt
    if ! pgrep -x virtlogd >/dev/null; then
      virtlogd -d -p "$CACHE/virtlogd.pid"; LIBVIRT_STARTED+=("$CACHE/virtlogd.pid")
    fi
    libvirtd -d -p "$CACHE/libvirtd.pid"; LIBVIRT_STARTED+=("$CACHE/libvirtd.pid")
    local ok=
    for _ in $(seq 50); do virsh -q uri >/dev/null 2>&1 && { ok=1; break; }; sleep 0.2; done
    [ -n "$ok" ] || { echo "vm-test: libvirtd did not start" >&2; return 1; }
  fi
  # the Vagrantfile's storage pool (vagrant-libvirt creates none but "default"), in the cache
  if ! virsh -q pool-info fpd-vm >/dev/null 2>&1; then
    mkdir -p "$CACHE/pool"
    virsh -q pool-define-as fpd-vm dir --target "$CACHE/pool" >/dev/null
  fi
  case "$(virsh -q pool-info fpd-vm)" in *running*) ;; *) virsh -q pool-start fpd-vm >/dev/null;; esac
}
stop_libvirt() {
  local p pid
  for p in "${LIBVIRT_STARTED[@]}"; do
    pid=$(cat "$p" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$p"
  done
  LIBVIRT_STARTED=()
  if [ -n "$KVM_MODE" ]; then chmod "${KVM_MODE% *}" /dev/kvm; chgrp "${KVM_MODE#* }" /dev/kvm; KVM_MODE=; fi
}

trap stop_libvirt EXIT
if [ "$MODE" = box ] || [ "$DRIVER" = vagrant ]; then
  if [ "$(cat "$CACHE/box.key" 2>/dev/null)" != "$KEY" ] || ! vagrant box list 2>/dev/null | grep -q "^$BOX "; then
    echo "vm-test: making the Vagrant box $BOX (VAGRANT_HOME=$VAGRANT_HOME)"
    start_libvirt
    make_box
    stop_libvirt
  fi
  [ "$MODE" != box ] || { echo "vm-test: box $BOX ready (VAGRANT_HOME=$VAGRANT_HOME)"; exit 0; }
fi

RUN=$(mktemp -d /tmp/fpd-vm.XXXXXX)
chmod 755 "$RUN"
QPID=
VAGRANT_UP=
cleanup() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$QPID" 2>/dev/null || true
  fi
  if [ -n "$VAGRANT_UP" ]; then
    (cd "$REPO/vagrant" && vagrant destroy -f >/dev/null 2>&1) || true
    if virsh -q dominfo "$DOMAIN" >/dev/null 2>&1; then   # vagrant failed: by hand
      virsh -q destroy "$DOMAIN" >/dev/null 2>&1 || true
      virsh -q undefine "$DOMAIN" --remove-all-storage >/dev/null 2>&1 || true
    fi
  fi
  stop_libvirt
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
boot() {   # $1 = kvm | tcg; plain QEMU
  rm -f "$RUN/overlay.qcow2" "$RUN/console.log"
  qemu-img create -q -f qcow2 -F qcow2 -b "$IMG" "$RUN/overlay.qcow2"
  local accel=(-enable-kvm -cpu host,-arch-capabilities)
  [ "$1" = tcg ] && accel=(-accel tcg,thread=multi -cpu max)
  qemu-system-x86_64 "${accel[@]}" -smp "$CPUS" -m "$MEM" -nographic -no-reboot \
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

# KVM or TCG. A PVM host (KVM from the kvm_pvm module: "Pagetable-based Virtual Machine",
# no VMX/SVM in the CPU flags, as in a Firecracker guest that offers nested VMs) runs at
# native speed only guest kernels built with CONFIG_PVM_GUEST; Debian's kernel is not one
# and crawls (instruction emulation: minutes inside its decompressor), so TCG it is.
ACCEL=${FPD_VM_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
  if [ ! -w /dev/kvm ]; then
    echo "vm-test: no writable /dev/kvm: TCG emulation (slow)"; ACCEL=tcg
  elif [ -d /sys/module/kvm_pvm ] && ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    echo "vm-test: KVM here is PVM (kvm_pvm, no VMX/SVM): it runs only PVM-guest kernels" \
         "(CONFIG_PVM_GUEST), and Debian's is not one: TCG emulation (slow)"
    ACCEL=tcg
  else
    echo "vm-test: probing KVM (console log: $RUN/console.log)"
    boot kvm
    for _ in $(seq 45); do grep -q "Linux version" "$RUN/console.log" 2>/dev/null && break; sleep 1; done
    if grep -q "Linux version" "$RUN/console.log" 2>/dev/null; then ACCEL=kvm; else
      echo "vm-test: under KVM the guest kernel printed nothing in 45 s: TCG emulation (slow)"
      ACCEL=tcg
    fi
    if [ "$DRIVER" = vagrant ] || [ "$ACCEL" = tcg ]; then stop_vm; fi
  fi
fi

SSH=(ssh -q -i "$CACHE/id_ed25519" -p "$PORT" -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o BatchMode=yes root@127.0.0.1)
SUITE="set -a; . /etc/environment; set +a; cd /srv/fpd && CI=${CI:-} ./run.sh test PYTEST_ARGS='$ARGS'"
if [ "$DRIVER" = qemu ]; then
  [ -n "$QPID" ] || boot "$ACCEL"
  up=0
  for _ in $(seq 450); do
    kill -0 "$QPID" 2>/dev/null || { echo "vm-test: QEMU exited:"; cat "$RUN/qemu.log"; tail -30 "$RUN/console.log"; exit 1; }
    if "${SSH[@]}" true 2>/dev/null; then up=1; break; fi
    sleep 2
  done
  [ $up = 1 ] || { echo "vm-test: no SSH after 900 s; console:"; tail -40 "$RUN/console.log"; exit 1; }
  t2=$(date +%s)
  echo "vm-test: VM up in $((t2 - t1)) s (qemu, $ACCEL, $("${SSH[@]}" uname -sr)); copying HEAD and running the suite"
  git -C "$REPO" archive --format=tar --prefix=fpd/ HEAD | "${SSH[@]}" "tar -x -C /srv"
else
  start_libvirt
  export VAGRANT_DOTFILE_PATH=$RUN/vagrant FPD_VM_SSH_PORT=$PORT FPD_VM_ACCEL=$ACCEL FPD_VM_POOL=$CACHE/pool \
         FPD_VM_CONSOLE=$RUN/console.log FPD_VAGRANT_BOX=$BOX
  DOMAIN=fpd-vm-$PORT-default   # the Vagrantfile's lv.default_prefix + the machine's name
  if virsh -q dominfo "$DOMAIN" >/dev/null 2>&1; then   # left by a run that was killed
    virsh -q destroy "$DOMAIN" >/dev/null 2>&1 || true
    virsh -q undefine "$DOMAIN" --remove-all-storage >/dev/null 2>&1 || true
  fi
  VAGRANT_UP=1
  echo "vm-test: vagrant up (libvirt, $ACCEL; console log: $RUN/console.log)"
  if ! (cd "$REPO/vagrant" && vagrant up --no-provision) > "$RUN/vagrant-up.log" 2>&1; then
    tr '\r' '\n' < "$RUN/vagrant-up.log" | grep -v '^.\[KProgress' > "$CACHE/vagrant-up.log" || true
    echo "vm-test: vagrant up failed ($CACHE/vagrant-up.log):"
    grep -v -m 40 '^	from ' "$CACHE/vagrant-up.log" | tail -25; tail -20 "$RUN/console.log" 2>/dev/null; exit 1
  fi
  t2=$(date +%s)
  echo "vm-test: VM up in $((t2 - t1)) s (vagrant $DOMAIN, $ACCEL, $("${SSH[@]}" uname -sr)); work tree rsynced to /srv/fpd"
  SSH=(bash -c 'cd "$0/vagrant" && exec vagrant ssh -c "$1" -- -q' "$REPO")
fi

rc=0
"${SSH[@]}" "$SUITE" > "$RUN/suite.log" 2>&1 || rc=$?
t3=$(date +%s)
grep -E "^(FAILED|ERROR) |passed|failed|error" "$RUN/suite.log" | tail -25 || true
[ $rc = 0 ] || tail -60 "$RUN/suite.log"
[ -z "${FPD_VM_KEEP_LOG:-}" ] || cp "$RUN/suite.log" "$FPD_VM_KEEP_LOG"
if [ "$DRIVER" = qemu ]; then "${SSH[@]}" poweroff >/dev/null 2>&1 || true; fi
echo "vm-test: exit $rc ($DRIVER, $ACCEL); image $((t1 - t0)) s (0 = cached), boot $((t2 - t1)) s, suite $((t3 - t2)) s"
exit $rc
