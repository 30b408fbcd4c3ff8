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
                                     DSACKed, or F-RTO): back to at least what it was before
    set_cwnd(b)                      cwnd from outside (PRR during fast recovery)
    hystart_ack(rtt, una, nxt)       HyStart++ (RFC 9406) on each ACK while ``hs_state``
                                     is set (the initial slow start); returns an event

``on_loss`` is an alias of ``on_recovery_enter``.

Two algorithms: ``NewReno`` (RFC 5681 + RFC 3465 byte counting; the RFC 6582 recovery
logic itself lives in tcp.py because it needs the scoreboard) and ``Cubic`` (RFC 9438,
with the Reno-friendly region and fast convergence).
"""

INFINITE_SSTHRESH = 1 << 30

# HyStart++ (RFC 9406 §4.3): states and constants (times in seconds)
HS_OFF = 0            # not used (off, or after the initial slow start ended)
HS_SS = 1             # initial slow start, watching the RTT of each round
HS_CSS = 2            # Conservative Slow Start: growth / CSS_GROWTH_DIVISOR
HS_EV_CSS = 1         # hystart_ack's events (bits): entered CSS, back to slow start (the
HS_EV_RESUME = 2      # exit was spurious), CSS_ROUNDS rounds of CSS done: congestion
HS_EV_EXIT = 4        # avoidance
MIN_RTT_THRESH = 0.004
MAX_RTT_THRESH = 0.016
MIN_RTT_DIVISOR = 8
N_RTT_SAMPLE = 8
CSS_GROWTH_DIVISOR = 4
CSS_ROUNDS = 5
_INF = float("inf")

# Pacing (tcp.py, StackConfig.pacing): rate = ratio x max(cwnd, flight) / SRTT, Linux's
# tcp_pacing_ss_ratio / tcp_pacing_ca_ratio (slow start while cwnd < ssthresh / 2);
# new data leaves in quanta of max(2 segments, rate x PACE_QUANTUM_T) (Linux's TSO
# autosizing, sk_pacing_shift 10: ~1 ms), so a LAN flow is not cut into single segments
PACE_SS_RATIO = 2.0
PACE_CA_RATIO = 1.2
PACE_QUANTUM_T = 0.001


class CongestionControl:
    """Base class: fixed window, only the bookkeeping shared by both algorithms."""

    __slots__ = ("mss", "cwnd", "ssthresh", "hs_state", "hs_end", "hs_last_min",
                 "hs_cur_min", "hs_count", "hs_css_base", "hs_css_rounds")
    name = "base"

    def __init__(self, mss, init_cwnd):
        self.mss = mss
        self.cwnd = init_cwnd
        self.ssthresh = INFINITE_SSTHRESH
        self.hs_state = HS_OFF      # tcp.py sets HS_SS when StackConfig.hystart is on
        self.hs_end = 0             # windowEnd: the round ends when SND.UNA reaches it
        self.hs_last_min = _INF     # lastRoundMinRTT / currentRoundMinRTT
        self.hs_cur_min = _INF
        self.hs_count = 0           # rttSampleCount of this round
        self.hs_css_base = _INF     # cssBaselineMinRtt
        self.hs_css_rounds = 0

    def hystart_ack(self, rtt, una, nxt):
        """HyStart++ (RFC 9406) on an ACK of the initial slow start: ``rtt`` this ACK's
        RTT sample (None if it gave none), ``una`` / ``nxt`` SND.UNA after it and
        SND.NXT, for the rounds (a round ends when SND.UNA reaches the SND.NXT of its
        start).  Slow start becomes Conservative Slow Start once a round's minimum RTT
        (of at least N_RTT_SAMPLE samples) exceeds the previous round's by
        clamp(lastRoundMinRTT / 8, 4 ms, 16 ms); CSS goes back to slow start when a
        round's minimum falls below the RTT that started it (the exit was spurious:
        jitter), and ends in congestion avoidance (ssthresh = cwnd) after CSS_ROUNDS
        rounds.  Returns HS_EV_* bits (0: nothing happened)."""
        st = self.hs_state
        ev = 0
        if rtt is not None:
            if rtt < self.hs_cur_min:
                self.hs_cur_min = rtt
            self.hs_count += 1
            if self.hs_count >= N_RTT_SAMPLE:
                # in this order, so that a call leaves nothing undecided for the same
                # minima (tcp.py skips samples that cannot change them)
                cur = self.hs_cur_min
                if st == HS_CSS and cur < self.hs_css_base:
                    self.hs_css_base = _INF
                    self.hs_state = st = HS_SS
                    ev = HS_EV_RESUME
                last = self.hs_last_min
                if st == HS_SS and last != _INF:
                    th = last / MIN_RTT_DIVISOR
                    th = MIN_RTT_THRESH if th < MIN_RTT_THRESH else (
                        MAX_RTT_THRESH if th > MAX_RTT_THRESH else th)
                    if cur >= last + th:
                        self.hs_css_base = cur
                        self.hs_css_rounds = 0
                        self.hs_state = st = HS_CSS
                        ev |= HS_EV_CSS
        end = self.hs_end
        if una >= end:
            # the ACK of windowEnd ends the round (its sample was the round's last)
            if end and st == HS_CSS:
                self.hs_css_rounds += 1
                if self.hs_css_rounds >= CSS_ROUNDS:
                    self.hs_state = HS_OFF
                    self.ssthresh = self.cwnd
                    return ev | HS_EV_EXIT
            if end:
                self.hs_last_min = self.hs_cur_min
                self.hs_cur_min = _INF
                self.hs_count = 0
            self.hs_end = nxt           # (the first ACK only starts the first round)
        return ev

    def _reduce_ssthresh(self, flight, beta_num, beta_den):
        self.hs_state = HS_OFF        # HyStart++ only in the initial slow start (§4.3)
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
        if self.hs_state == HS_CSS:
            self.cwnd += acked // CSS_GROWTH_DIVISOR    # (ssthresh is still infinite)
            return 0
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
    ``cwnd`` is exposed in bytes.  Slow start with HyStart++ (RFC 9406) as NewReno's."""

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
            if self.hs_state == HS_CSS:
                self._set_cwnd(self._cwnd_f + acked / CSS_GROWTH_DIVISOR)
                return
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
        self.hs_state = HS_OFF        # HyStart++ only in the initial slow start (§4.3)
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
