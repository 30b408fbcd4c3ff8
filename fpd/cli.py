"""The ``fpd`` command line (click)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time

import click

from fpd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fpd")
def main():
    """fpd — fast-path TCP termination: XDP steering, AF_XDP rings, a TCP engine in Python."""


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


# --- the daemon -------------------------------------------------------------------------
def _default_socket() -> str:
    from fpd.proto import DEFAULT_SOCKET
    return DEFAULT_SOCKET


def _socket_option(f):
    return click.option(
        "--socket", "socket_path", envvar="FPD_SOCKET", default=_default_socket,
        show_default="$FPD_SOCKET, else /run/fpd/fpd.sock",
        type=click.Path(dir_okay=False, readable=False),
        help="The daemon's control socket (its pid, state and log files sit next to it).")(f)


class NotRunning(click.ClickException):
    exit_code = 3


def _connect(path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        s.close()
        raise NotRunning(f"fpd is not running (no socket at {path})")
    except ConnectionRefusedError:
        s.close()
        raise NotRunning(f"fpd is not running (stale socket {path}: the daemon died; "
                         f"`fpd stop --force -i IFACE` cleans up)")
    except PermissionError:
        s.close()
        who = ""
        try:
            st = os.stat(path)
            import grp
            import pwd
            owner = pwd.getpwuid(st.st_uid).pw_name
            group = grp.getgrgid(st.st_gid).gr_name
            who = f" (mode {st.st_mode & 0o777:04o}, owner {owner}:{group})"
        except (OSError, KeyError):
            pass
        raise click.ClickException(f"permission denied on {path}{who}: run as root or as a "
                                   f"member of the socket's group (fpd start --group G)")
    except OSError as e:
        s.close()
        raise click.ClickException(f"cannot connect to fpd at {path}: {e.strerror or e}")
    return s


def _ask(path: str, msg, timeout: float = 10.0) -> dict:
    """One request (an :mod:`fpd.proto` message) to the supervisor, its reply (an
    error reply is a ClickException)."""
    from fpd import proto
    s = _connect(path, timeout)
    try:
        reply, _ = proto.request(s, msg)
    except (TimeoutError, socket.timeout):
        raise click.ClickException(f"fpd at {path} did not answer {msg.op} within "
                                   f"{timeout:.0f} s")
    except proto.Closed:
        raise click.ClickException(f"fpd at {path} closed the connection without answering "
                                   f"{msg.op}")
    except (OSError, ValueError) as e:
        if proto.refused(e):
            raise click.ClickException(e.strerror)
        raise click.ClickException(f"talking to fpd at {path}: {e}")
    finally:
        s.close()
    return reply


def _parse_local_ports(value):
    """"LO-HI" (or [lo, hi]) -> (lo, hi)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"local ports must be [LO, HI], not {value!r}")
        lo, hi = value
    else:
        text = str(value).strip()
        if "-" not in text:
            raise ValueError(f"local ports must be a range LO-HI, not {text!r}")
        lo, hi = text.split("-", 1)
    try:
        lo, hi = int(lo), int(hi)
    except (TypeError, ValueError):
        raise ValueError(f"local ports must be numbers LO-HI, not {value!r}") from None
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"local port range {lo}-{hi} must be 1..65535 with LO <= HI")
    return lo, hi


