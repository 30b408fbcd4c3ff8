# C types for fpd._fastpath_c: fpd/fastpath.py compiled by Cython in pure-Python mode
# (setup.py). fpd/fastpath.py stays the source and runs unchanged without this file; what
# is declared here gives its locals C integer types and its connection the type of
# fpd._tcp_c's Connection (cimported: its fields are read and written at their C offsets,
# its cpdef methods called through its C method table). Sequence numbers and tsvals are
# 32-bit; offsets (*_o), windows and byte counts fit a 64-bit signed integer.
#
# Typed with Connection: _data_run, _ack_run, _xmit_burst. input_burst and xmit_burst
# hand them only connections of that class (fpd.fastpath._TCONN); a Python-build
# connection takes fpd.fastpath's interpreted functions. This module's C code depends on
# fpd/_tcp_c.pxd (the layout of Connection): setup.py builds it with that file in its
# BUILT_FROM, and fpd.builds runs it only when both are as built.
import cython
from fpd._tcp_c cimport Connection, Context

# the sha256 of the fastpath.py this module was compiled from (setup.py defines the macro):
# fpd.fastpath compares it with its own source and runs as Python when they differ
cdef extern from *:
    const char *FPD_SRC_HASH

cdef long long _M32, _HALF32, _ACK, _PSH, _PREDICT

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, m=Py_ssize_t, sp=object, dp=object)
cpdef input_burst(stack, segs, now, int acks=*)

@cython.locals(una=cython.longlong, r=tuple, cx=Context, m=Py_ssize_t, nbytes=cython.longlong,
               rn=cython.longlong, ts_recent=cython.longlong, ts_set=cython.bint,
               rcv_mss=cython.longlong, quick=cython.longlong, ack_now=cython.bint,
               ack_pending=cython.bint, dack_set=cython.bint, wupd=cython.bint,
               wl1=cython.longlong, wl2=cython.longlong, snd_wnd=cython.longlong)
cdef Py_ssize_t _data_run(stack, Connection c, segs, Py_ssize_t i, Py_ssize_t j, now) except -1

@cython.locals(rn=cython.longlong, irs=cython.longlong, ack_w=cython.longlong,
               snd_wnd=cython.longlong, shift=cython.int, adv=cython.longlong,
               wup=cython.longlong, ts_ok=cython.bint, ts_recent=cython.longlong,
               rcv_mss=cython.longlong, cfg_mss=cython.longlong, quick=cython.longlong,
               ack_now=cython.bint, ack_pending=cython.bint, dack_none=cython.bint,
               wl1=cython.longlong, wl2=cython.longlong, una=cython.longlong,
               ts_set=cython.bint, dack_set=cython.bint, wupd=cython.bint,
               k=Py_ssize_t, nbytes=cython.longlong, plen=Py_ssize_t, tsv=cython.longlong,
               rcvq=bytearray)
cpdef tuple _py_run(segs, Py_ssize_t i, Py_ssize_t j, rcvq, tuple args)

@cython.locals(rn=cython.longlong, seq_w=cython.longlong, iss=cython.longlong,
               snd_wnd=cython.longlong, shift=cython.int, ts_ok=cython.bint,
               una=cython.longlong, nxt=cython.longlong, ts_recent=cython.longlong,
               tsv=cython.longlong, k=Py_ssize_t, m=Py_ssize_t, x=Py_ssize_t,
               d=cython.longlong, ack_o=cython.longlong, cx=Context, wmove=cython.bint,
               w=cython.longlong, w_last=cython.longlong, w_prev=cython.longlong,
               wmax=cython.longlong, right=cython.longlong, why=cython.int)
cdef Py_ssize_t _ack_run(stack, Connection c, segs, Py_ssize_t i, Py_ssize_t j, now,
                         int acks) except -1

@cython.locals(mss=cython.longlong, nxt=cython.longlong, una=cython.longlong,
               so=cython.longlong, avail=cython.longlong, room=cython.longlong,
               n=cython.longlong, r=cython.longlong, cwnd=cython.longlong,
               fl=cython.longlong, k=cython.longlong, end=cython.longlong,
               s=cython.longlong, sndq=bytearray, recs=list, st=Context)
cdef _xmit_burst(Connection c, now)

cpdef xmit_burst(c, now)
