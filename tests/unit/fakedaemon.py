"""A fake fpd daemon for the client library's unit tests (no root, no network).

It speaks the protocol of docs/DAEMON.md over a unix SOCK_SEQPACKET socket in a tmp dir
(hello, attach with [memfd, app bell, daemon bell], listen/unlisten/connect/setopt/info),
creates real shared-memory regions (fpd.shm.Region.create) and moves bytes between slots
to emulate peers, all in one background thread:

- ``connect`` to ``ADDR`` and a port some client listens on: both ends are slots (of the
  same or different clients/workers) joined back to back; the new connection is
  announced on the listener's workers in turn (EV_ACCEPTED), so a test process can
  talk to itself through the library;
- ``connect`` to a port in ``echo_ports``: the daemon echoes every byte (and the FIN);
- ``connect`` to ``BLACKHOLE``: never completes; anything else: ECONNREFUSED.

Wake-ups follow the contract: EV_READABLE / EV_WRITABLE only for armed ring ends, the app
bell only when the event ring is armed, and the fake sleeps on its daemon bells with its
command rings armed. ``kill()`` drops everything at once (like SIGKILL); ``stop()``
posts EV_SHUTDOWN first. ``call(fn)`` runs ``fn(fake)`` in the daemon thread.
"""

from __future__ import annotations

import errno
import os
import queue
import select
import socket
import threading
import time

from fpd import shm
from fpd.proto import recv as recv_msg, send as send_msg
from fpd.shm import Layout, Region

ADDR = "10.77.0.1"
BLACKHOLE = "10.77.0.99"
LAYOUT = Layout(nslots=64, rx_size=65536, tx_size=65536, ev_entries=1024, cmd_entries=1024)


class FClient:
    """One attached control connection (one client of one worker)."""

    def __init__(self, fake, sock, pid, q, layout):
        self.fake = fake
        self.sock = sock
        self.pid = pid
        self.q = q
        self.region = Region.create(layout)
        self.app_bell = shm.Doorbell()
        self.daemon_bell = shm.Doorbell()
        self.free = list(range(layout.nslots))
        self.gens = [0] * layout.nslots
        self.conns: dict = {}             # slot -> FConn
        self.listeners: dict = {}         # slot -> port
        self.backlog: list = []           # events that did not fit
        self.dead = False

    def post(self, slot, kind, arg=0, gen=0):
        ev = self.region.events
        if self.backlog or not ev.put(slot, kind, arg, gen):
            self.backlog.append((slot, kind, arg, gen))
        if ev.wake_needed():
            self.app_bell.ring()

    def flush(self):
        ev = self.region.events
        while self.backlog and ev.put(*self.backlog[0]):
            self.backlog.pop(0)
        if ev.wake_needed():
            self.app_bell.ring()

    def alloc(self):
        if not self.free:
            return None
        slot = self.free.pop(0)
        self.gens[slot] = (self.gens[slot] + 1) & 0xFFFFFFFF
        return slot