def _local_ports_cb(ctx, param, value):
    try:
        return _parse_local_ports(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.option("-i", "--iface", help="Also check this interface (XDP mode, queues, MTU, "
                                    "memlock for its queues, no XDP program yet).")
@click.option("-p", "--port", "ports", type=click.IntRange(1, 65535), multiple=True,
              help="Also check that the kernel does not use this port (repeat).")
@click.option("--local-ports", callback=_local_ports_cb,
              help="Local port range to check. [default: 60000-60255]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(iface, ports, local_ports, as_json):
    """Check everything `fpd start` needs: kernel, capabilities, memlock, AF_XDP, libbpf,
    the BPF object, the interface (XDP mode, queues, MTU), the local port range; and the
    optional tools (clang, tcpdump, tracefs, bcc). Exit 1 if `fpd start` would fail."""
    from fpd import doctor as _doctor
    checks = _doctor.run_checks(iface, local_ports, ports)
    if as_json:
        click.echo(json.dumps(checks, indent=2))
    else:
        width = max(len(c["check"]) for c in checks)
        for c in checks:
            click.echo(f"{ {'ok': 'ok  ', 'warn': 'warn', 'bad': 'BAD '}[c['level']]} "
                       f"{c['check']:<{width}}  {c['detail']}")
    sys.exit(1 if any(c["level"] == "bad" for c in checks) else 0)


# keys of a --config file (TOML or JSON) -> DaemonConfig fields
CONFIG_KEYS = {
    "iface": "ifname", "interface": "ifname", "ifname": "ifname",
    "port": "ports", "ports": "ports", "addr": "addr", "mode": "mode", "queues": "queues",
    "socket": "socket", "local_ports": "local_ports", "local-ports": "local_ports",
    "group": "group", "owner": "owner", "log": "log", "foreground": "foreground",
    "socket_mode": "sock_mode", "stack": "stack", "worker": "worker",
    "metrics": "metrics", "log_level": "log_level", "log-level": "log_level",
    "user": "user",
    "syn_limit": "syn_limit", "syn-limit": "syn_limit",
}


def load_config_file(path: str) -> dict:
    """A TOML (``.toml``, or anything that parses as TOML) or JSON file -> DaemonConfig
    fields. Raises ValueError with a clear message."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    text = raw.decode("utf-8", "replace")
    data = None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    else:
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path} is not valid TOML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a table/object")
    if isinstance(data.get("fpd"), dict) and len(data) == 1:     # [fpd] section
        data = data["fpd"]
    out = {}
    unknown = sorted(k for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key{'s' * (len(unknown) > 1)} "
                         f"{', '.join(unknown)} (known: {', '.join(sorted(CONFIG_KEYS))})")
    for k, v in data.items():
        field = CONFIG_KEYS[k]
        if field == "ports":
            v = [v] if isinstance(v, int) else v
            if not isinstance(v, list) or not all(isinstance(p, int) and not
                                                  isinstance(p, bool) for p in v):
                raise ValueError(f"{path}: {k} must be a port number or a list of them")
        elif field == "local_ports":
            v = _parse_local_ports(v)
        elif field in ("queues", "syn_limit") and v is not None \
                and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{path}: {k} must be a number")
        elif field in ("stack", "worker") and not isinstance(v, dict):
            raise ValueError(f"{path}: {k} must be a table")
        elif field == "sock_mode" and isinstance(v, str):
            v = int(v, 8)
        elif field == "foreground" and not isinstance(v, bool):
            raise ValueError(f"{path}: foreground must be true or false")
        elif field in ("ifname", "addr", "mode", "socket", "log", "metrics",
                       "log_level") and v is not None \
                and not isinstance(v, str):
            raise ValueError(f"{path}: {k} must be a string")
        out[field] = v
    return out


def build_config(given: dict, from_file: dict):
    """DaemonConfig from the command line (``given``: only the options the user set) over
    the config file's values over the defaults."""
    from fpd.daemon import DaemonConfig
    merged = {**from_file, **{k: v for k, v in given.items() if v is not None}}
    if not merged.get("ifname"):
        raise click.UsageError("Missing option '-i' / '--iface' (or iface in --config).")
    if not merged.get("ports"):
        raise click.UsageError("Missing option '-p' / '--port' (or ports in --config).")
    merged["ports"] = list(merged["ports"])
    if "local_ports" in merged:
        merged["local_ports"] = tuple(merged["local_ports"])
    return DaemonConfig(**merged)


def _serving_line(cfg, info: dict) -> str:
    where = f" at {cfg.addr}" if cfg.addr else ""
    return (f"fpd serving {cfg.ifname} ({info.get('mode', '?')} XDP) queues "
            f"{info.get('queues', '?')} ports {','.join(map(str, cfg.ports))}{where} on "
            f"{cfg.socket} (pid {info.get('pid', '?')}); log {cfg.log_path}")


def _daemonize(cfg, timeout: float = 90.0) -> int:
    """Fork; the child setsid()s and runs the daemon; we wait for its verdict on a pipe."""
    import select
    import signal as _signal

    from fpd import daemon

    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                   # the daemon
        rc = 1
        try:
            os.close(r)
            os.setsid()
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if null > 2:
                os.close(null)
            rc = daemon.run(cfg, ready_fd=w)
        except BaseException:                      # noqa: BLE001  (always _exit)
            rc = 1
        finally:
            os._exit(rc)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, _signal.SIGTERM)
                raise click.ClickException(f"fpd (pid {pid}) did not finish starting within "
                                           f"{timeout:.0f} s: stopped it; see {cfg.log_path}")
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("ok"):
        try:
            info = json.loads(text[2:].strip() or "{}")
        except ValueError:
            info = {}
        for line in info.get("cleaned") or []:        # a dead daemon's left-overs
            click.echo(f"fpd: {line}", err=True)
        click.echo(_serving_line(cfg, info))
        return 0
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)                          # it exits after reporting the error
    if text.startswith("error:"):
        raise click.ClickException(text[len("error:"):].strip())
    raise click.ClickException(f"fpd died during start-up; see {cfg.log_path}")


