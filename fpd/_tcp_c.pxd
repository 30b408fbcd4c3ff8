# C types for fpd._tcp_c: fpd/tcp.py compiled by Cython in pure-Python mode (setup.py).
# fpd/tcp.py stays the one source and runs unchanged without this file; what is declared
# here makes Context, _Rec and Connection extension types whose fields sit at C offsets
# (C integers for sequence offsets, windows, byte counts and counters; double for times;
# object for whatever can be None or holds a Python object) and the methods cpdef, so that
# the engine's calls into itself are C calls. Every name in Connection.__slots__ must be
# declared here (tests/engine/test_tcp_build.py checks it): a Cython extension type keeps
# no per-instance storage outside what is declared.
#
# Integers: offsets are 64-bit signed (a connection would have to move 2^63 bytes to
# overflow); wire sequence numbers, tsvals and their mod-2^32 arithmetic stay explicit
# (& MASK) in the source. A float stored in a C integer field would be truncated: only
# fields that hold Python ints in every build are typed so (the engine suites run on
# both builds and compare segments).
import cython

# the sha256 of the tcp.py this module was compiled from (setup.py defines the macro):
# fpd.tcp compares it with its own source and stays Python when they differ
cdef extern from *:
    const char *FPD_SRC_HASH

cdef long long R_SACKED, R_LOST, R_RETRANS, R_EVER, R_SYN, R_FIN
cdef long long CA_OPEN, CA_RECOVERY, CA_LOSS, DUPTHRESH, PROBE_TLP, PROBE_REO

@cython.final
cdef class Context:
    cdef public list out, events, acks, timers
    cdef public double now
    cdef public object stats, tso
    cdef public long long half_open, tw_count, stale, tseq, buf_extra
    cdef public dict _conns

    cpdef push_timer(self, t, conn)
    cpdef forget(self, conn)


@cython.final
cdef class _Rec:
    cdef public long long start, end, flags
    cdef public double ts


@cython.final
cdef class RcvQueue:
    cdef public object chunks
    cdef public long long off, n

    @cython.locals(n=Py_ssize_t)
    cpdef append(self, data)
    @cython.locals(n=Py_ssize_t)
    cpdef append_owned(self, buf)
    cpdef clear(self)
    @cython.locals(off=Py_ssize_t, k=Py_ssize_t)
    cpdef drop(self, Py_ssize_t n)
    @cython.locals(off=Py_ssize_t, k=Py_ssize_t)
    cpdef list _parts(self, Py_ssize_t n)
    @cython.locals(q=Py_ssize_t, off=Py_ssize_t)
    cpdef peek(self, Py_ssize_t n=*)
    cpdef take(self, Py_ssize_t n=*)
    @cython.locals(room=Py_ssize_t, n=Py_ssize_t, pos=Py_ssize_t, off=Py_ssize_t,
                   k=Py_ssize_t)
    cpdef Py_ssize_t take_into(self, buf) except -1
    @cython.locals(q=Py_ssize_t)
    cpdef take_to(self, write, Py_ssize_t n=*)