class FConn:
    def __init__(self, cl: FClient, slot: int, laddr, raddr):
        self.cl = cl
        self.slot = slot
        self.gen = cl.gens[slot]
        self.s = cl.region.open_slot(slot, self.gen, start=(slot * 7919) << 40)
        self.s.ctl.set_addrs(socket.inet_aton(laddr[0]), laddr[1],
                             socket.inet_aton(raddr[0]), raddr[1])
        self.peer = None          # FConn, "echo", or None (not connected yet / gone)
        self.state = shm.S_CONNECTING
        self.closing = False      # OP_CLOSE: drain TX, then FIN and release
        self.fin_sent = False     # our TX EOF went to the peer
        self.peer_gone = False    # the peer closed completely: our data gets RST
        self.connect_at = None
        self.opts = {}
        cl.conns[slot] = self

    @property
    def g16(self):
        return self.gen & 0xFFFF

    def post(self, kind, arg=0):
        self.cl.post(self.slot, kind, arg, self.g16)

    def established(self):
        self.state = shm.S_ESTABLISHED
        self.s.ctl.set_state(shm.S_ESTABLISHED)

    def reset(self, err=errno.ECONNRESET):
        if self.state == shm.S_CLOSED:
            return
        self.state = shm.S_CLOSED
        # as the real worker: the RX ring ends too; the state word says why
        self.s.ctl.set_state(shm.S_CLOSED, err)
        if not self.s.rx.is_shut:
            self.s.rx.shutdown()
            if self.s.rx.wake_needed():
                self.post(shm.EV_READABLE)
        self.post(shm.EV_CLOSED, err)

    def release(self):
        """Closed by the app: EV_CLOSED(0), slot reusable."""
        cl = self.cl
        if cl.conns.get(self.slot) is self:
            del cl.conns[self.slot]
            if self.state != shm.S_CLOSED:
                self.state = shm.S_CLOSED
                self.s.ctl.set_state(shm.S_CLOSED, 0)
            self.post(shm.EV_CLOSED, 0)
            cl.free.append(self.slot)