@main.command()
@click.option("-i", "--iface", help="Interface to serve (its XDP hook and every queue).")
@click.option("-p", "--port", "ports", type=click.IntRange(1, 65535), multiple=True,
              help="TCP port to terminate (repeat for more).")
@click.option("--addr", help="Serve the ports at this local IPv4 address only "
                             "(default: any address of the interface).")
@click.option("--mode", type=click.Choice(["auto", "native", "generic"]),
              help="XDP mode; auto = native if the driver allows, else generic. "
                   "[default: auto]")
@click.option("--queues", type=click.IntRange(1, 64),
              help="Serve only the first N queues (default: all active queues).")
@_socket_option
@click.option("--foreground", "-f", is_flag=True, default=None,
              help="Stay in the foreground (log to stderr too) instead of daemonizing.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML or JSON file with the same keys (iface, ports, addr, mode, queues, "
                   "socket, local_ports, group, owner, log, log_level, foreground, metrics, "
                   "stack, worker); the command line wins.")
@click.option("--local-ports", callback=_local_ports_cb,
              help="Local port range LO-HI for outgoing connections, steered to fpd and "
                   "reserved from the kernel. [default: 60000-60255]")
@click.option("--group", help="Group that may use the socket (mode 0660).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False),
              help="Log file. [default: SOCKET.log, e.g. /run/fpd/fpd.sock.log]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Least severe level logged. [default: info]")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (the kernel's "
                   "TCP; off by default), e.g. 127.0.0.1:9477.")
@click.option("--user", metavar="USER[:GROUP]",
              help="The workers drop root for this user once set up (no capabilities "
                   "left); 'root' keeps root. [default: auto = the user fpd if it "
                   "exists, else nobody]")
@click.option("--syn-limit", type=click.IntRange(0, 10_000_000), metavar="RATE",
              help="Let at most RATE connection requests (SYNs) per second per CPU through "
                   "to the workers; the rest are dropped in XDP (xdp syn_limited), so a SYN "
                   "flood cannot crowd out established connections. [default: 0 = off]")
@click.pass_context
def start(ctx, iface, ports, addr, mode, queues, socket_path, foreground, config_file,
          local_ports, group, log_file, log_level, metrics, user, syn_limit):
    """Start the daemon: attach XDP to IFACE, steer the ports, serve apps on the socket.

    Needs root. Without --foreground, returns once the daemon serves (exit 0) or with its
    start-up error (exit 1). Stop it with `fpd stop`.
    """
    from click.core import ParameterSource
    from fpd import daemon

    def given(name):
        src = ctx.get_parameter_source(name)
        return src not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)

    from_file = {}
    if config_file:
        try:
            from_file = load_config_file(config_file)
        except ValueError as e:
            raise click.ClickException(str(e))
    cli_values = {"ifname": iface, "ports": list(ports) or None, "addr": addr, "mode": mode,
                  "queues": queues, "local_ports": local_ports, "group": group,
                  "log": log_file, "foreground": foreground, "log_level": log_level,
                  "metrics": metrics, "user": user, "syn_limit": syn_limit}
    if given("socket_path") or "socket" not in from_file:
        cli_values["socket"] = os.path.abspath(socket_path)
    cfg = build_config(cli_values, from_file)
    if cfg.socket and not os.path.isabs(cfg.socket):
        cfg.socket = os.path.abspath(cfg.socket)
    if cfg.log and not os.path.isabs(cfg.log):
        cfg.log = os.path.abspath(cfg.log)
    try:
        daemon.preflight(cfg)
    except daemon.DaemonError as e:
        raise click.ClickException(str(e))
    if cfg.foreground:
        sys.exit(daemon.run(cfg))
    sys.exit(_daemonize(cfg))


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("-i", "--iface", help="Interface to serve (its XDP hook and every queue).")
@click.option("-p", "--port", "ports", type=click.IntRange(1, 65535), multiple=True,
              help="TCP port the program serves through fpd (repeat for more).")
