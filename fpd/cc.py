"""Congestion control for the fpd TCP engine (sans-IO, no clock: ``now`` is passed in).

The interface is deliberately tiny.  ``fpd.tcp.Connection`` owns one controller and
reads ``cwnd`` / ``ssthresh`` (bytes) from it; it calls:

    on_ack(acked, rtt, now)          new data cumulatively acknowledged outside recovery
                                     (``rtt`` = smoothed RTT in seconds or None); only
                                     called while the flow is cwnd-limited (RFC 7661 spirit)
    on_recovery_enter(now, flight)   fast retransmit: multiplicative decrease
    on_recovery_exit(now)            recovery point acknowledged
    on_rto(now, flight, first)       retransmission timeout (``first`` False for back-offs
                                     of the same loss episode: ssthresh is not cut again)
    on_idle(now, restart_cwnd)       sending restarts after an idle period (RFC 5681 §4.1)
    undo(prior_cwnd, prior_ssthresh) the last reduction was spurious (every retransmission
                                     DSACKed): back to at least what it was before

``on_loss`` is an alias of ``on_recovery_enter``.

Two algorithms: ``NewReno`` (RFC 5681 + RFC 3465 byte counting; the RFC 6582 recovery
logic itself lives in tcp.py because it needs the scoreboard) and ``Cubic`` (RFC 9438,
with the Reno-friendly region and fast convergence).
"""

INFINITE_SSTHRESH = 1 << 30


class CongestionControl:
    """Base class: fixed window, only the bookkeeping shared by both algorithms."""

    __slots__ = ("mss", "cwnd", "ssthresh")
    name = "base"

    def __init__(self, mss, init_cwnd):
        self.mss = mss
        self.cwnd = init_cwnd
        self.ssthresh = INFINITE_SSTHRESH

    def _reduce_ssthresh(self, flight, beta_num, beta_den):
        s = flight * beta_num // beta_den
        two = 2 * self.mss
        self.ssthresh = s if s > two else two

    def on_ack(self, acked, rtt, now):
        pass

    def set_cwnd(self, b):
        """cwnd set from outside the algorithm (PRR in fast recovery, tcp.py)."""
        self.cwnd = b

    def on_recovery_enter(self, now, flight):
        self._reduce_ssthresh(flight, 1, 2)
        self.cwnd = self.ssthresh

    on_loss = on_recovery_enter

    def on_recovery_exit(self, now):
        self.cwnd = self.ssthresh

    def on_rto(self, now, flight, first=True):
        if first:
            self._reduce_ssthresh(flight, 1, 2)
        self.cwnd = self.mss

    def on_idle(self, now, restart_cwnd):
        if restart_cwnd < self.cwnd:
            self.cwnd = restart_cwnd

    def undo(self, prior_cwnd, prior_ssthresh):
        """As Linux's tcp_undo_cwnd_reduction with tcp_reno_undo_cwnd."""
        if prior_cwnd > self.cwnd:
            self.cwnd = prior_cwnd
        if prior_ssthresh > self.ssthresh:
            self.ssthresh = prior_ssthresh

    def _slow_start(self, acked):
        """Slow start credits every byte acknowledged, up to ssthresh, as Linux's
        tcp_slow_start (RFC 3465's L = 2 SMSS per ACK starves cwnd under stretch ACKs:
        GRO receivers ACK 16-44 segments at once); returns what is left for congestion
        avoidance."""
        room = self.ssthresh - self.cwnd
        if acked <= room:
            self.cwnd += acked
            return 0
        self.cwnd = self.ssthresh
        return acked - room

    def __repr__(self):
        return f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh}>"


class NewReno(CongestionControl):
    """RFC 5681 slow start / congestion avoidance with RFC 3465 byte counting (slow start
    credits all bytes acked, as Linux: no L limit)."""

    __slots__ = ("_acc",)
    name = "newreno"

    def __init__(self, mss, init_cwnd):
        super().__init__(mss, init_cwnd)
        self._acc = 0

    def on_ack(self, acked, rtt, now):
        mss = self.mss
        if self.cwnd < self.ssthresh:
            acked = self._slow_start(acked)
            if not acked:
                return
        self._acc += acked
        if self._acc >= self.cwnd:
            self._acc -= self.cwnd
            self.cwnd += mss

    def on_recovery_enter(self, now, flight):
        self._reduce_ssthresh(flight, 1, 2)
        self.cwnd = self.ssthresh
        self._acc = 0

    on_loss = on_recovery_enter

    def undo(self, prior_cwnd, prior_ssthresh):
        CongestionControl.undo(self, prior_cwnd, prior_ssthresh)
        self._acc = 0

    def on_rto(self, now, flight, first=True):
        if first:
            self._reduce_ssthresh(flight, 1, 2)
        self.cwnd = self.mss
        self._acc = 0


