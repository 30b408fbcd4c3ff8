/* fpd._accel: optional C versions of primitives pure Python cannot make cheap.
 *
 * wsum(buffer) -> int: the 16-bit big-endian word sum of the buffer (an odd last byte is
 * the high byte of a zero-padded word), folded with end-around carry to 0..0xFFFF.
 * The result is congruent modulo 0xFFFF to fpd.wire's pure-Python reference
 * (int.from_bytes(data, "big"), shifted left 8 bits for an odd length), and it is 0
 * only when every byte is 0 -- the two properties the checksum code relies on.
 *
 * init(Segment): tell the module fpd.wire's Segment class (a __slots__ class); the
 * burst parser fills its slots directly (the offsets of the slot descriptors).
 *
 * parse_burst(umem, addrs, lens, verify) -> (segments, partial): parse a whole RX burst
 * of Ethernet frames (umem: a buffer; frame i is umem[addrs[i]:addrs[i] + lens[i]]).
 * segments[i] is a Segment when the frame is of the common shape -- untagged IPv4
 * without IP options, not a fragment, TCP with no options or exactly "NOP NOP TS",
 * checksums good (complete, or CHECKSUM_PARTIAL for TCP) when verify -- and None for
 * every other frame, which the caller hands to the pure-Python fpd.wire.parse_frame
 * (the reference, which also names what is wrong with a bad frame). A Segment here
 * equals parse_frame's field for field, except that its payload is a bytes copy.
 * partial counts the frames whose TCP checksum field held the CHECKSUM_PARTIAL value.
 *
 * stamp_frames(...): see fpd.wire.stamp_frames (template transmit).
 *
 * build_frame(buf, offset, src_mac, dst_mac, seg): one frame (every TCP option shape,
 * no VLAN, the default IP fields), what fpd.wire.build_frame_into writes; None: build
 * it in Python.
 *
 * data_run(...): the loop of fpd.fastpath._data_run (batched in-order receive) over
 * Segments with bytes payloads, the payloads appended to the receive buffer in one
 * resize; the Python loop there is the reference and documents the rules.
 *
 * copy_payloads(...): the payloads of a run of segments into a byte ring's data area
 * (fpd.fastpath's direct delivery into a client's RX ring).
 *
 * The pure-Python path stays the reference; tests compare the two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

static uint64_t fold(uint64_t s);

static uint64_t sum_words(const unsigned char *p, Py_ssize_t n)
{
    /* The one's-complement sum is byte-order independent (RFC 1071 2(B)): sum the
       buffer as host-order 32-bit words (a 64-bit accumulator per lane cannot overflow
       below 2^32 words), fold, and on a little-endian host swap the two bytes of the
       folded sum (x * 256 mod 0xFFFF) to get the big-endian words' sum. */
    uint64_t a = 0, b = 0, c = 0, d = 0, s;
    uint32_t w;
    while (n >= 16) {
        uint32_t x[4];
        memcpy(x, p, 16);
        a += x[0];
        b += x[1];
        c += x[2];
        d += x[3];
        p += 16;
        n -= 16;
    }
    while (n >= 4) {
        memcpy(&w, p, 4);
        a += w;
        p += 4;
        n -= 4;
    }
    s = a + b + c + d;
    if (n >= 2) {
        uint16_t h;
        memcpy(&h, p, 2);
        s += h;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint16_t h = 0;
        memcpy(&h, p, 1);                 /* the last byte, the first of a zero-padded word */
        s += h;
    }
    s = fold(s);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    s = ((s & 0xFF) << 8) | (s >> 8);
#endif
    return s;
}

static uint64_t fold(uint64_t s)
{
    if (!s)
        return 0;
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return s;
}