@click.option("--addr", help="Serve the ports at this local IPv4 address only.")
@click.option("--mode", type=click.Choice(["auto", "native", "generic"]),
              help="XDP mode. [default: auto]")
@click.option("--queues", type=click.IntRange(1, 64),
              help="Serve only the first N queues (one copy of the program per queue).")
@_socket_option
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML or JSON file with fpd start's keys; the command line wins.")
@click.option("--local-ports", callback=_local_ports_cb,
              help="Local port range LO-HI for outgoing connections. "
                   "[default: 60000-60255]")
@click.option("--group", help="Group that may use the socket (mode 0660).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False),
              help="Log file. [default: SOCKET.log]")
@click.option("-m", "module", metavar="MODULE",
              help="Run library module MODULE as a script (as python -m).")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, iface, ports, addr, mode, queues, socket_path, config_file, local_ports,
        group, log_file, module, program):
    """Run a Python program on fpd: fpd run -i IFACE -p PORT [...] [--] SCRIPT.py [ARGS]
    (or -m MODULE [ARGS]).

    Starts fpd in the foreground, runs the program in every worker with fpd's asyncio
    event loop installed and `socket` swapped for fpd.inproc (blocking sockets on the
    worker's own engine, in-process; fpd.client for the rest), and stops fpd when the
    program exits (its exit status is fpd run's). Ctrl-C / SIGTERM stop both.
    """
    from click.core import ParameterSource
    from fpd import daemon

    program = list(program)
    if program and program[0] == "--":
        program = program[1:]
    if module:
        argv = [module] + program
    elif program:
        argv = [os.path.abspath(program[0])] + program[1:]
        if not os.path.isfile(argv[0]):
            raise click.UsageError(f"no such script: {program[0]}")
    else:
        raise click.UsageError("give the program to run: SCRIPT.py [ARGS] or -m MODULE")
    from_file = {}
    if config_file:
        try:
            from_file = load_config_file(config_file)
        except ValueError as e:
            raise click.ClickException(str(e))
    cli_values = {"ifname": iface, "ports": list(ports) or None, "addr": addr, "mode": mode,
                  "queues": queues, "local_ports": local_ports, "group": group,
                  "log": log_file, "foreground": True}
    src = ctx.get_parameter_source("socket_path")
    if src not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP) \
            or "socket" not in from_file:
        cli_values["socket"] = os.path.abspath(socket_path)
    cfg = build_config(cli_values, from_file)
    cfg.foreground = True
    if cfg.log and not os.path.isabs(cfg.log):
        cfg.log = os.path.abspath(cfg.log)
    cfg.app = {"argv": argv, "module": bool(module), "socket": cfg.socket}
    try:
        daemon.preflight(cfg)
    except daemon.DaemonError as e:
        raise click.ClickException(str(e))
    sys.exit(daemon.run(cfg))


@main.command()
@click.option("--force", is_flag=True,
              help="The daemon died (SIGKILL, crash): detach its XDP program from IFACE, "
                   "give back the reserved ports, remove stale files (kills a hung daemon).")
