"""The ``fpd`` command line (click)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys

import click

from fpd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fpd")
def main():
    """fpd — fast-path TCP termination: XDP steering, AF_XDP rings, a TCP engine in Python."""


def _check(name: str, fn) -> dict:
    try:
        ok, detail = fn()
    except Exception as e:  # a check must never crash the report
        ok, detail = False, f"{type(e).__name__}: {e}"
    return {"check": name, "ok": bool(ok), "detail": detail}


def _kernel():
    rel = platform.release()
    parts = rel.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1].split("-")[0])
    except (ValueError, IndexError):
        return False, f"cannot read kernel version {rel!r}"
    return (major, minor) >= (5, 10), f"Linux {rel} (need >= 5.10)"


def _privileges():
    if os.geteuid() == 0:
        return True, "running as root"
    try:
        with open("/proc/self/status") as f:
            capeff = next(l for l in f if l.startswith("CapEff:")).split()[1]
    except (OSError, StopIteration):
        return False, "not root and capabilities unreadable"
    caps = int(capeff, 16)
    need = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_BPF": 39}
    missing = [n for n, bit in need.items() if not caps >> bit & 1]
    return not missing, "missing " + ", ".join(missing) if missing else "capabilities present"


def _af_xdp():
    try:
        s = socket.socket(44, socket.SOCK_RAW, 0)
    except OSError as e:
        return False, f"AF_XDP socket: {e.strerror}"
    s.close()
    return True, "AF_XDP sockets can be created"


def _libbpf():
    from fpd import libbpf  # noqa: F401  (loading the shared library is the check)
    return True, "libbpf loaded"


def _bpf_object():
    from fpd.bpf import find_object
    return True, find_object()


def _clang():
    path = shutil.which("clang")
    return path is not None, path or "clang not found (needed only to rebuild bpf/steer.c)"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json):
    """Check that this machine can run fpd (kernel, privileges, AF_XDP, libbpf, BPF object)."""
    checks = [
        _check("kernel", _kernel),
        _check("privileges", _privileges),
        _check("af_xdp", _af_xdp),
        _check("libbpf", _libbpf),
        _check("bpf_object", _bpf_object),
        _check("clang", _clang),
    ]
    if as_json:
        click.echo(json.dumps(checks, indent=2))
    else:
        for c in checks:
            click.echo(f"{'ok ' if c['ok'] else 'BAD'}  {c['check']:<11} {c['detail']}")
    sys.exit(0 if all(c["ok"] for c in checks if c["check"] != "clang") else 1)


@main.group()
def xdp():
    """Inspect or remove the XDP program on an interface."""


@xdp.command("status")
@click.option("-i", "--iface", required=True, help="Network interface.")
def xdp_status(iface):
    """Show which XDP program is attached to IFACE (queried from the kernel)."""
    from fpd.bpf import XdpError, attached_prog_id

    try:
        found = {m: attached_prog_id(iface, m) for m in ("native", "generic")}
    except XdpError as e:
        raise click.ClickException(str(e))
    if not any(found.values()):
        click.echo(f"{iface}: no XDP program attached")
    for mode, pid in found.items():
        if pid:
            click.echo(f"{iface}: program id {pid} attached in {mode} mode")


@xdp.command("detach")
@click.option("-i", "--iface", required=True, help="Network interface.")
def xdp_detach(iface):
    """Remove whatever XDP program is attached to IFACE (cleanup after a crash)."""
    from fpd.bpf import XdpError, force_detach

    try:
        removed = force_detach(iface)
    except XdpError as e:
        raise click.ClickException(str(e))
    click.echo(f"{iface}: {'XDP program removed' if removed else 'nothing was attached'}")


if __name__ == "__main__":
    main()