static PyObject *wsum(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    uint64_t s;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    s = sum_words((const unsigned char *)b.buf, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(fold(s));
}


/* ---- burst parse ------------------------------------------------------------------ */

static const char *const SEG_SLOTS[] = {
    "src", "dst", "sport", "dport", "seq", "ack", "flags", "wnd", "urp",
    "mss", "wscale", "sack_ok", "tsval", "tsecr", "sack", "payload",
};
#define NSLOTS 16
enum { S_SRC, S_DST, S_SPORT, S_DPORT, S_SEQ, S_ACK, S_FLAGS, S_WND, S_URP,
       S_MSS, S_WSCALE, S_SACK_OK, S_TSVAL, S_TSECR, S_SACK, S_PAYLOAD };

static PyTypeObject *seg_type = NULL;
static Py_ssize_t seg_off[NSLOTS];
static PyObject *empty_tuple = NULL;

static PyObject *init(PyObject *self, PyObject *arg)
{
    int i;
    if (!PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "init(Segment): a class");
        return NULL;
    }
    for (i = 0; i < NSLOTS; i++) {
        PyObject *d = PyObject_GetAttrString(arg, SEG_SLOTS[i]);
        PyMemberDef *m;
        if (d == NULL)
            return NULL;
        if (!PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "Segment.%s is not a __slots__ member", SEG_SLOTS[i]);
            return NULL;
        }
        m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "Segment.%s: unexpected member kind", SEG_SLOTS[i]);
            return NULL;
        }
        seg_off[i] = m->offset;
        Py_DECREF(d);
    }
    if (empty_tuple == NULL) {
        empty_tuple = PyTuple_New(0);
        if (empty_tuple == NULL)
            return NULL;
    }
    Py_XDECREF(seg_type);
    Py_INCREF(arg);
    seg_type = (PyTypeObject *)arg;
    Py_RETURN_NONE;
}

#define SLOT_(o, i) (*(PyObject **)((char *)(o) + seg_off[i]))

static inline void set_slot(PyObject *o, int i, PyObject *v)    /* steals v */
{
    *(PyObject **)((char *)o + seg_off[i]) = v;
}

static inline uint32_t be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* 0: not the common shape (let Python parse it); 1: parsed into *out; -1: error set */
static int parse_one(const unsigned char *f, Py_ssize_t len, int verify,
                     PyObject **last_src, PyObject **last_dst, PyObject **out,
                     int *partial)
{
    const unsigned char *ip = f + 14, *tcp, *pay;
    uint32_t tot, thl, plen, tlen;
    PyObject *o, *src, *dst, *v;
    *out = NULL;
    if (len < 54 || f[12] != 0x08 || f[13] != 0x00)
        return 0;
    if (ip[0] != 0x45 || ip[9] != 6 || (be16(ip + 6) & 0x3FFF))
        return 0;
    tot = be16(ip + 2);
    if (tot < 40 || 14 + (Py_ssize_t)tot > len)
        return 0;
    tcp = ip + 20;
    thl = (uint32_t)(tcp[12] >> 4) << 2;
    if (!(thl == 20 || (thl == 32 && be32(tcp + 20) == 0x0101080Au)))
        return 0;
    tlen = tot - 20;
    if (thl > tlen)
        return 0;
    plen = tlen - thl;
    if (verify) {
        uint64_t s = sum_words(ip, 20), ph;
        int state = 0;
        if (s % 0xFFFF)
            return 0;                                  /* bad IP checksum: Python says so */
        ph = be16(ip + 12) + be16(ip + 14) + be16(ip + 16) + be16(ip + 18) + 6 + tlen;
        s = sum_words(tcp, tlen) + ph;
        if (s % 0xFFFF == 0)
            state = 1;
        else {
            uint64_t p = ph % 0xFFFF;
            if (be16(tcp + 16) == (p ? p : 0xFFFF))
                state = 2;
        }
        if (!state)
            return 0;                                  /* bad TCP checksum */
        if (state == 2)
            (*partial)++;
    }
    o = seg_type->tp_alloc(seg_type, 0);
    if (o == NULL)
        return -1;
    src = *last_src;
    if (src == NULL || memcmp(PyBytes_AS_STRING(src), ip + 12, 4) != 0) {
        src = PyBytes_FromStringAndSize((const char *)ip + 12, 4);
        if (src == NULL)
            goto fail;
        Py_XDECREF(*last_src);
        *last_src = src;
    }
    Py_INCREF(src);
    set_slot(o, S_SRC, src);
    dst = *last_dst;
    if (dst == NULL || memcmp(PyBytes_AS_STRING(dst), ip + 16, 4) != 0) {
        dst = PyBytes_FromStringAndSize((const char *)ip + 16, 4);
        if (dst == NULL)
            goto fail;
        Py_XDECREF(*last_dst);
        *last_dst = dst;
    }
    Py_INCREF(dst);
    set_slot(o, S_DST, dst);
#define SETINT(slot, expr) do { v = PyLong_FromUnsignedLong(expr); if (v == NULL) goto fail; \
                                set_slot(o, slot, v); } while (0)
    SETINT(S_SPORT, be16(tcp));
    SETINT(S_DPORT, be16(tcp + 2));
    SETINT(S_SEQ, be32(tcp + 4));
    SETINT(S_ACK, be32(tcp + 8));
    SETINT(S_FLAGS, tcp[13]);
    SETINT(S_WND, be16(tcp + 14));
    SETINT(S_URP, be16(tcp + 18));
    Py_INCREF(Py_None); set_slot(o, S_MSS, Py_None);
    Py_INCREF(Py_None); set_slot(o, S_WSCALE, Py_None);
    Py_INCREF(Py_False); set_slot(o, S_SACK_OK, Py_False);
    if (thl == 32) {
        SETINT(S_TSVAL, be32(tcp + 24));
        SETINT(S_TSECR, be32(tcp + 28));
    } else {
        Py_INCREF(Py_None); set_slot(o, S_TSVAL, Py_None);
        SETINT(S_TSECR, 0);
    }