class FakeDaemon:
    def __init__(self, tmpdir, *, workers=2, layout=LAYOUT, echo_ports=(7,),
                 ports=(7, 8080, 8081, 8082, 8083, 8084, 8085, 9000), connect_delay=0.0):
        self.path = os.path.join(str(tmpdir), "fpd.sock")
        self.workers = workers
        self.layout = layout
        self.echo_ports = set(echo_ports)
        self.ports = set(ports) | self.echo_ports
        self.connect_delay = connect_delay
        self.clients: list[FClient] = []
        self.ports_owner: dict = {}        # port -> pid
        self.next_lport = 60000
        self.rr = 0
        self.requests: list = []           # every control request seen (tests inspect)
        self.hooks = queue.Queue()
        self._stop = False
        self._wake = shm.Doorbell()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.srv.bind(self.path)
        self.srv.listen(64)
        self.srv.setblocking(False)
        self.thread = threading.Thread(target=self._run, name="fake-fpd", daemon=True)
        self.error = None
        self.thread.start()

    # -- test API ------------------------------------------------------------------------
    def call(self, fn, timeout=5.0):
        box = []
        ev = threading.Event()

        def run(fake):
            try:
                box.append((True, fn(fake)))
            except BaseException as e:  # handed back to the caller
                box.append((False, e))
            ev.set()
        self.hooks.put(run)
        self._wake.ring()
        if not ev.wait(timeout):
            raise TimeoutError("fake daemon did not run the call")
        ok, v = box[0]
        if not ok:
            raise v
        return v

    def conns(self):
        return self.call(lambda f: [c for cl in f.clients for c in cl.conns.values()])

    def kill(self):
        """Like SIGKILL: every connection and region goes at once, no event."""
        self._stop = True
        self._wake.ring()
        self.thread.join(5)
        self._close_all()

    def stop(self):
        """Like fpd stop: EV_SHUTDOWN to every client, then gone."""
        def shut(f):
            for cl in f.clients:
                for c in list(cl.conns.values()):
                    c.reset()
                cl.post(shm.NO_SLOT, shm.EV_SHUTDOWN)
        if self.thread.is_alive():
            self.call(shut)
        self.kill()

    def _close_all(self):
        for cl in self.clients:
            cl.dead = True
            for x in (cl.sock, cl.app_bell, cl.daemon_bell):
                try:
                    x.close()
                except OSError:
                    pass
            cl.conns.clear()
            try:
                cl.region.close()
            except BufferError:
                pass
        self.clients = []
        try:
            self.srv.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._wake.close()

    # -- the loop ------------------------------------------------------------------------
    def _run(self):
        try:
            while not self._stop:
                self._once()
        except BaseException as e:  # pragma: no cover - shows up in the tests
            self.error = e
            import traceback
            traceback.print_exc()

    def _once(self):
        while True:
            try:
                fn = self.hooks.get_nowait()
            except queue.Empty:
                break
            fn(self)
        busy = self._accept_new()
        for cl in list(self.clients):
            if cl.dead:
                continue
            busy |= self._commands(cl)
        busy |= self._move()
        for cl in self.clients:
            if cl.backlog:
                cl.flush()
                busy = True
        if busy:
            timeout = 0
        else:
            timeout = self._sleep_timeout()
        p = select.poll()
        p.register(self.srv, select.POLLIN)
        p.register(self._wake.fd, select.POLLIN)
        armed = []
        for cl in self.clients:
            if cl.dead:
                continue
            p.register(cl.sock, select.POLLIN)
            p.register(cl.daemon_bell.fd, select.POLLIN)
            if timeout and not cl.region.commands.arm(1):
                timeout = 0
            armed.append(cl.region.commands)
            for c in cl.conns.values():
                if isinstance(c.peer, FConn) and c.peer.state != shm.S_CLOSED and \
                        c.s.tx.readable():
                    rx = c.peer.s.rx
                    if timeout and not rx.arm(1):
                        timeout = 0
                    armed.append(rx)
                elif c.peer == "echo" and c.s.tx.readable():
                    if timeout and not c.s.rx.arm(1):
                        timeout = 0
                    armed.append(c.s.rx)
        res = p.poll(timeout)
        for end in armed:
            end.disarm()
        self._wake.drain()
        for fd, ev in res:
            for cl in self.clients:
                if not cl.dead and fd == cl.sock.fileno():
                    self._ctl(cl, ev)
                elif not cl.dead and fd == cl.daemon_bell.fd:
                    cl.daemon_bell.drain()

    def _sleep_timeout(self):
        t = 200
        now = time.monotonic()
        for cl in self.clients:
            for c in cl.conns.values():
                if c.connect_at is not None:
                    t = min(t, max(0, int((c.connect_at - now) * 1000) + 1))
        return t

    # -- supervisor ----------------------------------------------------------------------
    def _accept_new(self):
        busy = False
        while True:
            try:
                s, _ = self.srv.accept()
            except (BlockingIOError, OSError):
                return busy
            busy = True
            s.settimeout(2)
            try:
                msg, _ = recv_msg(s)
            except (OSError, ValueError):
                s.close()
                continue
            if msg is None:
                s.close()
                continue
            self.requests.append(msg)
            op = msg.get("op")
            if op == "hello":
                send_msg(s, {"ok": True, "version": 1, "workers": self.workers,
                             "pid": os.getpid(), "ifname": "fake0", "addr": ADDR,
                             "ports": sorted(self.ports), "local_ports": [60000, 60255]})
                s.close()
            elif op == "attach":
                q = msg.get("queue")
                if not isinstance(q, int) or not 0 <= q < self.workers:
                    send_msg(s, {"ok": False, "errno": errno.EINVAL, "error": "bad queue"})
                    s.close()
                    continue
                cl = FClient(self, s, msg.get("pid"), q, self.layout)
                lay = cl.region.layout
                send_msg(s, {"ok": True, "queue": q, "mss": 1460,
                             "generation": cl.region.generation, "slots": lay.nslots,
                             "rx_size": lay.rx_size, "tx_size": lay.tx_size,
                             "local_addr": ADDR},
                         fds=[cl.region.fd, cl.app_bell.fd, cl.daemon_bell.fd])
                s.setblocking(False)
                self.clients.append(cl)
            else:
                send_msg(s, {"ok": False, "errno": errno.EINVAL, "error": f"op {op!r}"})
                s.close()

    def _drop(self, cl: FClient):
        """A client whose control connection closed: reset its connections."""
        cl.dead = True
        for c in list(cl.conns.values()):
            if isinstance(c.peer, FConn):
                c.peer.peer_gone = True
                c.peer.reset()
        cl.conns.clear()
        for port, pid in list(self.ports_owner.items()):
            if pid == cl.pid and not any(o is not cl and not o.dead and o.pid == cl.pid
                                         for o in self.clients):
                del self.ports_owner[port]
        try:
            cl.sock.close()
        except OSError:
            pass

    # -- control requests ----------------------------------------------------------------
    def _ctl(self, cl: FClient, ev):
        try:
            msg, fds = recv_msg(cl.sock, maxfds=1)
        except BlockingIOError:
            return
        except (OSError, ValueError):
            msg, fds = None, []
        for fd in fds:              # a slot bell: this fake keeps to event wake-ups
            os.close(fd)            # (it never sets D_BELL, as the protocol allows)
        if msg is None:
            self._drop(cl)
            return
        self.requests.append(msg)
        try:
            reply = self._handle(cl, msg)
        except OSError as e:
            reply = {"ok": False, "errno": e.errno, "error": e.strerror}
        if msg.get("noreply"):
            return
        try:
            send_msg(cl.sock, reply)
        except OSError:
            self._drop(cl)

    def _handle(self, cl: FClient, msg):
        op = msg.get("op")
        if op == "listen":
            port = msg["port"]
            if port not in self.ports:
                raise OSError(errno.EACCES, f"port {port} is not steered by fpd")
            owner = self.ports_owner.get(port)
            if owner is not None and owner != cl.pid:
                raise OSError(errno.EADDRINUSE, "Address already in use")
            if cl.q == 0 and port in cl.listeners.values():
                raise OSError(errno.EADDRINUSE, "Address already in use")
            self.ports_owner[port] = cl.pid
            slot = cl.alloc()
            if slot is None:
                raise OSError(errno.EMFILE, "no free slot")
            cl.region.open_slot(slot, cl.gens[slot]).ctl.set_state(shm.S_LISTENING)
            cl.listeners[slot] = port
            return {"ok": True, "slot": slot, "gen": cl.gens[slot]}
        if op == "unlisten":
            slot = msg["slot"]
            port = cl.listeners.pop(slot, None)
            if port is None:
                raise OSError(errno.EBADF, "not a listener")
            cl.free.append(slot)
            if cl.q == 0:
                self.ports_owner.pop(port, None)
            return {"ok": True}
        if op == "connect":
            return self._connect(cl, msg)
        if op == "setopt":
            c = cl.conns.get(msg["slot"])
            if c is None:
                raise OSError(errno.EBADF, "no such connection")
            if msg["name"] not in ("nodelay", "keepalive", "rcvbuf", "sndbuf"):
                raise OSError(errno.ENOPROTOOPT, "unknown option")
            c.opts[msg["name"]] = msg["value"]
            return {"ok": True}
        if op == "bell":
            return {"ok": True}
        if op == "info":
            c = cl.conns.get(msg["slot"])
            if c is None:
                raise OSError(errno.EBADF, "no such connection")
            return {"ok": True, "info": {"state": c.state, "opts": c.opts}}
        raise OSError(errno.EINVAL, f"unknown op {op!r}")

    def _connect(self, cl: FClient, msg):
        addr, port = msg["addr"], msg["port"]
        lport = msg.get("bind_port") or self.next_lport
        self.next_lport += 1
        slot = cl.alloc()
        if slot is None:
            raise OSError(errno.EAGAIN, "no free slot")
        c = FConn(cl, slot, (ADDR, lport), (addr, port))
        c.opts.update(msg.get("opts") or {})
        c.connect_at = time.monotonic() + self.connect_delay
        c.target = (addr, port)
        return {"ok": True, "slot": slot, "gen": c.gen, "local": [ADDR, lport]}

    def _complete_connect(self, c: FConn):
        c.connect_at = None
        addr, port = c.target
        if addr == BLACKHOLE:
            return
        if addr == ADDR and port in self.echo_ports:
            c.peer = "echo"
            c.established()
            c.post(shm.EV_CONNECTED)
            return
        # a listener of the port, on any worker (round robin)
        lst = [(cl, slot) for cl in self.clients if not cl.dead
               for slot, p in cl.listeners.items() if p == port]
        if addr != ADDR or not lst:
            c.state = shm.S_CLOSED
            c.s.ctl.set_state(shm.S_CLOSED, errno.ECONNREFUSED)
            c.post(shm.EV_CLOSED, errno.ECONNREFUSED)
            return
        self.rr += 1
        lcl, lslot = lst[self.rr % len(lst)]
        slot = lcl.alloc()
        if slot is None:
            c.reset(errno.ECONNREFUSED)
            return
        laddr = c.s.ctl.addrs()
        s = FConn(lcl, slot, (ADDR, port), (ADDR, laddr[1]))
        s.peer, c.peer = c, s
        s.established()
        c.established()
        lcl.post(slot, shm.EV_ACCEPTED, lslot, s.g16)
        c.post(shm.EV_CONNECTED)

    # -- commands ------------------------------------------------------------------------
    def _commands(self, cl: FClient):
        try:
            recs = cl.region.commands.get_many()
        except shm.ShmCorrupt:
            self._drop(cl)
            return True
        for slot, op, gen, arg in recs:
            c = cl.conns.get(slot)
            if c is None or c.g16 != gen:
                continue
            if op == shm.OP_KICK:
                pass
            elif op == shm.OP_SHUTDOWN:
                pass                       # TX EOF flag travels with the ring
            elif op == shm.OP_CLOSE:
                c.closing = True
                if c.state == shm.S_CLOSED or c.peer is None:
                    c.release()
            elif op == shm.OP_ABORT:
                if isinstance(c.peer, FConn):
                    c.peer.peer_gone = True
                    c.peer.reset()
                c.release()
        return bool(recs)

    # -- the "network" -------------------------------------------------------------------
    def _move(self):
        busy = False
        now = time.monotonic()
        for cl in self.clients:
            if cl.dead:
                continue
            for c in list(cl.conns.values()):
                if c.connect_at is not None:
                    if now >= c.connect_at:
                        self._complete_connect(c)
                        busy = True
                    continue
                try:
                    busy |= self._move_one(c)
                except shm.ShmCorrupt as e:
                    c.corrupt = str(e)
                    if isinstance(c.peer, FConn):
                        c.peer.peer_gone = True
                        c.peer.reset()
                    c.reset(errno.EPROTO)
        return busy

    def _move_one(self, c: FConn):
        if c.state == shm.S_CLOSED or c.peer is None:
            return False
        tx = c.s.tx
        dst = c if c.peer == "echo" else c.peer
        moved = False
        if c.peer_gone:
            if tx.readable():
                tx.skip()
                c.reset()
                return True
            return False
        if dst.state == shm.S_CLOSED and dst is not c:
            if tx.readable():
                tx.skip()
                moved = True
        else:
            a, b = tx.peek_view()
            n = 0
            if len(a):
                rx = dst.s.rx
                n = rx.write(a)
                if n == len(a) and len(b):
                    n += rx.write(b)
                del a, b
                if n:
                    tx.release(n)
                    moved = True
                    if rx.wake_needed():
                        dst.post(shm.EV_READABLE)
            else:
                del a, b
            if moved and tx.wake_needed():
                c.post(shm.EV_WRITABLE)
        if not c.fin_sent and tx.at_eof():
            c.fin_sent = True
            if dst.state != shm.S_CLOSED:
                dst.s.rx.shutdown()
                if dst.s.rx.wake_needed():
                    dst.post(shm.EV_READABLE)
            moved = True
        if c.closing and not tx.readable():
            # everything queued went out: FIN, then the slot is the daemon's again
            if not c.fin_sent:
                c.fin_sent = True
                if dst is not c and dst.state != shm.S_CLOSED:
                    dst.s.rx.shutdown()
                    if dst.s.rx.wake_needed():
                        dst.post(shm.EV_READABLE)
            if isinstance(c.peer, FConn):
                c.peer.peer_gone = True
            c.release()
            moved = True
        return moved