@cython.final
cdef class Connection:
    cdef public Context cx
    cdef public object cfg
    cdef public object listener
    cdef public object _la
    cdef public object _lp
    cdef public object _ra
    cdef public object _rp
    cdef public object state
    cdef public bint passive
    cdef public bint announced
    cdef public bint closed_by_app
    cdef public bint wr_shut
    cdef public object error
    cdef public object nodelay
    cdef public object cc
    cdef public long long iss
    cdef public long long snd_una_o
    cdef public long long snd_nxt_o
    cdef public long long snd_wnd
    cdef public long long max_snd_wnd
    cdef public long long snd_wl1_o
    cdef public long long snd_wl2_o
    cdef public long long snd_shift
    cdef public long long flight_dup1
    cdef public bytearray sndq
    cdef public long long sndq_o
    cdef public long long sndq_a
    cdef public long long sndbuf
    cdef public object fin_o
    cdef public list rtxq
    cdef public long long sacked_out
    cdef public long long lost_out
    cdef public long long retrans_out
    cdef public long long reno_dup
    cdef public long long rtx_scan
    cdef public long long dupacks
    cdef public long long ca_state
    cdef public long long recover_o
    cdef public long long mss
    cdef public long long peer_mss
    cdef public long long snd_sml_o
    cdef public long long cwnd_lim_o
    cdef public double last_send
    cdef public long long high_sacked_o
    cdef public object sack_cache
    cdef public object rack_ts
    cdef public long long rack_end
    cdef public double rack_rtt
    cdef public bint rack_reord
    cdef public long long rack_mult
    cdef public long long rack_cur
    cdef public long long rack_persist
    cdef public object t_probe
    cdef public long long probe_kind
    cdef public object tlp_end
    cdef public bint tlp_retrans
    cdef public long long rescue_o
    cdef public bint dsack_in
    cdef public long long undo_marker
    cdef public long long undo_retrans
    cdef public object prior_cwnd
    cdef public object prior_ssthresh
    cdef public bint undone
    cdef public long long irs
    cdef public long long rcv_nxt_o
    cdef public long long rcv_adv_o
    cdef public long long rcv_wup_o
    cdef public long long rcv_shift
    cdef public RcvQueue rcvq
    cdef public long long rcvbuf
    cdef public list ooo
    cdef public long long ooo_bytes
    cdef public long long ooo_stamp
    cdef public object ooo_fin_o
    cdef public bint fin_rcvd
    cdef public long long rcv_mss
    cdef public object dsack
    cdef public bint ack_pending
    cdef public bint ack_now
    cdef public bint ack_queued
    cdef public long long quick
    cdef public long long sws_thresh
    cdef public object rs_t0
    cdef public long long rs_b0
    cdef public long long rs_space
    cdef public bint rs_drained
    cdef public object rr_rtt
    cdef public long long rr_seq
    cdef public object rr_t
    cdef public long long buf_extra
    cdef public long long frto
    cdef public bint frto_orig
    cdef public long long prr_delivered
    cdef public long long prr_rtx
    cdef public long long prr_nxt
    cdef public long long prr_fs
    cdef public long long lost_cnt
    cdef public double pace_next
    cdef public object t_pace
    cdef public bint ts_ok
    cdef public bint sack_ok
    cdef public bint ws_ok
    cdef public long long ts_off
    cdef public long long ts_recent
    cdef public double ts_recent_stamp
    cdef public object srtt
    cdef public double rttvar
    cdef public object min_rtt
    cdef public object dr_t0
    cdef public long long dr_b0
    cdef public object dr_s0
    cdef public object delivery_rate
    cdef public double rto
    cdef public long long backoff
    cdef public long long rto_count
    cdef public long long syn_rtx
    cdef public object t_rtx
    cdef public object t_persist
    cdef public object t_dack
    cdef public object t_ka
    cdef public object t_tw
    cdef public object heap_at
    cdef public long long persist_n
    cdef public long long probes_out
    cdef public long long ka_probes
    cdef public double last_rcv
    cdef public double oow_last
    cdef public double ca_start
    cdef public long long ca_count
    cdef public bint _keepalive
    cdef public object keepalive_idle
    cdef public object keepalive_interval
    cdef public object keepalive_count
    cdef public bint rd_pending
    cdef public bint _wr_want
    cdef public object rx_sink
    cdef public long long retransmits
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public long long bytes_acked
    cdef public long long segs_in
    cdef public long long segs_out
    cdef public long long dup_bytes_in
    cdef public double created

    @cython.locals(n=Py_ssize_t, room=cython.longlong)
    cpdef send(self, data, now)
    cpdef recv(self, max_bytes=*)
    cpdef recv_into(self, buf)
    cpdef recv_to(self, write, max_bytes=*)
    cpdef shutdown(self, now)
    cpdef close(self, now)
    cpdef abort(self, now)
    cpdef _limited_by(self)
    cpdef _errname(self)
    cpdef _ts_now(self, now)
    cpdef _cur_rto(self)
    @cython.locals(f=cython.longlong)
    cpdef long long _in_flight(self)
    cpdef schedule(self)
    cpdef flush_ack(self, now)
    cpdef rearm(self, now)
    cpdef next_timer(self)
    cpdef _move(self, cause, now=*)
    cpdef _set_state(self, new)
    cpdef _event(self, kind)
    cpdef destroy(self, ev)
    @cython.locals(free=cython.longlong, nxt=cython.longlong, cur=cython.longlong,
                   w=cython.longlong, sh=cython.int, f=cython.longlong, edge=cython.longlong)
    cpdef _wnd_field(self)
    cpdef _sack_blocks(self)
    cpdef _ack_fields_sent(self)
    cpdef _mkseg(self, seq, flags, payload, now)
    cpdef _send_ack(self, now)
    cpdef _send_probe(self, now)
    cpdef _challenge_ack(self, now)
    cpdef _oow_ack(self, now)
    cpdef _send_rst_now(self, now)
    cpdef _send_syn(self, now)
    cpdef open_active(self, now, iss, ts_off, rcv_shift)
    cpdef open_passive(self, seg, now, iss, ts_off, rcv_shift, listener)
    cpdef _negotiate(self, seg, rcv_shift)
    cpdef _set_mss(self)
    cpdef _open_established(self, now)
    cpdef open_cookie(self, seg, now, iss, ts_off, rcv_shift, listener, mss, ws, sack)
    @cython.locals(rn=cython.longlong, una=cython.longlong, d=cython.longlong,
                   plen=Py_ssize_t, pwnd=cython.longlong, ack_o=cython.longlong)
    cpdef _input(self, seg, now)
    cpdef _input_slow(self, seg, now, st)
    cpdef _resend_synack(self, now)
    cpdef _paws_fails(self, tsval, now)
    cpdef _take_ts_recent(self, tsval, seq_o, now)
    cpdef _in_rst(self, d, wnd, now)
    cpdef _acceptable(self, flags, seq_o, seglen, plen, rn, wnd, now)
    cpdef _ack_acceptable(self, seg, st, now)
    cpdef _handshake_done(self, seg, seq_o, ack_o, now)
    cpdef _ack_step(self, seg, seq_o, ack_o, now)
    cpdef _text_step(self, seg, flags, seq_o, seglen, plen, rn, now)
    cpdef _after_input(self, now)
    cpdef _send_rst_for(self, ack, now)
    cpdef _reset_by_peer(self, now)
    cpdef _in_syn_sent(self, seg, now)
    cpdef _in_time_wait(self, seg, now)
    cpdef _enter_time_wait(self, now)
    cpdef _ack(self, seg, seq_o, ack_o, now)
    cpdef _snd_wnd_update(self, seq_o, ack_o, pwnd)
    @cython.locals(r=_Rec, n=Py_ssize_t, nq=Py_ssize_t, una=cython.longlong, acked=cython.longlong, rend=cython.longlong, sacked=cython.longlong, lost=cython.longlong, retrans=cython.longlong, f=cython.longlong, cut=cython.longlong, ln=cython.longlong, sa=cython.longlong, dend=cython.longlong, top=cython.longlong, k=cython.longlong, hs=cython.longlong, q=list)
    cpdef _ack_new(self, ack_o, seg, now)
    cpdef _rtt_sample(self, r, flight=*)
    cpdef _mark_lost(self, r)
    cpdef _dupack(self, new_sacked, now)
    cpdef _enter_recovery(self, now)
    cpdef _retransmit(self, r, now)
    cpdef _exit_recovery(self, now)
    cpdef _is_dsack(self, blocks, ack_o)
    cpdef _on_dsack(self, blk, now)
    cpdef _undo_start(self)
    cpdef _rack_update(self, r, now)
    cpdef _rack_reo_wnd(self)
    cpdef _rack_detect(self, now)
    cpdef _arm_pto(self, now)
    cpdef _on_tlp(self, now)
    cpdef _last_unsacked(self)
    cpdef _tlp_ack(self, ack_o, now)
    cpdef _on_probe_timer(self, now)
    cpdef _sack_tag(self, blocks, ack_o)
    cpdef _sack_loss_check(self, new_sacked, advanced, now)
    cpdef _sack_is_lost_head(self)
    cpdef _sack_mark_lost(self)
    @cython.locals(r=_Rec, q=list, a=Py_ssize_t, nq=Py_ssize_t, f=cython.longlong, ln=cython.longlong, mss=cython.longlong, nxt=cython.longlong, so=cython.longlong, dend=cython.longlong, avail=cython.longlong, right=cython.longlong, n=cython.longlong, room=cython.longlong, fl=cython.longlong)
    cpdef _xmit(self, now, force=*)
    @cython.locals(r=_Rec, f=cython.longlong, ln=cython.longlong, sk=cython.longlong, lo=cython.longlong, rt=cython.longlong)
    cpdef _recount(self)
    cpdef _pace_rate(self)
    cpdef _pace_budget(self, now, rate)
    cpdef _paced(self, now, rate, nbytes, blocked)
    cpdef _persist_intv(self)
    cpdef _emit_new(self, start, end, fin, now)
    cpdef _emit_range(self, start, end, fin, now, rtx)
    cpdef _rcv_data(self, seq_o, payload, plen, fin, now)
    cpdef _ack_rule(self, rn)
    cpdef _rcv_fin(self, now)
    cpdef _ooo_insert(self, s, data)
    cpdef _ooo_drain(self, rn)
    cpdef _read_done(self)
    cpdef _rcv_space_adjust(self)
    cpdef _grow_sndbuf(self)
    cpdef _buf_grant(self, want, cur, cap)
    cpdef _release_bufs(self)
    cpdef on_timer(self, now)
    cpdef _on_rto(self, now)
    cpdef _on_persist(self, now)
    cpdef _on_keepalive(self, now)