#undef SETINT
    Py_INCREF(empty_tuple);
    set_slot(o, S_SACK, empty_tuple);
    pay = tcp + thl;
    v = PyBytes_FromStringAndSize((const char *)pay, plen);
    if (v == NULL)
        goto fail;
    set_slot(o, S_PAYLOAD, v);
    *out = o;
    return 1;
fail:
    Py_DECREF(o);
    return -1;
}

static int index_list(PyObject *lst, Py_ssize_t i, Py_ssize_t *out)
{
    PyObject *x = PyList_GET_ITEM(lst, i);
    Py_ssize_t v = PyLong_AsSsize_t(x);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static PyObject *parse_burst(PyObject *self, PyObject *args)
{
    PyObject *buf, *addrs, *lens, *res = NULL, *last_src = NULL, *last_dst = NULL;
    int verify, partial = 0;
    Py_buffer b;
    Py_ssize_t n, i;
    if (!PyArg_ParseTuple(args, "OO!O!p", &buf, &PyList_Type, &addrs, &PyList_Type, &lens,
                          &verify))
        return NULL;
    if (seg_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fpd._accel.init(Segment) not called");
        return NULL;
    }
    n = PyList_GET_SIZE(addrs);
    if (PyList_GET_SIZE(lens) != n) {
        PyErr_SetString(PyExc_ValueError, "addrs and lens differ in length");
        return NULL;
    }
    if (PyObject_GetBuffer(buf, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    res = PyList_New(n);
    if (res == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        Py_ssize_t a, ln;
        PyObject *seg;
        int r;
        if (index_list(addrs, i, &a) < 0 || index_list(lens, i, &ln) < 0)
            goto fail;
        if (a < 0 || ln < 0 || a + ln > b.len) {
            PyErr_SetString(PyExc_ValueError, "frame outside the buffer");
            goto fail;
        }
        r = parse_one((const unsigned char *)b.buf + a, ln, verify, &last_src, &last_dst,
                      &seg, &partial);
        if (r < 0)
            goto fail;
        if (r == 0) {
            Py_INCREF(Py_None);
            seg = Py_None;
        }
        PyList_SET_ITEM(res, i, seg);
    }
    {
        PyObject *t = Py_BuildValue("(Ni)", res, partial);
        res = t;
    }
    goto done;
fail:
    Py_CLEAR(res);
done:
    Py_XDECREF(last_src);
    Py_XDECREF(last_dst);
    PyBuffer_Release(&b);
    return res;
}

/* ---- template transmit -------------------------------------------------------------- */

static PyObject *stamp_frames(PyObject *self, PyObject *args)
{
    PyObject *buf, *addrs, *res = NULL;
    Py_buffer b, h, p;
    Py_ssize_t l3, mss, n, i, hl, thl;
    int last_flags;
    unsigned char *ip0;
    uint32_t seq0;
    if (!PyArg_ParseTuple(args, "OO!y*ny*ni", &buf, &PyList_Type, &addrs, &h, &l3, &p, &mss,
                          &last_flags))
        return NULL;
    if (PyObject_GetBuffer(buf, &b, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&h);
        PyBuffer_Release(&p);
        return NULL;
    }
    n = PyList_GET_SIZE(addrs);
    hl = h.len;
    ip0 = (unsigned char *)h.buf + l3;
    if (l3 < 14 || hl < l3 + 40 || ip0[0] != 0x45 || mss <= 0 ||
        (thl = (Py_ssize_t)(ip0[32] >> 4) << 2) != hl - l3 - 20 ||
        p.len > n * mss || p.len <= (n - 1) * mss) {
        PyErr_SetString(PyExc_ValueError, "stamp_frames: bad template or payload size");
        goto done;
    }
    seq0 = be32(ip0 + 24);
    res = PyList_New(n);
    if (res == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        Py_ssize_t a, plen = (i == n - 1) ? p.len - i * mss : mss, flen = hl + plen;
        unsigned char *f, *ip, *tcp;
        uint32_t tot, seq, tlen;
        uint64_t s;
        PyObject *v;
        if (index_list(addrs, i, &a) < 0)
            goto fail;
        if (a < 0 || a + flen > b.len) {
            PyErr_SetString(PyExc_ValueError, "frame outside the buffer");
            goto fail;
        }
        f = (unsigned char *)b.buf + a;
        memcpy(f, h.buf, hl);
        memcpy(f + hl, (const char *)p.buf + i * mss, plen);
        ip = f + l3;
        tcp = ip + 20;
        tlen = (uint32_t)(thl + plen);
        tot = 20 + tlen;
        ip[2] = tot >> 8; ip[3] = tot & 0xFF;
        ip[10] = ip[11] = 0;
        s = fold(sum_words(ip, 20));
        s = (~s) & 0xFFFF;
        ip[10] = s >> 8; ip[11] = s & 0xFF;
        seq = seq0 + (uint32_t)(i * mss);
        tcp[4] = seq >> 24; tcp[5] = (seq >> 16) & 0xFF; tcp[6] = (seq >> 8) & 0xFF;
        tcp[7] = seq & 0xFF;
        if (i == n - 1)
            tcp[13] = (unsigned char)last_flags;
        tcp[16] = tcp[17] = 0;
        s = sum_words(tcp, tlen) + be16(ip + 12) + be16(ip + 14) + be16(ip + 16) +
            be16(ip + 18) + 6 + tlen;
        s = (~fold(s)) & 0xFFFF;
        tcp[16] = s >> 8; tcp[17] = s & 0xFF;
        v = PyLong_FromSsize_t(flen);
        if (v == NULL)
            goto fail;
        PyList_SET_ITEM(res, i, v);
    }
    goto done;
fail:
    Py_CLEAR(res);
done:
    PyBuffer_Release(&b);
    PyBuffer_Release(&h);
    PyBuffer_Release(&p);
    return res;
}

/* ---- one frame from a Segment ------------------------------------------------------- */

static inline void put32(unsigned char *p, uint32_t x)
{
    p[0] = x >> 24; p[1] = (x >> 16) & 0xFF; p[2] = (x >> 8) & 0xFF; p[3] = x & 0xFF;
}

/* An int slot as an unsigned value <= max; 0 when it is not (wrong type, out of range:
 * the Python builder then raises what it raises). */
static int slot_uint(PyObject *o, unsigned long long max, unsigned long long *out)
{
    unsigned long long v;
    if (!PyLong_CheckExact(o))
        return 0;
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (v > max)
        return 0;
    *out = v;
    return 1;
}

/* build_frame(buf, offset, src_mac, dst_mac, seg) -> frame length, or None: the frame
 * fpd.wire.build_frame_into writes for seg with its defaults (no VLAN, ttl 64, ip_id 0,
 * DF, tos 0), byte for byte (options in encode_options' layout: MSS, timestamps or
 * SACK-permitted, window scale, SACK blocks as many as fit), when every field is in
 * range and of the plain type (ints, bytes addresses, sack_ok a bool, SACK blocks
 * 2-tuples in a tuple or list), the MACs 6 bytes, the frame within buf. None for
 * everything else: the caller builds it in Python (the reference). */
static PyObject *build_frame(PyObject *self, PyObject *args)
{
    PyObject *buf, *smac, *dmac, *seg, *o, *pl;
    Py_ssize_t off;
    Py_buffer b, p;
    unsigned long long sport, dport, seq, ack, flags, wnd, urp, tsval = 0, tsecr = 0, v;
    unsigned char opt[40];
    Py_ssize_t olen = 0, nblk;
    int sack_ok;
    uint32_t thl, tlen, tot, plen;
    unsigned char *f, *ip, *tcp;
    uint64_t s;
    if (!PyArg_ParseTuple(args, "OnOOO", &buf, &off, &smac, &dmac, &seg))
        return NULL;
    if (seg_type == NULL || Py_TYPE(seg) != seg_type || !PyBytes_CheckExact(smac) ||
        !PyBytes_CheckExact(dmac) || PyBytes_GET_SIZE(smac) != 6 ||
        PyBytes_GET_SIZE(dmac) != 6)
        Py_RETURN_NONE;
    /* the options, in fpd.wire.encode_options' layout */
    o = SLOT_(seg, S_MSS);
    if (o != Py_None) {
        if (!slot_uint(o, 0xFFFF, &v))
            Py_RETURN_NONE;
        opt[olen++] = 2; opt[olen++] = 4; opt[olen++] = v >> 8; opt[olen++] = v & 0xFF;
    }
    o = SLOT_(seg, S_SACK_OK);
    if (o != Py_True && o != Py_False)
        Py_RETURN_NONE;
    sack_ok = o == Py_True;
    o = SLOT_(seg, S_TSVAL);
    if (o != Py_None) {
        if (!slot_uint(o, 0xFFFFFFFFu, &tsval) ||
            !slot_uint(SLOT_(seg, S_TSECR), 0xFFFFFFFFu, &tsecr))
            Py_RETURN_NONE;
        if (sack_ok) {
            opt[olen++] = 4; opt[olen++] = 2;
        } else {
            opt[olen++] = 1; opt[olen++] = 1;
        }
        opt[olen++] = 8; opt[olen++] = 10;
        put32(opt + olen, (uint32_t)tsval);
        put32(opt + olen + 4, (uint32_t)tsecr);
        olen += 8;
    } else if (sack_ok) {
        opt[olen++] = 1; opt[olen++] = 1; opt[olen++] = 4; opt[olen++] = 2;
    }
    o = SLOT_(seg, S_WSCALE);
    if (o != Py_None) {
        if (!slot_uint(o, 0xFF, &v))
            Py_RETURN_NONE;
        opt[olen++] = 1; opt[olen++] = 3; opt[olen++] = 3; opt[olen++] = (unsigned char)v;
    }
    o = SLOT_(seg, S_SACK);
    if (o == NULL || !(PyTuple_CheckExact(o) || PyList_CheckExact(o)))
        Py_RETURN_NONE;
    nblk = PySequence_Fast_GET_SIZE(o);
    if (nblk) {
        Py_ssize_t k, room = (40 - olen - 4) >> 3;
        if (nblk > room)
            nblk = room;
        if (nblk > 0) {
            opt[olen++] = 1; opt[olen++] = 1; opt[olen++] = 5;
            opt[olen++] = (unsigned char)(2 + 8 * nblk);
            for (k = 0; k < nblk; k++) {
                PyObject *blk = PySequence_Fast_GET_ITEM(o, k);
                unsigned long long l, r;
                if (!PyTuple_CheckExact(blk) || PyTuple_GET_SIZE(blk) != 2 ||
                    !slot_uint(PyTuple_GET_ITEM(blk, 0), 0xFFFFFFFFu, &l) ||
                    !slot_uint(PyTuple_GET_ITEM(blk, 1), 0xFFFFFFFFu, &r))
                    Py_RETURN_NONE;
                put32(opt + olen, (uint32_t)l);
                put32(opt + olen + 4, (uint32_t)r);
                olen += 8;
            }
        }
    }
    o = SLOT_(seg, S_SRC);
    if (o == NULL || !PyBytes_CheckExact(o) || PyBytes_GET_SIZE(o) != 4)
        Py_RETURN_NONE;
    o = SLOT_(seg, S_DST);
    if (o == NULL || !PyBytes_CheckExact(o) || PyBytes_GET_SIZE(o) != 4)
        Py_RETURN_NONE;
    if (!slot_uint(SLOT_(seg, S_SPORT), 0xFFFF, &sport) ||
        !slot_uint(SLOT_(seg, S_DPORT), 0xFFFF, &dport) ||
        !slot_uint(SLOT_(seg, S_SEQ), 0xFFFFFFFFu, &seq) ||
        !slot_uint(SLOT_(seg, S_ACK), 0xFFFFFFFFu, &ack) ||
        !slot_uint(SLOT_(seg, S_FLAGS), 0xFF, &flags) ||
        !slot_uint(SLOT_(seg, S_WND), 0xFFFF, &wnd) ||
        !slot_uint(SLOT_(seg, S_URP), 0xFFFF, &urp))
        Py_RETURN_NONE;
    pl = SLOT_(seg, S_PAYLOAD);
    if (pl == NULL || PyObject_GetBuffer(pl, &p, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(buf, &b, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&p);
        return NULL;
    }
    thl = 20 + (uint32_t)olen;
    plen = (uint32_t)p.len;
    tlen = thl + plen;
    tot = 20 + tlen;
    if (p.len > 0xFFFF || tot > 0xFFFF || off < 0 || off + 14 + (Py_ssize_t)tot > b.len) {
        PyBuffer_Release(&b);
        PyBuffer_Release(&p);
        Py_RETURN_NONE;
    }
    f = (unsigned char *)b.buf + off;
    memcpy(f, PyBytes_AS_STRING(dmac), 6);
    memcpy(f + 6, PyBytes_AS_STRING(smac), 6);
    f[12] = 0x08; f[13] = 0x00;
    ip = f + 14;
    ip[0] = 0x45; ip[1] = 0;
    ip[2] = tot >> 8; ip[3] = tot & 0xFF;
    ip[4] = ip[5] = 0;                     /* id 0 */
    ip[6] = 0x40; ip[7] = 0;               /* DF */
    ip[8] = 64; ip[9] = 6;
    ip[10] = ip[11] = 0;
    memcpy(ip + 12, PyBytes_AS_STRING(SLOT_(seg, S_SRC)), 4);
    memcpy(ip + 16, PyBytes_AS_STRING(SLOT_(seg, S_DST)), 4);
    s = (~fold(sum_words(ip, 20))) & 0xFFFF;
    ip[10] = s >> 8; ip[11] = s & 0xFF;
    tcp = ip + 20;
    tcp[0] = sport >> 8; tcp[1] = sport & 0xFF;
    tcp[2] = dport >> 8; tcp[3] = dport & 0xFF;
    tcp[4] = seq >> 24; tcp[5] = (seq >> 16) & 0xFF; tcp[6] = (seq >> 8) & 0xFF;
    tcp[7] = seq & 0xFF;
    tcp[8] = ack >> 24; tcp[9] = (ack >> 16) & 0xFF; tcp[10] = (ack >> 8) & 0xFF;
    tcp[11] = ack & 0xFF;
    tcp[12] = (unsigned char)(thl << 2);
    tcp[13] = (unsigned char)flags;
    tcp[14] = wnd >> 8; tcp[15] = wnd & 0xFF;
    tcp[16] = tcp[17] = 0;
    tcp[18] = urp >> 8; tcp[19] = urp & 0xFF;
    if (olen)
        memcpy(tcp + 20, opt, olen);
    if (plen)
        memmove(tcp + thl, p.buf, plen);
    s = sum_words(tcp, tlen) + be16(ip + 12) + be16(ip + 14) + be16(ip + 16) +
        be16(ip + 18) + 6 + tlen;
    s = (~fold(s)) & 0xFFFF;
    tcp[16] = s >> 8; tcp[17] = s & 0xFF;
    PyBuffer_Release(&b);
    PyBuffer_Release(&p);
    return PyLong_FromLong(14 + (long)tot);
}

/* run_end(segs, i) -> j: segs[i:j] is the longest run of Segments with segs[i]'s
 * 4-tuple (src, dst, sport, dport); segs[i] must be a Segment. */
static PyObject *run_end(PyObject *self, PyObject *args)
{
    PyObject *segs, *o;
    PyObject *src, *dst, *sp, *dp;
    Py_ssize_t i, j, n;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &segs, &i))
        return NULL;
    n = PyList_GET_SIZE(segs);
    if (seg_type == NULL || i < 0 || i >= n || Py_TYPE(PyList_GET_ITEM(segs, i)) != seg_type) {
        PyErr_SetString(PyExc_ValueError, "run_end: segs[i] is not a Segment");
        return NULL;
    }
    o = PyList_GET_ITEM(segs, i);
    src = SLOT_(o, S_SRC); dst = SLOT_(o, S_DST); sp = SLOT_(o, S_SPORT); dp = SLOT_(o, S_DPORT);
    for (j = i + 1; j < n; j++) {
        PyObject *x = PyList_GET_ITEM(segs, j), *a, *b;
        int r;
        if (Py_TYPE(x) != seg_type)
            break;
#define SAME(slot, ref) \
        a = SLOT_(x, slot); b = ref; \
        if (a != b) { \
            if (a == NULL || b == NULL) break; \
            r = PyObject_RichCompareBool(a, b, Py_EQ); \
            if (r < 0) return NULL; \
            if (!r) break; \
        }
        SAME(S_SPORT, sp)
        SAME(S_DPORT, dp)
        SAME(S_SRC, src)
        SAME(S_DST, dst)
#undef SAME
    }
    return PyLong_FromSsize_t(j);
}

/* ---- the receive fast path over a run of segments (fpd.fastpath._data_run) ----------- */

static int get_u64(PyObject *o, unsigned long long *v)
{
    if (!PyLong_Check(o))
        return -1;
    *v = PyLong_AsUnsignedLongLong(o);
    if (*v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

#define SLOT(o, i) (*(PyObject **)((char *)(o) + seg_off[i]))

/* data_run(segs, i, j, rcvq, (rn, irs, ack_w, snd_wnd, shift, adv, wup, ts_ok, ts_recent,
 *          rcv_mss, cfg_mss, quick, ack_now, ack_pending, dack_none, wl1, wl2, una))
 * -> None (no segment taken) or (m, nbytes, rn, ts_recent, ts_set, rcv_mss, quick,
 *    ack_now, ack_pending, dack_set, wupd, wl1, wl2): the loop of fpd.fastpath._data_run
 * (the reference, which documents the rules), the payloads appended to rcvq (None: not
 * copied). */
static PyObject *data_run(PyObject *self, PyObject *args)
{
    PyObject *segs, *rcvq;
    Py_ssize_t i, j, k, m;
    long long rn, adv, wup, rcv_mss, cfg_mss, quick, wl1, wl2, una, snd_wnd;
    unsigned long long ack_w, ts_recent, irs;
    int shift, ts_ok, ack_now, ack_pending, dack_none, ts_set = 0, dack_set = 0, wupd = 0;
    long long nbytes = 0;
    char *dst;
    if (!PyArg_ParseTuple(args, "O!nnO(LKKLiLLiKLLLpppLLL)", &PyList_Type, &segs, &i, &j,
                          &rcvq, &rn, &irs, &ack_w, &snd_wnd, &shift,
                          &adv, &wup, &ts_ok, &ts_recent, &rcv_mss, &cfg_mss, &quick,
                          &ack_now, &ack_pending, &dack_none, &wl1, &wl2, &una))
        return NULL;
    if (rcvq != Py_None && !PyByteArray_CheckExact(rcvq)) {
        PyErr_SetString(PyExc_TypeError, "data_run: rcvq must be a bytearray or None");
        return NULL;
    }
    if (seg_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fpd._accel.init(Segment) not called");
        return NULL;
    }
    if (j > PyList_GET_SIZE(segs))
        j = PyList_GET_SIZE(segs);
    /* pass 1: how far the run goes, and every state change it makes */
    for (k = i; k < j; k++) {
        PyObject *o = PyList_GET_ITEM(segs, k), *pl;
        unsigned long long flags, ack, seq, wnd, tsval;
        Py_ssize_t plen;
        if (Py_TYPE(o) != seg_type)
            break;
        pl = SLOT(o, S_PAYLOAD);
        if (pl == NULL || !PyBytes_CheckExact(pl))
            break;                         /* (memoryview payloads: the Python loop) */
        plen = PyBytes_GET_SIZE(pl);
        if (!plen || SLOT(o, S_SACK) == NULL || PyObject_IsTrue(SLOT(o, S_SACK)) != 0)
            break;
        if (get_u64(SLOT(o, S_FLAGS), &flags) || (flags & 0x37) != 0x10 ||
            get_u64(SLOT(o, S_ACK), &ack) || ack != ack_w ||
            get_u64(SLOT(o, S_SEQ), &seq) || seq != ((irs + (unsigned long long)rn) & 0xFFFFFFFFull) ||
            get_u64(SLOT(o, S_WND), &wnd) || (long long)((wnd & 0xFFFF) << shift) != snd_wnd ||
            plen > adv - rn)
            break;
        if (ts_ok) {
            PyObject *tv = SLOT(o, S_TSVAL);
            if (tv == NULL || tv == Py_None || get_u64(tv, &tsval) ||
                ((tsval - ts_recent) & 0xFFFFFFFFull) >= 0x80000000ull)
                break;
            if (rn <= wup) {
                ts_recent = tsval;
                ts_set = 1;
            }
        }
        if (wl1 < rn || (wl1 == rn && wl2 <= una)) {
            wl1 = rn;
            wl2 = una;
            wupd = 1;
        }
        rn += plen;
        nbytes += plen;
        if (plen > rcv_mss)
            rcv_mss = plen < cfg_mss ? plen : cfg_mss;
        if (quick > 0) {
            quick--;
            ack_now = 1;
        } else if (rn - wup > rcv_mss)
            ack_now = 1;
        else
            ack_pending = 1;
        if (!ack_now && ack_pending && dack_none) {
            dack_set = 1;
            dack_none = 0;
        }
    }
    m = k - i;
    if (!m)
        Py_RETURN_NONE;
    /* pass 2: the bytes (one resize: a failure changes nothing); rcvq None: the caller
     * copies them (fpd.fastpath's direct delivery) */
    if (rcvq != Py_None) {
        Py_ssize_t old = PyByteArray_GET_SIZE(rcvq);
        if (PyByteArray_Resize(rcvq, old + (Py_ssize_t)nbytes) < 0)
            return NULL;
        dst = PyByteArray_AS_STRING(rcvq) + old;
        for (k = i; k < i + m; k++) {
            PyObject *pl = SLOT(PyList_GET_ITEM(segs, k), S_PAYLOAD);
            Py_ssize_t n = PyBytes_GET_SIZE(pl);
            memcpy(dst, PyBytes_AS_STRING(pl), n);
            dst += n;
        }
    }
    return Py_BuildValue("(nLLKiLLiiiiLL)", m, nbytes, rn, ts_recent, ts_set, rcv_mss, quick,
                         ack_now, ack_pending, dack_set, wupd, wl1, wl2);
}

/* copy_payloads(segs, i, j, dst, at, limit) -> n: the payloads (bytes) of segs[i:j] in
 * order into the writable buffer dst (a byte ring's data area) from index at, wrapping
 * at len(dst), at most limit bytes (the last payload cut there); n = bytes copied. The
 * direct delivery of fpd.fastpath._data_run into a client's RX ring; fpd.fastpath.
 * _py_copy_payloads is the reference. A payload that is not bytes stops the copy. */
static PyObject *copy_payloads(PyObject *self, PyObject *args)
{
    PyObject *segs;
    Py_ssize_t i, j, k, at, limit, size, done = 0;
    Py_buffer dst;
    char *d;
    if (!PyArg_ParseTuple(args, "O!nnw*nn", &PyList_Type, &segs, &i, &j, &dst, &at, &limit))
        return NULL;
    if (seg_type == NULL) {
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_RuntimeError, "fpd._accel.init(Segment) not called");
        return NULL;
    }
    size = dst.len;
    d = (char *)dst.buf;
    if (size <= 0 || at < 0 || at >= size || limit < 0 || i < 0) {
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "copy_payloads: bad ring index or limit");
        return NULL;
    }
    if (limit > size)
        limit = size;
    if (j > PyList_GET_SIZE(segs))
        j = PyList_GET_SIZE(segs);
    for (k = i; k < j && done < limit; k++) {
        PyObject *o = PyList_GET_ITEM(segs, k), *pl;
        const char *p;
        Py_ssize_t n, f;
        if (Py_TYPE(o) != seg_type)
            break;
        pl = SLOT(o, S_PAYLOAD);
        if (pl == NULL || !PyBytes_CheckExact(pl))
            break;
        p = PyBytes_AS_STRING(pl);
        n = PyBytes_GET_SIZE(pl);
        if (n > limit - done)
            n = limit - done;
        f = size - at;                     /* room before the wrap */
        if (n <= f) {
            memcpy(d + at, p, n);
        } else {
            memcpy(d + at, p, f);
            memcpy(d, p + f, n - f);
        }
        at += n;
        if (at >= size)
            at -= size;
        done += n;
    }
    PyBuffer_Release(&dst);
    return PyLong_FromSsize_t(done);
}

static PyMethodDef methods[] = {
    {"wsum", wsum, METH_O, "16-bit big-endian word sum, folded to 0..0xFFFF."},
    {"init", init, METH_O, "init(Segment): the class parse_burst fills."},
    {"parse_burst", parse_burst, METH_VARARGS,
     "parse_burst(umem, addrs, lens, verify) -> (segments or None each, partial count)"},
    {"run_end", run_end, METH_VARARGS,
     "run_end(segs, i) -> j: the run of segs[i]'s 4-tuple"},
    {"data_run", data_run, METH_VARARGS,
     "the loop of fpd.fastpath._data_run over a run of in-order data segments"},
    {"copy_payloads", copy_payloads, METH_VARARGS,
     "copy_payloads(segs, i, j, dst, at, limit) -> bytes copied into the ring dst"},
    {"build_frame", build_frame, METH_VARARGS,
     "build_frame(buf, offset, src_mac, dst_mac, seg) -> length, or None (use Python)"},
    {"stamp_frames", stamp_frames, METH_VARARGS,
     "stamp_frames(umem, addrs, header, l3, payload, mss, last_flags) -> frame lengths"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fpd._accel",
    "Optional C versions of fpd's per-packet primitives (see fpd/_accel.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__accel(void)
{
    return PyModule_Create(&module);
}
