# fpd — one file sets the machine up and runs everything. `./run.sh TARGET` is the same as
# `make TARGET` on a machine that has no make yet (it installs make first).
#   make demo   installs what is missing, then runs `fpd demo` (fpd's main job on a test bed)
#   make test   installs what is missing (apt + venv), builds the BPF object, runs the suite
#   make test-fast  unit + engine tests only (no root)
#   make bare-check the README's test command in a bare Debian 12 chroot (~10 min, root)
#   make vm-test    the integration suite in a throw-away Debian 12 VM (plain QEMU, root;
#                   FPD_VM_DRIVER=vagrant: the same through vagrant + vagrant-libvirt)
#   make vm-box     the offline Vagrant box fpd/bookworm-offline (root, once)
#   make vm-deps    what those need (QEMU, debootstrap, vagrant, vagrant-libvirt, libvirt)
#
# Interpreter: Debian's /usr/bin/python3 (3.11 on Debian 12), in a venv made with
# --system-site-packages. It measured 1.5-2x faster than the pyenv build on the per-packet
# loops fpd runs, and it is the only one that sees Debian's python3-bpfcc (bcc).

PYTHON_SYS ?= /usr/bin/python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
CLANG      ?= clang
BPF_CFLAGS := -O2 -g -Wall -target bpf -I/usr/include/$(shell uname -m)-linux-gnu
APT_PKGS   := clang llvm libbpf-dev bpftool ethtool iproute2 nftables iperf3 socat curl \
              wrk iputils-ping tcpdump procps python3 python3-venv python3-dev python3-bpfcc gcc make \
              libatomic1 python3-setuptools python3-wheel
PYTEST_ARGS ?=
# only for the opt-in VM targets (not part of deps)
VM_APT_PKGS := qemu-system-x86 qemu-utils debootstrap openssh-client rsync vagrant \
              vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients

.PHONY: all deps venv bpf demo test test-fast bare-check vm-test vm-box vm-deps print-apt-pkgs clean

all: venv bpf

deps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml setup.py fpd/_accel.c fpd/fastpath.py fpd/_fastpath_c.pxd \
                    fpd/tcp.py fpd/_tcp_c.pxd | deps
	$(PYTHON_SYS) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>/dev/null || true
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.installed

bpf/steer.o: bpf/steer.c | deps
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bpf: deps bpf/steer.o

demo: venv bpf
	$(VENV)/bin/fpd demo

test: venv bpf
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest tests/unit tests/engine $(PYTEST_ARGS)

bare-check:
	scripts/bare-check.sh test

vm-test:
	scripts/vm-test.sh

vm-box:
	scripts/vm-test.sh --box

vm-deps:
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	  --no-install-recommends $(VM_APT_PKGS)

print-apt-pkgs:
	@echo $(APT_PKGS)

clean:
	rm -rf $(VENV) bpf/*.o build *.egg-info fpd/_accel*.so