@click.option("-i", "--iface", help="Interface (with --force).")
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds to wait for the daemon to exit.")
@_socket_option
def stop(force, iface, timeout, socket_path):
    """Stop the daemon: clients are told, connections reset, XDP detached, files removed."""
    from fpd import daemon
    if force:
        if not iface:
            raise click.UsageError("--force needs -i IFACE (the interface to clean up)")
        if os.geteuid() != 0:
            raise click.ClickException("fpd stop --force needs root (it detaches XDP and "
                                       "writes /proc/sys)")
        try:
            daemon.check_interface(iface)
        except daemon.DaemonError as e:
            raise click.ClickException(str(e))
        did = daemon.force_stop(iface, socket_path, wait=min(timeout, 10.0))
        for line in did:
            click.echo(line)
        if not did:
            click.echo(f"nothing to clean up on {iface} / {socket_path}")
        return
    if iface:
        raise click.UsageError("-i is only for --force")
    from fpd import proto
    s = _connect(socket_path, timeout)
    try:
        try:
            reply, _ = proto.request(s, proto.Stop())
        except (TimeoutError, socket.timeout):
            raise click.ClickException(f"fpd at {socket_path} did not answer stop within "
                                       f"{timeout:.0f} s")
        except proto.Closed:
            raise click.ClickException("fpd refused to stop: connection closed")
        except (OSError, ValueError) as e:
            if proto.refused(e):
                raise click.ClickException(f"fpd refused to stop: "
                                           f"{e.fpd_reply.get('error', 'request failed')}")
            raise click.ClickException(f"talking to fpd at {socket_path}: {e}")
        pid = reply.get("pid", "?")
        # the daemon closes this connection when it has cleaned up (or exits)
        s.settimeout(timeout)
        try:
            while s.recv(65536):
                pass
        except (TimeoutError, socket.timeout):
            raise click.ClickException(f"fpd (pid {pid}) did not stop within {timeout:g} s; "
                                       f"`fpd stop --force -i IFACE` kills it and cleans up")
        except OSError:
            pass
    finally:
        s.close()
    click.echo(f"fpd (pid {pid}) stopped")


_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print the daemon's answer as JSON.")


def _query(socket_path: str, op: str, as_json: bool):
    """The daemon's answer to ``op``; printed as JSON (and None returned) with --json."""
    from fpd import proto
    r = _ask(socket_path, proto.SUPERVISOR_OPS[op]())
    if as_json:
        click.echo(json.dumps(r, indent=2, sort_keys=True))
        return None
    return r


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@main.command()
@_json_option
@_socket_option
def status(as_json, socket_path):
    """Is the daemon running? Interface, XDP mode, ports, workers, clients."""
    r = _query(socket_path, "status", as_json)
    if r is None:
        return
    where = f"at {r['addr']}" if r.get("addr") else "at any address"
    up = _age(time.time() - r["started"]) if r.get("started") else "?"
    click.echo(f"fpd running, pid {r.get('pid')}, up {up}, socket {socket_path}")
    click.echo(f"  {r.get('ifname')}: {r.get('mode')} XDP (prog id {r.get('prog_id', '?')}), "
               f"ports {','.join(map(str, r.get('ports', [])))} {where}, local ports "
               f"{'-'.join(map(str, r.get('local_ports', [])))}")
    for w in r.get("workers", []):
        state = "alive" if w.get("alive") else "DEAD"
        err = f" ({w['error']})" if w.get("error") else ""
        click.echo(f"  worker q{w.get('queue')}: pid {w.get('pid')} {state}{err}")
    click.echo(f"  clients {r.get('clients', 0)}, connections {r.get('connections', 0)}")


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@main.command()
@_json_option
@_socket_option
def stats(as_json, socket_path):
    """Counters: the XDP program's, and each worker's (frames, XSK drops, the TCP stack)."""
    r = _query(socket_path, "stats", as_json)
    if r is None:
        return
    xdp = r.get("xdp", {})
    click.echo("xdp: " + " ".join(f"{k}={v}" for k, v in xdp.items()))
    drops = r.get("drops", {})
    if drops:
        click.echo("drops: " + " ".join(f"{k}={v}" for k, v in drops.items()))
    for w in r.get("workers", []):
        click.echo(f"worker q{w.get('queue')} (pid {w.get('pid')}):")
        if "error" in w:
            click.echo(f"  error: {w['error']}")
            continue
        items = [(k, v) for k, v in _flat(w) if k not in ("queue", "pid")]
        width = max((len(k) for k, _ in items), default=0)
        for k, v in items:
            click.echo(f"  {k:<{width}} {v}")


