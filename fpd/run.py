"""``fpd run``: a program runs inside fpd's workers, unmodified.

    fpd run -i eth0 -p 8080 [fpd start options] [--] server.py [ARGS...]
    fpd run -i eth0 -p 8080 -m aiohttp.web -H 0.0.0.0 -P 8080 app:init

The supervisor starts as ``fpd start --foreground`` does (XDP attached, ports steered,
local ports reserved) and forks one worker per active queue; each worker, once its XSK
is in the XSK map, runs the program (pre-fork, as gunicorn or ``SO_REUSEPORT`` servers
do) with:

- fpd's event loop policy installed (:mod:`fpd.loop`): ``asyncio.run(main())`` gets an
  :class:`fpd.loop.FpdEventLoop` that drives this worker's engine itself, run to
  completion (a frame, the engine, the protocol callbacks and the answer in one pass);
- the ``socket`` module swapped for :mod:`fpd.inproc` for every module imported from
  then on, so a blocking socket program (``socketserver``, ``http.server``, ...) gets fpd
  sockets served in-process: its listeners and connections are this worker's engine
  objects, and a thread that waits drives the worker's engine itself (an engine thread
  does while no program thread waits and no fpd loop runs). What fpd.inproc does not
  serve goes to :mod:`fpd.client` (shared memory, the same worker); ``FPD_RUN_SHM=1``
  sends everything there.

When the program exits, fpd stops (XDP detached, ports given back, files removed) and
the program's exit status becomes ``fpd run``'s. SIGINT/SIGTERM (Ctrl-C) stop both: the
program gets KeyboardInterrupt (asyncio.run cancels its main task), then fpd cleans up.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import socket
import sys
import threading
import traceback

log = logging.getLogger("fpd.run")

GO_TIMEOUT = 30.0


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def app_worker_main(chan: socket.socket, cfg, app: dict) -> int:
    """The body of one worker process under ``fpd run`` (forked by the supervisor).

    ``cfg`` is the worker's :class:`fpd.control.WorkerConfig`; ``app`` says what to run:
    ``{"argv": [...], "module": bool, "socket": path}``. Returns the exit status."""
    from . import control, proto
    from . import loop as fpd_loop

    try:
        w, route, bind_mode = control.xdp_host(cfg)
    except Exception as e:
        try:
            proto.send(chan, proto.Error(queue=cfg.queue, error=f"worker q{cfg.queue}: {e}"))
        except OSError:
            pass
        return 1
    svc = control.Service(w, cfg, route=route)
    if cfg.nqueues > 1 and cfg.fwd:
        rx = socket.socket(fileno=cfg.fwd[cfg.queue][0])
        tx = {k: socket.socket(fileno=t) for k, (_r, t) in enumerate(cfg.fwd)}
        w.enable_forwarding(cfg.nqueues, rx, tx)
    state = {"stop": False}
    main_ident = threading.main_thread().ident

    def stop_program():
        if not state["stop"]:
            state["stop"] = True
            try:
                signal.pthread_kill(main_ident, signal.SIGINT)
            except (OSError, ValueError):
                pass

    on_chan = control.channel_handler(chan, cfg, w, svc, stop_program)

    code = 1
    eng = None
    try:
        proto.send(chan, proto.Ready(queue=cfg.queue, mss=w.mss, bind_mode=bind_mode,
                                     pid=os.getpid()), [w.fileno()])
        # the program starts once the supervisor has our XSK in its map and serves
        chan.settimeout(GO_TIMEOUT)
        d, fds = proto.recv(chan)
        try:
            if d is None:
                raise proto.ProtocolError("the supervisor closed the channel")
            proto.parse(d, proto.RUN_OPS)
        except proto.ProtocolError as e:
            log.error("worker q%d: no go from the supervisor: %s", cfg.queue, e)
            return 1
        chan.setblocking(False)
        w.add_reader(chan.fileno(), on_chan)
        eng = fpd_loop.EngineThread(w)
        fpd_loop.set_context(fpd_loop.Context(
            w, ports=cfg.ports, local_ports=cfg.local_ports, addr=cfg.addr, engine=eng))
        eng.resume()
        out = os.environ.get("FPD_RUN_PROFILE")      # developers / fpd bench asyncio
        if out:
            code = _profiled(app, state, f"{out}.q{cfg.queue}")
        else:
            code = _run_program(app, state)
    except Exception:
        log.exception("worker q%d crashed", cfg.queue)
        code = 1
    finally:
        try:
            if eng is not None:
                eng.pause()
        except Exception:
            log.exception("worker q%d: engine thread", cfg.queue)
        fpd_loop.set_context(None)
        try:
            svc.shutdown()
        except Exception:
            log.exception("worker q%d: shutdown", cfg.queue)
        w.close()
        try:
            chan.setblocking(True)
            proto.send(chan, proto.Stopped(queue=cfg.queue))
        except OSError:
            pass
    return code


def _profiled(app: dict, state: dict, path: str) -> int:
    """Run the program under cProfile, its threads too (one profiler each, merged into
    one pstats file at ``path``)."""
    import cProfile
    import pstats
    profs = []
    run = threading.Thread.run

    def profiled_run(self):
        p = cProfile.Profile()
        profs.append(p)
        p.runcall(run, self)

    threading.Thread.run = profiled_run
    main = cProfile.Profile()
    try:
        return main.runcall(_run_program, app, state)
    finally:
        threading.Thread.run = run
        main.create_stats()
        st = pstats.Stats(main)
        for p in profs:
            try:
                p.snapshot_stats()          # threads still running: their data so far
                st.add(p)
            except Exception:
                pass
        st.dump_stats(path)


def _run_program(app: dict, state: dict) -> int:
    """Run the program in this process as ``python [-m] ARGV`` would; its exit status."""
    from . import client as fpd_client
    from . import loop as fpd_loop

    argv = list(app["argv"])
    fpd_loop.install()
    if app.get("socket"):
        fpd_client.set_default_socket(app["socket"])
        os.environ["FPD_SOCKET"] = app["socket"]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    import faulthandler                 # developers: kill -USR1 <worker> dumps the stacks
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.setswitchinterval(0.0005)       # the engine thread and the program share the GIL
    ctx = fpd_loop.get_context()
    if ctx is not None and ctx.engine is not None and not os.environ.get("FPD_RUN_NO_DRIVE"):
        fpd_client._poll_hook = ctx.engine.drive     # blocked threads drive the engine
    sockmod = fpd_client
    if ctx is not None and ctx.engine is not None and not os.environ.get("FPD_RUN_SHM"):
        from . import inproc as fpd_inproc           # blocking sockets on the engine
        fpd_inproc.enable(ctx)                       # objects of this very process
        sockmod = fpd_inproc
    saved_socket = sys.modules.get("socket")
    sys.modules["socket"] = sockmod
    sys.argv = argv[:]
    try:
        try:
            if app.get("module"):
                sys.path.insert(0, os.getcwd())
                runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            else:
                sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
                runpy.run_path(argv[0], run_name="__main__")
            return 0
        except SystemExit as e:
            return _exit_code(e.code)
        except KeyboardInterrupt:
            return 0 if state["stop"] else 130
        except BaseException:
            traceback.print_exc()
            return 1
    finally:
        fpd_client._poll_hook = None
        if sockmod is not fpd_client:
            fpd_inproc.disable()
        if saved_socket is not None:
            sys.modules["socket"] = saved_socket
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass


def _sigterm(signum, frame):
    raise KeyboardInterrupt