class Cubic(CongestionControl):
    """CUBIC, RFC 9438.  Window arithmetic is done in segments (floats) as in the RFC;
    ``cwnd`` is exposed in bytes.  No HyStart (RFC 9438 leaves it optional)."""

    __slots__ = ("_w_max", "_k", "_t_epoch", "_cwnd_epoch", "_w_est", "_cwnd_f",
                 "_after_rto", "fast_convergence")
    name = "cubic"
    C = 0.4
    BETA = 0.7
    ALPHA = 3.0 * (1.0 - 0.7) / (1.0 + 0.7)

    def __init__(self, mss, init_cwnd):
        super().__init__(mss, init_cwnd)
        self._w_max = 0.0
        self._k = 0.0
        self._t_epoch = None
        self._cwnd_epoch = 0.0
        self._w_est = 0.0
        self._cwnd_f = float(init_cwnd)
        self._after_rto = False
        self.fast_convergence = True

    def _set_cwnd(self, b):
        self._cwnd_f = b
        self.cwnd = int(b)

    def set_cwnd(self, b):
        self._cwnd_f = float(b)
        self.cwnd = int(b)

    def on_ack(self, acked, rtt, now):
        mss = self.mss
        if self.cwnd < self.ssthresh:
            room = self.ssthresh - self._cwnd_f
            if acked <= room:
                self._set_cwnd(self._cwnd_f + acked)
                return
            self._set_cwnd(float(self.ssthresh))
            acked -= room
        cw = self._cwnd_f / mss
        if self._t_epoch is None:
            # start of a congestion-avoidance epoch (RFC 9438 §4.2)
            self._t_epoch = now
            self._cwnd_epoch = cw
            self._w_est = cw
            if self._after_rto or self._w_max < cw:
                self._w_max = cw
                self._k = 0.0
            else:
                self._k = ((self._w_max - cw) / self.C) ** (1.0 / 3.0)
            self._after_rto = False
        t = now - self._t_epoch
        r = rtt if rtt else 0.0
        segs = acked / mss
        # Reno-friendly estimate (RFC 9438 §4.3)
        alpha = 1.0 if self._w_est >= self._w_max else self.ALPHA
        self._w_est += alpha * segs / cw
        dt = t - self._k
        w_now = self.C * dt * dt * dt + self._w_max
        if w_now < self._w_est:
            new = self._w_est if self._w_est > cw else cw
        else:
            dt = t + r - self._k
            target = self.C * dt * dt * dt + self._w_max
            if target < cw:
                target = cw
            elif target > 1.5 * cw:
                target = 1.5 * cw
            new = cw + (target - cw) / cw * segs
        self._set_cwnd(new * mss)

    def _reduce(self, flight):
        mss = self.mss
        cw = self._cwnd_f / mss
        if self.fast_convergence and cw < self._w_max:
            self._w_max = cw * (1.0 + self.BETA) / 2.0
        else:
            self._w_max = cw
        s = int(flight * self.BETA)
        self.ssthresh = s if s > 2 * mss else 2 * mss
        self._t_epoch = None

    def on_recovery_enter(self, now, flight):
        self._reduce(flight)
        self._set_cwnd(float(self.ssthresh))

    on_loss = on_recovery_enter

    def on_recovery_exit(self, now):
        self._set_cwnd(float(self.ssthresh))

    def on_rto(self, now, flight, first=True):
        if first:
            self._reduce(flight)
        self._after_rto = True
        self._t_epoch = None
        self._set_cwnd(float(self.mss))

    def on_idle(self, now, restart_cwnd):
        self._t_epoch = None
        if restart_cwnd < self.cwnd:
            self._set_cwnd(float(restart_cwnd))

    def undo(self, prior_cwnd, prior_ssthresh):
        if prior_cwnd > self._cwnd_f:
            self._set_cwnd(float(prior_cwnd))
        if prior_ssthresh > self.ssthresh:
            self.ssthresh = prior_ssthresh
        self._after_rto = False
        self._t_epoch = None


ALGORITHMS = {"newreno": NewReno, "reno": NewReno, "cubic": Cubic}


def make(name, mss, init_cwnd):
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r} (choose from {sorted(ALGORITHMS)})")
    return cls(mss, init_cwnd)