def _addr(a) -> str:
    if a is None:
        return "*"
    if isinstance(a, (list, tuple)) and len(a) == 2:
        host = a[0] if a[0] not in (None, "", "0.0.0.0") else "*"
        return f"{host}:{a[1]}"
    return str(a)


def _ms(v) -> str:
    if v is None:
        return "-"
    try:
        return f"{float(v) * 1000:.1f}"
    except (TypeError, ValueError):
        return str(v)


def _mbit(v) -> str:
    return "-" if v is None else f"{v * 8 / 1e6:.1f}"


def conns_table(r: dict) -> list[str]:
    """`fpd conns` as text lines (an `ss -ti`-like table)."""
    head = ("Q", "State", "Local", "Remote", "Owner", "cwnd", "srtt(ms)", "rto(ms)",
            "bytes_in", "bytes_out", "retrans", "minrtt(ms)", "rate(Mbit/s)", "limited")
    rows = []
    for li in r.get("listeners", []):
        local = li.get("local")
        if local is None and "port" in li:
            local = [li.get("addr"), li["port"]]
        rows.append((str(li.get("queue", "")), "LISTEN", _addr(local), "*:*",
                     str(li.get("owner_pid", "-")), "", "", "", "", "", "", "", "", ""))
    for c in r.get("conns", []):
        rows.append((str(c.get("queue", "")), str(c.get("state", "?")), _addr(c.get("local")),
                     _addr(c.get("remote")), str(c.get("owner_pid", "-")),
                     str(c.get("cwnd", "-")), _ms(c.get("srtt")), _ms(c.get("rto")),
                     str(c.get("bytes_in", "-")), str(c.get("bytes_out", "-")),
                     str(c.get("retransmits", "-")), _ms(c.get("min_rtt")),
                     _mbit(c.get("delivery_rate")), str(c.get("limited_by") or "-")))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(head)] + [line(row) for row in rows]
    if r.get("truncated"):
        out.append(f"({r['truncated']} more connections not shown)")
    for e in r.get("errors", []):
        out.append(f"worker q{e.get('queue')}: {e.get('error')}")
    return out


@main.command()
@_json_option
@_socket_option
def conns(as_json, socket_path):
    """Connections and listeners (like `ss -ti`): state, owner, cwnd, RTT, bytes, retransmits."""
    r = _query(socket_path, "conns", as_json)
    if r is None:
        return
    for line in conns_table(r):
        click.echo(line)


@main.command()
@click.option("-i", "--iface", help="Only if the daemon serves this interface (a check).")
@click.option("--port", type=click.IntRange(1, 65535), help="Only frames from or to this "
              "TCP port.")
@click.option("--host", help="Only frames from or to this IPv4 address.")
@click.option("-c", "--count", type=click.IntRange(1), help="Stop after COUNT frames.")
@click.option("-s", "--snaplen", type=click.IntRange(1, 262144), default=65535,
              show_default=True, help="Bytes kept of each frame.")
@click.option("-w", "--write", "out_path", required=True, metavar="FILE",
              help="pcap file to write; - for stdout (| tcpdump -r - / wireshark -k -i -).")
@_socket_option
def capture(iface, port, host, count, snaplen, out_path, socket_path):
    """Record the steered frames (both directions, every worker) as pcap while fpd serves.

    tcpdump cannot see them: they never reach the kernel's stack. The capture costs the
    data path a copy per frame and one send per burst; when this reader falls behind,
    frames are dropped and counted, never waited for. Stops at -c COUNT, Ctrl-C, or when
    the daemon stops."""
    from fpd import capture as _cap
    from fpd import proto

    try:
        req = _cap.parse_request({"port": port, "host": host, "snaplen": snaplen})
    except _cap.CaptureError as e:
        raise click.BadParameter(str(e))
    s = _connect(socket_path, 10.0)
    try:
        try:
            proto.send(s, proto.Capture(**{k: v for k, v in req.items() if v is not None}))
            reply, fds = proto.recv(s, maxfds=1)
        except (TimeoutError, socket.timeout):
            raise click.ClickException(f"fpd at {socket_path} did not answer capture "
                                       f"within 10 s")
        except (OSError, ValueError) as e:
            raise click.ClickException(f"talking to fpd at {socket_path}: {e}")
    finally:
        s.close()
    if reply is None:
        raise click.ClickException(f"fpd at {socket_path} closed the connection without "
                                   f"answering capture")
    if not reply.get("ok") or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        if reply.get("errno") == 95 or "unknown op" in str(reply.get("error", "")):
            raise click.ClickException(f"fpd at {socket_path} cannot capture: it is an "
                                       f"older version; restart it with this fpd")
        raise click.ClickException(f"fpd: {reply.get('error', 'capture refused')}")
    csock = socket.socket(fileno=fds[0])
    try:
        if iface and reply.get("ifname") != iface:
            raise click.ClickException(
                f"fpd at {socket_path} serves {reply.get('ifname')}, not {iface}: pick the "
                f"daemon of {iface} with --socket (or leave out -i)")
        try:
            out, close_out = _cap.open_output(out_path)
        except _cap.CaptureError as e:
            raise click.ClickException(str(e))
        what = " ".join(f"{k} {v}" for k, v in (("port", port), ("host", host)) if v)
        click.echo(f"fpd capture: {reply.get('ifname')} queues "
                   f"{','.join(map(str, reply.get('queues', [])))}"
                   f"{' ' + what if what else ''}, snaplen {snaplen} -> {out_path} "
                   f"(Ctrl-C stops)", err=True)
        try:
            res = _cap.run_capture(csock, out, count=count, snaplen=snaplen)
        finally:
            if close_out:
                out.close()
    finally:
        csock.close()
    why = {"eof": "the daemon stopped", "count": f"{count} frames",
           "interrupted": "interrupted", "output closed": "the output was closed"}
    click.echo(f"fpd capture: {res['frames']} frames written, {res['drops']} dropped by "
               f"the capture ring (reader too slow); stopped: {why[res['ended']]}", err=True)


@main.command()
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between counter reads.")
@click.option("--duration", type=click.FloatRange(0.1), help="Stop after this many seconds "
              "(default: until Ctrl-C or the daemon stops).")
@_socket_option
def trace(interval, duration, socket_path):
    """Live: why frames are dropped or not steered (root).

    Prints each xdp:xdp_exception and xdp:xdp_redirect_err tracepoint hit of fpd's XDP
    program (read through a private tracefs instance) with what it means, and every
    --interval the drop and not-steered counters that moved (XDP program, each socket's
    XDP statistics incl. fill-ring starvation, the workers)."""
    import select as _select

    from fpd import trace as _trace

    st = _ask(socket_path, {"op": "status"})
    prog = int(st.get("prog_id") or 0)
    tp = None
    try:
        tp = _trace.Tracepoints(prog)
        where = f"tracepoints xdp:xdp_exception, xdp:xdp_redirect_err ({tp.inst})"
    except _trace.TraceError as e:
        where = f"no tracepoints ({e})"
    click.echo(f"fpd trace: {st.get('ifname')} prog id {prog}: {where}; counters every "
               f"{interval:g} s; Ctrl-C stops")
    end = None if duration is None else time.monotonic() + duration
    why = "interrupted"
    try:
        prev = _ask(socket_path, {"op": "stats"})
        nxt = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                why = f"{duration:g} s"
                break
            wait = max(0.0, min(nxt, end if end is not None else nxt) - now)
            if tp is not None:
                r, _, _ = _select.select([tp], [], [], wait)
                if r:
                    for ev in tp.read_events():
                        click.echo(f"{time.strftime('%H:%M:%S')}  {_trace.explain(ev)}")
            else:
                time.sleep(wait)
            if time.monotonic() >= nxt:
                nxt += interval
                try:
                    cur = _ask(socket_path, {"op": "stats"}, timeout=5.0)
                except click.ClickException:
                    why = "the daemon stopped"
                    break
                for k, d in sorted(_trace.counter_deltas(prev, cur).items()):
                    click.echo(f"{time.strftime('%H:%M:%S')}  {k} +{d}: "
                               f"{_trace.meaning(k)}")
                prev = cur
    except KeyboardInterrupt:
        pass
    finally:
        if tp is not None:
            tp.close()
    click.echo(f"fpd trace: stopped ({why})")


@main.command()
@click.option("--quick", is_flag=True, help="A short run (smoke test).")
def demo(quick):
    """Run the demo: a test bed, fpd serving in it, the kernel's TCP talking to it (root)."""
    from fpd import demo as _demo
    sys.exit(_demo.run(echo=click.echo, quick=quick))


@main.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="A smoke run (about 20-30 s).")
@click.option("--rounds", type=int, help="Interleaved rounds (default 5; quick 2).")
@click.option("--duration", type=float,
              help="Seconds per timed measurement (default 2; quick 0.25).")
@click.option("--idle", type=int, help="Idle connections to hold (default 2000; quick 200).")
@click.option("--idle-rr", type=int,
              help="Request/response on this many of the idle connections, at most "
                   "(default 1000, and at most a tenth of them).")
@click.option("--idle-per-loadgen", type=int,
              help="Idle connections per load generator process (default 16000: the "
                   "fd limit); more take more processes, each from its own address.")
@click.option("--kernel-procs", type=int,
              help="App processes of the kernel variants on the one port (SO_REUSEPORT; "
                   "default 0: as many as the fd limit needs for --idle).")
@click.option("--idle-window", type=int,
              help="Connects in flight per load generator while opening idle "
                   "connections (default 32; 1: one after the other).")
@click.option("--json", "json_path", metavar="FILE", help="Write the results as JSON.")
@click.option("--png", metavar="FILE", help="Write a bar chart of the ratios.")
@click.option("--mode", type=click.Choice(["native", "generic", "auto"]), default="native",
              show_default=True, help="XDP mode of kernel+xdp and fpd.")
@click.option("--port", type=int, default=5001, show_default=True)
@click.option("--cpus", default="0,0,1", show_default=True, metavar="APP,LOADGEN,DAEMON",
              help="CPUs to pin the app, the load generator and the fpd daemon to.")
@click.option("--no-pin", is_flag=True, help="Do not pin anything.")
@click.option("--variants", metavar="LIST",
              help="Comma-separated subset of kernel,kernel+xdp,fpd (default: all).")
@click.option("--workloads", metavar="LIST",
              help="Comma-separated subset of the workloads (default: all; a wrong name "
                   "lists them).")
@click.option("--peer-offloads", type=click.Choice(["on", "off"]), default="on",
              show_default=True,
              help="TSO/GSO and tx checksum offload on the peer's veth (veth's defaults).")
@click.option("--keep-logs", is_flag=True,
              help="Keep the app/daemon/load generator logs (path printed).")
@click.option("--mtu", type=int, default=1500, show_default=True,
              help="MTU of the test beds (kernel and fpd alike); above 3498 fpd uses "
                   "AF_XDP multi-buffer (jumbo frames).")
@click.option("--frags", is_flag=True,
              help="Multi-buffer at any MTU: the xdp.frags program for kernel+xdp and "
                   "fpd, fpd's sockets with XDP_USE_SG (with --mode generic the peer's "
                   "64 KB GSO packets arrive whole).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.pass_context
def bench(ctx, json_path, **options):
    """fpd against the kernel's TCP, side by side in one run (root; makes its own test
    beds). Results and method: docs/PERFORMANCE.md. `fpd bench asyncio`: asyncio loops
    (default, uvloop, fpd's), see docs/LOOP.md."""
    if ctx.invoked_subcommand is not None:
        return
    from fpd import bench as _bench
    try:
        cfg = _bench.make_config(json=json_path, **options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    sys.exit(_bench.main(cfg))


from fpd import bench_loop as _bench_loop  # noqa: E402  (click only; the rest is lazy)

bench.add_command(_bench_loop.command)


if __name__ == "__main__":
    main()
