"""Ethernet / IPv4 / TCP parse and build (pure: no I/O, no clock).

THE CONTRACT (used by fpd.tcp / fpd.stack — keep these names and meanings):

    FIN, SYN, RST, PSH, ACK, URG, ECE, CWR   TCP flag bits (ints)

    class Segment:   one TCP segment, addressing included, options decoded
        src, dst     IPv4 addresses as 4-byte ``bytes`` (network order)
        sport, dport ports (int)
        seq, ack     32-bit sequence / acknowledgement numbers (int)
        flags        int bitmask of the flag bits above
        wnd          the raw 16-bit window field (NOT scaled)
        urp          urgent pointer (int)
        mss          MSS option value or None
        wscale       window-scale shift count or None (as sent, not clamped)
        sack_ok      True when SACK-permitted is present
        tsval, tsecr timestamp option values; tsval is None when absent
        sack         tuple of (left, right) SACK blocks, () when absent
        payload      bytes or memoryview with the segment's data

THE REST OF THE API

Parsing (every parse function raises ``MalformedFrame`` and nothing else, whatever the
input bytes; a frame that is well formed but not IPv4/TCP is not an error: ``None``):

    parse_frame(buf, verify_checksum=True) -> Frame | None
        An Ethernet frame (optionally with ONE 802.1Q tag). ``None`` means "not ours":
        the EtherType is not IPv4 (ARP, IPv6, QinQ, 802.3 length, ...) or the IPv4
        protocol is not TCP. Trailing bytes after the IPv4 total length (Ethernet
        padding) are ignored. IPv4 fragments raise (fpd does not reassemble).
    parse_packet(buf, verify_checksum=True) -> Frame | None
        The same for a bare IPv4 packet (a TUN device); the Frame's MACs are None.

    Frame (__slots__): src_mac, dst_mac (6-byte bytes), vlan (VLAN id or None), ttl,
        ip_id, tos, df (bool), csum, seg (Segment). ``csum`` tells what the TCP checksum
        check found: CSUM_COMPLETE (verified over the data), CSUM_PARTIAL (the field holds
        the kernel's CHECKSUM_PARTIAL value: pseudo header only, data not covered — veth
        frames from a kernel with tx offload on), CSUM_UNCHECKED (verify_checksum=False).

    ``seg.payload`` is a slice of ``buf`` bounded by the IPv4 total length: a memoryview
    when ``buf`` is one (zero copy — only valid while the underlying buffer, e.g. a UMEM
    chunk, is not reused), bytes when ``buf`` is bytes (a bytearray gives a bytearray
    copy). Copy it before the buffer is recycled if you need it longer.

    Strictness: IHL < 5, total length shorter than the headers or longer than the
    buffer, TCP data offset < 5 or beyond the segment, an option without room for its
    length byte, an option length < 2 or running past the header, a known option with a
    wrong length (MSS != 4, WS != 3, SACK-permitted != 2, TS != 10, SACK not 2+8n with
    n >= 1), a bad IPv4 header checksum and a bad TCP checksum all raise. Unknown option
    kinds are skipped by their length; parsing stops at EOL. A repeated option: the last
    one wins.

Building (bad arguments raise ValueError; nothing here raises MalformedFrame):

    build_frame(src_mac, dst_mac, seg, ttl=64, ip_id=0, vlan=None, df=True, tos=0) -> bytes
    build_frame_into(buf, offset, src_mac, dst_mac, seg, ...same...) -> int (frame length)
        Writes the frame into a writable buffer (bytearray, memoryview of a UMEM mmap).
    build_packet(seg, ttl=64, ip_id=0, df=True, tos=0) -> bytes    (IPv4, no Ethernet)
    frame_len(seg, vlan=None) -> int    bytes build_frame_into will write

    IPv4 and TCP checksums are always complete. Options are laid out the way Linux lays
    them out (every option group is a 4-byte word, so no padding is ever needed):
        MSS                    02 04 mss
        SACK-permitted + TS    04 02 08 0a tsval tsecr      (01 01 08 0a ... without SACK-OK)
        SACK-permitted alone   01 01 04 02                  (when there is no TS)
        window scale           01 03 03 shift
        SACK blocks            01 01 05 len  (left right)*n
    e.g. SYN "mss, sackOK, TS, nop, wscale"; data "nop, nop, TS"; "nop, nop, TS, nop,
    nop, sack". SACK blocks that do not fit in the 40 option bytes are dropped from the
    end (4 fit without TS, 3 with TS, 2 on a SYN that carries every other option) — the
    Linux behaviour; ``options_len(seg)`` tells how many option bytes a segment takes.

Checksums (RFC 1071 arithmetic, done as one big-integer ``% 0xFFFF``):

    ones_sum(data, initial=0) -> int     folded one's-complement sum, NOT complemented
    checksum(data, initial=0) -> int     the Internet checksum (complemented)
    pseudo_header_sum(src, dst, length, proto=6) -> int
        folded sum of the IPv4 pseudo header: exactly what Linux leaves in the TCP
        checksum field under CHECKSUM_PARTIAL
    tcp_checksum(src, dst, tcp_bytes) -> int     value for the field (field zeroed in input)
    tcp_checksum_state(src, dst, tcp_bytes) -> CSUM_COMPLETE | CSUM_PARTIAL, or raises

Helpers: mac_to_bytes, mac_to_str, ip_to_bytes, ip_to_str, seg_len, options_len,
Segment.copy(**changes), Segment.fields().
"""

import ipaddress
import os
import struct

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_TCP = 6

ETH_HLEN = 14
VLAN_HLEN = 4
IPV4_HLEN = 20
TCP_HLEN = 20
TCP_MAX_OPTLEN = 40

# TCP option kinds (IANA)
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WINDOW = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8

# Frame.csum
CSUM_UNCHECKED = 0
CSUM_COMPLETE = 1
CSUM_PARTIAL = 2


class MalformedFrame(ValueError):
    """The only exception the parse functions raise, for any input bytes.

    ``str(exc)`` is a short fixed reason ("bad TCP checksum", "IPv4 fragment", ...)
    without packet-specific numbers, so it can be used as a statistics key.
    """


# --------------------------------------------------------------------------------------
# Header layouts: one struct per header, network byte order, C layout alongside.
# The format strings are kept so the build path can pack several headers in one call.

_ETH_FMT = "6s6sH"
ETH_HDR = struct.Struct("!" + _ETH_FMT)
"""struct ethhdr { u8 h_dest[6]; u8 h_source[6]; __be16 h_proto; };          14 bytes"""

_VLAN_FMT = "HH"
VLAN_TAG = struct.Struct("!" + _VLAN_FMT)
"""struct vlan_hdr { __be16 h_vlan_TCI;                 /* PCP:3 DEI:1 VID:12 */
                     __be16 h_vlan_encapsulated_proto; };
   follows an ethhdr whose h_proto is 0x8100;                                  4 bytes"""

_IPV4_FMT = "BBHHHBBH4s4s"
IPV4_HDR = struct.Struct("!" + _IPV4_FMT)
"""struct iphdr { u8 version:4, ihl:4; u8 tos; __be16 tot_len; __be16 id;
                  __be16 frag_off;        /* flags 3 bits (reserved, DF, MF), offset 13 */
                  u8 ttl; u8 protocol; __sum16 check; __be32 saddr; __be32 daddr; };
   then (ihl - 5) * 4 bytes of options;                                       20 bytes"""

_TCP_FMT = "HHIIBBHHH"
TCP_HDR = struct.Struct("!" + _TCP_FMT)
"""struct tcphdr { __be16 source; __be16 dest; __be32 seq; __be32 ack_seq;
                   u8 doff:4, res1:3, ae:1; u8 flags;    /* CWR ECE URG ACK PSH RST SYN FIN */
                   __be16 window; __sum16 check; __be16 urg_ptr; };
   then (doff - 5) * 4 bytes of options;                                      20 bytes"""

_OPT_TS_FMT = "III"
TCP_OPT_TS = struct.Struct("!" + _OPT_TS_FMT)
"""The 12-byte timestamp group: { __be32 lead; __be32 tsval; __be32 tsecr; } where
   lead is NOP NOP 8 10 (0x0101080a) or SACK-permitted 4 2 + 8 10 (0x0402080a)."""

TCP_OPT_MSS = struct.Struct("!BBH")
"""{ u8 kind = 2; u8 len = 4; __be16 mss; }"""

TCP_OPT_WS = struct.Struct("!BBBB")
"""{ u8 nop = 1; u8 kind = 3; u8 len = 3; u8 shift; }"""

TCP_OPT_U32X2 = struct.Struct("!II")
"""Two 32-bit values: a SACK block { __be32 left; __be32 right; } or TS val/ecr."""

# Composite layouts for the build path (one pack per frame).
_IP_TCP = struct.Struct("!" + _IPV4_FMT + _TCP_FMT)            # 40 bytes
_IP_TCP_TS = struct.Struct("!" + _IPV4_FMT + _TCP_FMT + _OPT_TS_FMT)  # 52 bytes
_ETH_VLAN = struct.Struct("!" + _ETH_FMT + _VLAN_FMT)          # 18 bytes: tagged L2

_LEAD_NOP_NOP_TS = 0x0101080A
_LEAD_SACKOK_TS = 0x0402080A
_NOP_NOP_SACKOK = b"\x01\x01\x04\x02"

_IP_FRAG_MASK = 0x3FFF  # MF flag + fragment offset
_IP_DF = 0x4000


class Segment:
    __slots__ = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "wnd", "urp",
                 "mss", "wscale", "sack_ok", "tsval", "tsecr", "sack", "payload")

    def __init__(self, src=b"\0\0\0\0", dst=b"\0\0\0\0", sport=0, dport=0, seq=0, ack=0,
                 flags=0, wnd=0, urp=0, mss=None, wscale=None, sack_ok=False,
                 tsval=None, tsecr=0, sack=(), payload=b""):
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.wnd = wnd
        self.urp = urp
        self.mss = mss
        self.wscale = wscale
        self.sack_ok = sack_ok
        self.tsval = tsval
        self.tsecr = tsecr
        self.sack = sack
        self.payload = payload

    def __repr__(self):
        names = "FSRPAUEC"
        fl = "".join(n for i, n in enumerate(names) if self.flags >> i & 1) or "."
        opts = []
        if self.mss is not None:
            opts.append(f"mss {self.mss}")
        if self.wscale is not None:
            opts.append(f"wscale {self.wscale}")
        if self.sack_ok:
            opts.append("sackOK")
        if self.tsval is not None:
            opts.append(f"TS val {self.tsval} ecr {self.tsecr}")
        if self.sack:
            opts.append("sack " + " ".join(f"{l}:{r}" for l, r in self.sack))
        return (f"<Segment {self.sport}>{self.dport} [{fl}] seq {self.seq} ack {self.ack} "
                f"win {self.wnd} len {len(self.payload)}" + (f" <{', '.join(opts)}>" if opts else "") + ">")

    def copy(self, **changes):
        """A shallow copy with some fields replaced: ``seg.copy(seq=1, payload=b"")``."""
        new = Segment.__new__(Segment)
        for name in Segment.__slots__:
            setattr(new, name, getattr(self, name))
        for name, value in changes.items():
            setattr(new, name, value)  # AttributeError on an unknown name
        return new

    def fields(self):
        """All fields as a tuple (payload as bytes, sack as a tuple of tuples), for
        comparing segments by value: ``a.fields() == b.fields()``."""
        return (bytes(self.src), bytes(self.dst), self.sport, self.dport, self.seq,
                self.ack, self.flags, self.wnd, self.urp, self.mss, self.wscale,
                bool(self.sack_ok), self.tsval, self.tsecr if self.tsval is not None else 0,
                tuple(tuple(b) for b in self.sack), bytes(self.payload))


def seg_len(seg):
    """Sequence space the segment occupies: payload bytes, plus 1 for SYN, plus 1 for FIN."""
    return len(seg.payload) + (seg.flags & SYN and 1) + (seg.flags & FIN and 1)


class Frame:
    """A parsed Ethernet/IPv4/TCP frame (see the module docstring)."""

    __slots__ = ("src_mac", "dst_mac", "vlan", "ttl", "ip_id", "tos", "df", "csum", "seg")

    def __init__(self, src_mac, dst_mac, vlan, ttl, ip_id, tos, df, csum, seg):
        self.src_mac = src_mac
        self.dst_mac = dst_mac
        self.vlan = vlan
        self.ttl = ttl
        self.ip_id = ip_id
        self.tos = tos
        self.df = df
        self.csum = csum
        self.seg = seg

    @property
    def csum_partial(self):
        """True when the TCP checksum field held the kernel's CHECKSUM_PARTIAL value."""
        return self.csum == CSUM_PARTIAL

    def __repr__(self):
        l2 = ""
        if self.src_mac is not None:
            l2 = f"{mac_to_str(self.src_mac)} > {mac_to_str(self.dst_mac)} "
        if self.vlan is not None:
            l2 += f"vlan {self.vlan} "
        s = self.seg
        cs = ("unchecked", "complete", "partial")[self.csum]
        return (f"<Frame {l2}{ip_to_str(s.src)} > {ip_to_str(s.dst)} ttl {self.ttl} "
                f"id {self.ip_id} csum {cs} {s!r}>")


# --------------------------------------------------------------------------------------
# Checksums.
#
# The one's-complement sum of 16-bit big-endian words is congruent, modulo 0xFFFF, to
# the whole buffer read as one big-endian integer (2**16 == 1 mod 0xFFFF), so a single
# int.from_bytes(...) % 0xFFFF does the word loop in C. The folded one's-complement sum
# with end-around carry is 0 only when every word is 0; otherwise it lies in
# 1..0xFFFF, so a remainder of 0 from a non-zero sum stands for 0xFFFF ("negative
# zero"). An odd trailing byte is the high byte of a last word padded with zero: shift
# left by 8.

def _wsum_py(data):
    """Reference: the buffer as one big-endian integer (odd length: zero-padded word),
    congruent modulo 0xFFFF to its 16-bit word sum, 0 only for all-zero data."""
    n = int.from_bytes(data, "big")
    return n << 8 if len(data) & 1 else n


# The optional C accelerator (fpd/_accel.c, built by the normal install) gives the same
# value modulo 0xFFFF, already folded; FPD_PURE_PYTHON=1 forces the reference.
try:
    if os.environ.get("FPD_PURE_PYTHON"):
        raise ImportError("FPD_PURE_PYTHON set")
    from . import _accel
    from ._accel import wsum as _wsum
    ACCEL = True
except ImportError:
    _accel = None
    _wsum = _wsum_py
    ACCEL = False


def ones_sum(data, initial=0):
    """Folded 16-bit one's-complement sum of ``data`` plus ``initial`` (not complemented).

    ``initial`` is any non-negative partial sum, e.g. ``pseudo_header_sum(...)``.
    Returns 0 only when data and initial are all zero, otherwise 1..0xFFFF.
    """
    n = _wsum(data) + initial
    if not n:
        return 0
    return n % 0xFFFF or 0xFFFF


def checksum(data, initial=0):
    """Internet checksum (RFC 1071) of ``data``, adding the partial sum ``initial``.

    Computed over a header whose checksum field holds the right value, the result is 0.
    """
    n = _wsum(data) + initial
    if not n:
        return 0xFFFF
    return -n % 0xFFFF


def pseudo_header_sum(src, dst, length, proto=IPPROTO_TCP):
    """Folded, non-complemented sum of the IPv4 pseudo header (src, dst, 0, proto, length).

    This is exactly the value Linux leaves in the TCP checksum field of a
    CHECKSUM_PARTIAL skb (``~tcp_v4_check(len, saddr, daddr, 0)``).
    """
    n = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length
    return n % 0xFFFF or 0xFFFF  # never 0: proto is not 0


def tcp_checksum(src, dst, tcp_bytes):
    """The TCP checksum field value for ``tcp_bytes`` (header with a zeroed checksum
    field, options and payload) sent from ``src`` to ``dst`` (4-byte addresses)."""
    return checksum(tcp_bytes, int.from_bytes(src, "big") + int.from_bytes(dst, "big")
                    + IPPROTO_TCP + len(tcp_bytes))


def tcp_checksum_state(src, dst, tcp_bytes):
    """Check the checksum field inside ``tcp_bytes``: CSUM_COMPLETE when it covers the
    whole segment, CSUM_PARTIAL when it holds the pseudo-header-only CHECKSUM_PARTIAL
    value, else raise MalformedFrame("bad TCP checksum")."""
    tlen = len(tcp_bytes)
    if tlen < TCP_HLEN:
        raise MalformedFrame("truncated TCP header")
    field = (tcp_bytes[16] << 8) | tcp_bytes[17]
    return _tcp_csum_state(tcp_bytes, 0, tlen,
                           int.from_bytes(src, "big") + int.from_bytes(dst, "big"), field)


def _tcp_csum_state(buf, l4, tend, addr_sum, field):
    tlen = tend - l4
    n = _wsum(buf[l4:tend])
    ph = addr_sum + IPPROTO_TCP + tlen
    if not (n + ph) % 0xFFFF:  # n + ph > 0 always (proto), so remainder 0 == folded 0xFFFF
        return CSUM_COMPLETE
    if field == (ph % 0xFFFF or 0xFFFF):
        return CSUM_PARTIAL
    raise MalformedFrame("bad TCP checksum")


# --------------------------------------------------------------------------------------
# Parsing.

def parse_frame(buf, verify_checksum=True):
    """Parse an Ethernet frame; see the module docstring. Returns Frame or None."""
    end = len(buf)
    if end < ETH_HLEN:
        raise MalformedFrame("truncated Ethernet header")
    dst_mac, src_mac, etype = ETH_HDR.unpack_from(buf, 0)
    vlan = None
    off = ETH_HLEN
    if etype == ETH_P_8021Q or etype == ETH_P_8021AD:  # one tag, as bpf/steer.c
        if end < ETH_HLEN + VLAN_HLEN:
            raise MalformedFrame("truncated VLAN tag")
        tci, etype = VLAN_TAG.unpack_from(buf, ETH_HLEN)
        vlan = tci & 0x0FFF
        off = ETH_HLEN + VLAN_HLEN
    if etype != ETH_P_IP:
        return None
    fr = _parse_ipv4(buf, off, end, verify_checksum)
    if fr is not None:
        fr.src_mac = src_mac
        fr.dst_mac = dst_mac
        fr.vlan = vlan
    return fr


def parse_packet(buf, verify_checksum=True):
    """Parse a bare IPv4 packet (no Ethernet header). Returns Frame (MACs None) or None
    when the packet is not IPv4/TCP (an IPv6 packet returns None)."""
    end = len(buf)
    if end >= 1 and buf[0] >> 4 == 6:
        return None
    return _parse_ipv4(buf, 0, end, verify_checksum)


def _parse_ipv4(buf, off, end, verify):
    if end - off < IPV4_HLEN:
        raise MalformedFrame("truncated IPv4 header")
    vihl, tos, tot, ip_id, frag, ttl, proto, hsum, src, dst = IPV4_HDR.unpack_from(buf, off)
    if vihl >> 4 != 4:
        raise MalformedFrame("IP version is not 4")
    ihl = (vihl & 0x0F) << 2
    if ihl < IPV4_HLEN:
        raise MalformedFrame("IPv4 header length < 20")
    if tot < ihl:
        raise MalformedFrame("IPv4 total length < header length")
    tend = off + tot
    if tend > end:
        raise MalformedFrame("IPv4 packet truncated")
    if verify:
        addr_sum = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
        s = (vihl << 8) + tos + tot + ip_id + frag + (ttl << 8) + proto + hsum + addr_sum
        if ihl > IPV4_HLEN:
            s += int.from_bytes(buf[off + IPV4_HLEN:off + ihl], "big")
        if s % 0xFFFF:
            raise MalformedFrame("bad IPv4 header checksum")
    if proto != IPPROTO_TCP:
        return None
    if frag & _IP_FRAG_MASK:
        raise MalformedFrame("IPv4 fragment")
    l4 = off + ihl
    if tend - l4 < TCP_HLEN:
        raise MalformedFrame("truncated TCP header")
    sport, dport, seq, ack, doff, flags, wnd, tsum, urp = TCP_HDR.unpack_from(buf, l4)
    thl = (doff >> 4) << 2
    if thl < TCP_HLEN:
        raise MalformedFrame("TCP data offset < 5")
    if l4 + thl > tend:
        raise MalformedFrame("TCP data offset beyond segment")
    csum = _tcp_csum_state(buf, l4, tend, addr_sum, tsum) if verify else CSUM_UNCHECKED

    mss = wscale = tsval = None
    sack_ok = False
    tsecr = 0
    sack = ()
    if thl == 32:
        lead, v, e = TCP_OPT_TS.unpack_from(buf, l4 + TCP_HLEN)
        if lead == _LEAD_NOP_NOP_TS:  # the usual data-segment layout
            tsval = v
            tsecr = e
        else:
            mss, wscale, sack_ok, tsval, tsecr, sack = _parse_options(buf, l4 + TCP_HLEN, l4 + 32)
    elif thl > TCP_HLEN:
        mss, wscale, sack_ok, tsval, tsecr, sack = _parse_options(buf, l4 + TCP_HLEN, l4 + thl)

    seg = Segment(src, dst, sport, dport, seq, ack, flags, wnd, urp, mss, wscale, sack_ok,
                  tsval, tsecr, sack, buf[l4 + thl:tend])
    return Frame(None, None, None, ttl, ip_id, tos, bool(frag & _IP_DF), csum, seg)


def _parse_options(buf, i, end):
    """Decode TCP options in buf[i:end]. Returns (mss, wscale, sack_ok, tsval, tsecr, sack)."""
    mss = wscale = tsval = None
    sack_ok = False
    tsecr = 0
    sack = ()
    while i < end:
        kind = buf[i]
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if kind == TCPOPT_EOL:
            break
        if i + 1 >= end:
            raise MalformedFrame("TCP option without length")
        olen = buf[i + 1]
        if olen < 2:
            raise MalformedFrame("TCP option length < 2")
        if i + olen > end:
            raise MalformedFrame("TCP option runs past header")
        if kind == TCPOPT_TIMESTAMP:
            if olen != 10:
                raise MalformedFrame("bad TCP timestamp option length")
            tsval, tsecr = TCP_OPT_U32X2.unpack_from(buf, i + 2)
        elif kind == TCPOPT_MSS:
            if olen != 4:
                raise MalformedFrame("bad TCP MSS option length")
            mss = (buf[i + 2] << 8) | buf[i + 3]
        elif kind == TCPOPT_WINDOW:
            if olen != 3:
                raise MalformedFrame("bad TCP window scale option length")
            wscale = buf[i + 2]
        elif kind == TCPOPT_SACK_PERM:
            if olen != 2:
                raise MalformedFrame("bad TCP SACK-permitted option length")
            sack_ok = True
        elif kind == TCPOPT_SACK:
            if olen < 10 or (olen - 2) & 7:
                raise MalformedFrame("bad TCP SACK option length")
            sack = tuple(TCP_OPT_U32X2.unpack_from(buf, j) for j in range(i + 2, i + olen, 8))
        i += olen
    return mss, wscale, sack_ok, tsval, tsecr, sack


# --------------------------------------------------------------------------------------
# Building.

def options_len(seg):
    """Number of TCP option bytes build_* emits for ``seg`` (a multiple of 4, <= 40)."""
    n = 0
    if seg.mss is not None:
        n += 4
    if seg.tsval is not None:
        n += 12
    elif seg.sack_ok:
        n += 4
    if seg.wscale is not None:
        n += 4
    if seg.sack:
        blocks = min(len(seg.sack), (TCP_MAX_OPTLEN - n - 4) >> 3)
        if blocks > 0:
            n += 4 + 8 * blocks
    return n


def encode_options(seg):
    """The TCP option bytes for ``seg``, in Linux's layout (see the module docstring)."""
    parts = []
    n = 0
    try:
        if seg.mss is not None:
            parts.append(TCP_OPT_MSS.pack(TCPOPT_MSS, 4, seg.mss))
            n += 4
        if seg.tsval is not None:
            parts.append(TCP_OPT_TS.pack(_LEAD_SACKOK_TS if seg.sack_ok else _LEAD_NOP_NOP_TS,
                                         seg.tsval, seg.tsecr))
            n += 12
        elif seg.sack_ok:
            parts.append(_NOP_NOP_SACKOK)
            n += 4
        if seg.wscale is not None:
            parts.append(TCP_OPT_WS.pack(TCPOPT_NOP, TCPOPT_WINDOW, 3, seg.wscale))
            n += 4
        if seg.sack:
            blocks = min(len(seg.sack), (TCP_MAX_OPTLEN - n - 4) >> 3)
            if blocks > 0:
                parts.append(bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK, 2 + 8 * blocks)))
                for k in range(blocks):
                    left, right = seg.sack[k]
                    parts.append(TCP_OPT_U32X2.pack(left, right))
    except struct.error as e:
        raise ValueError(f"TCP option value out of range: {e}") from None
    return b"".join(parts)


def _l3_headers(seg, ttl, ip_id, df, tos):
    """Everything from the IPv4 header on, checksums computed arithmetically from the
    field values (no second pass over the written bytes).

    Returns (struct, values, option bytes not in struct, payload)."""
    src = seg.src
    dst = seg.dst
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("Segment.src and .dst must be 4-byte IPv4 addresses")
    payload = seg.payload
    plen = len(payload)
    tsval = seg.tsval
    if seg.mss is None and seg.wscale is None and not seg.sack_ok and not seg.sack:
        opts = b""
        if tsval is None:
            st = _IP_TCP
            thl = TCP_HLEN
            osum = 0
        else:
            st = _IP_TCP_TS
            thl = TCP_HLEN + 12
            tsecr = seg.tsecr
            osum = _LEAD_NOP_NOP_TS + tsval + tsecr
    else:
        opts = encode_options(seg)
        st = _IP_TCP
        thl = TCP_HLEN + len(opts)
        osum = int.from_bytes(opts, "big")
    tlen = thl + plen
    tot = IPV4_HLEN + tlen
    if tot > 0xFFFF:
        raise ValueError(f"segment too large for IPv4: {tot} bytes")
    addr_sum = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    psum = _wsum(payload)
    sport = seg.sport
    dport = seg.dport
    seq = seg.seq
    ack = seg.ack
    flags = seg.flags
    wnd = seg.wnd
    urp = seg.urp
    # Big-endian 32-bit fields need no splitting: x == hi*65536 + lo == hi + lo (mod 0xFFFF).
    tcsum = -(addr_sum + IPPROTO_TCP + tlen + sport + dport + seq + ack + (thl << 10)
              + flags + wnd + urp + osum + psum) % 0xFFFF
    frag = _IP_DF if df else 0
    icsum = -(0x4500 + tos + tot + ip_id + frag + (ttl << 8) + IPPROTO_TCP + addr_sum) % 0xFFFF
    if thl == TCP_HLEN + 12 and not opts:
        values = (0x45, tos, tot, ip_id, frag, ttl, IPPROTO_TCP, icsum, src, dst,
                  sport, dport, seq, ack, thl << 2, flags, wnd, tcsum, urp,
                  _LEAD_NOP_NOP_TS, tsval, tsecr)
    else:
        values = (0x45, tos, tot, ip_id, frag, ttl, IPPROTO_TCP, icsum, src, dst,
                  sport, dport, seq, ack, thl << 2, flags, wnd, tcsum, urp)
    return st, values, opts, payload


def _mac(m):
    if isinstance(m, str):
        return mac_to_bytes(m)
    if len(m) != 6:
        raise ValueError("a MAC address is 6 bytes")
    return m


def frame_len(seg, vlan=None):
    """Length of the frame build_frame/build_frame_into produce for ``seg``."""
    return ((ETH_HLEN if vlan is None else ETH_HLEN + VLAN_HLEN) + IPV4_HLEN + TCP_HLEN
            + options_len(seg) + len(seg.payload))


def build_frame_into(buf, offset, src_mac, dst_mac, seg, ttl=64, ip_id=0, vlan=None,
                     df=True, tos=0):
    """Write the Ethernet/IPv4/TCP frame for ``seg`` into ``buf`` at ``offset`` (a
    bytearray, or a writable memoryview such as a UMEM chunk) and return its length.

    MACs are 6-byte bytes (a "aa:bb:.." string is converted, at a cost: convert once).
    ``vlan`` is a VLAN id (0..4095) for one 802.1Q tag (priority 0), or None.
    Raises ValueError on bad arguments or when the frame does not fit in ``buf``.
    With the C accelerator, a frame of the common shape (no VLAN, the default IP fields,
    no TCP option but a timestamp) is written by ``_accel.build_frame``, byte for byte
    the same; everything else, and every error, by the Python below (the reference).
    """
    if _build1 is not None and vlan is None and ttl == 64 and not ip_id and df \
            and not tos:
        n = _build1(buf, offset, src_mac, dst_mac, seg)
        if n is not None:
            return n
    return _build_frame_into_py(buf, offset, src_mac, dst_mac, seg, ttl, ip_id, vlan,
                                df, tos)


def _build_frame_into_py(buf, offset, src_mac, dst_mac, seg, ttl=64, ip_id=0, vlan=None,
                         df=True, tos=0):
    """:func:`build_frame_into` in Python: every frame shape, the reference."""
    st, values, opts, payload = _l3_headers(seg, ttl, ip_id, df, tos)
    if type(src_mac) is not bytes or len(src_mac) != 6:      # the worker passes bytes
        src_mac = _mac(src_mac)
    if type(dst_mac) is not bytes or len(dst_mac) != 6:
        dst_mac = _mac(dst_mac)
    l3 = offset + (ETH_HLEN if vlan is None else ETH_HLEN + VLAN_HLEN)
    p = l3 + st.size
    olen = len(opts)
    plen = len(payload)
    end = p + olen + plen
    if offset < 0 or end > len(buf):
        raise ValueError(f"frame of {end - offset} bytes does not fit in the buffer at offset {offset}")
    try:
        if vlan is None:
            ETH_HDR.pack_into(buf, offset, dst_mac, src_mac, ETH_P_IP)
        else:
            if not 0 <= vlan <= 0x0FFF:
                raise ValueError(f"VLAN id out of range: {vlan}")
            _ETH_VLAN.pack_into(buf, offset, dst_mac, src_mac, ETH_P_8021Q, vlan, ETH_P_IP)
        st.pack_into(buf, l3, *values)
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None
    if olen:
        buf[p:p + olen] = opts
        p += olen
    if plen:
        buf[p:end] = payload
    return end - offset


def build_frame(src_mac, dst_mac, seg, ttl=64, ip_id=0, vlan=None, df=True, tos=0):
    """The complete Ethernet/IPv4/TCP frame for ``seg`` as bytes (see build_frame_into)."""
    st, values, opts, payload = _l3_headers(seg, ttl, ip_id, df, tos)
    src_mac = _mac(src_mac)
    dst_mac = _mac(dst_mac)
    try:
        if vlan is None:
            l2 = ETH_HDR.pack(dst_mac, src_mac, ETH_P_IP)
        else:
            if not 0 <= vlan <= 0x0FFF:
                raise ValueError(f"VLAN id out of range: {vlan}")
            l2 = _ETH_VLAN.pack(dst_mac, src_mac, ETH_P_8021Q, vlan, ETH_P_IP)
        return b"".join((l2, st.pack(*values), opts, payload))
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None


def build_packet(seg, ttl=64, ip_id=0, df=True, tos=0):
    """The IPv4/TCP packet for ``seg`` without an Ethernet header (for a TUN device)."""
    st, values, opts, payload = _l3_headers(seg, ttl, ip_id, df, tos)
    try:
        return b"".join((st.pack(*values), opts, payload))
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None


# --------------------------------------------------------------------------------------
# Bursts: parse a whole RX burst, stamp a run of TX frames from one header.

def _parse_burst_py(buf, addrs, lens, verify=True):
    """Reference for :func:`parse_burst`: ``parse_frame`` frame by frame."""
    segs = []
    partial = 0
    for a, ln in zip(addrs, lens):
        try:
            fr = parse_frame(buf[a:a + ln], verify)
        except MalformedFrame:
            fr = None
        if fr is None:
            segs.append(None)
            continue
        if fr.csum == CSUM_PARTIAL:
            partial += 1
        segs.append(fr.seg)
    return segs, partial


def parse_burst(buf, addrs, lens, verify=True):
    """Parse the frames ``buf[addrs[i]:addrs[i] + lens[i]]`` of one RX burst.

    Returns ``(segments, partial)``: ``segments[i]`` is the frame's Segment, or None when
    the caller must parse it with :func:`parse_frame` itself (not IPv4/TCP, malformed:
    parse_frame says which; with the C accelerator also any frame of a less common
    shape -- a VLAN tag, IP options, TCP options other than "NOP NOP TS" -- which
    parse_frame takes as usual). ``partial`` counts the returned segments whose TCP
    checksum was the CHECKSUM_PARTIAL value. A returned Segment equals
    ``parse_frame(...).seg`` field for field; its payload is a memoryview into ``buf``
    (pure Python) or a bytes copy (C). ``addrs`` and ``lens`` are lists."""
    if _accel is not None:
        return _accel.parse_burst(buf, addrs, lens, verify)
    return _parse_burst_py(buf, addrs, lens, verify)


def template_header(src_mac, dst_mac, tmpl, vlan=None):
    """The frame header (Ethernet .. TCP options) :func:`stamp_frames` copies: ``tmpl``
    built with no payload. Returns ``(header bytes, offset of the IPv4 header)``."""
    if tmpl.payload:
        tmpl = tmpl.copy(payload=b"")
    return build_frame(src_mac, dst_mac, tmpl, vlan=vlan), (
        ETH_HLEN if vlan is None else ETH_HLEN + VLAN_HLEN)


def _stamp_frames_py(buf, addrs, src_mac, dst_mac, tmpl, payload, mss, last_flags,
                     vlan=None):
    lens = []
    n = len(addrs)
    seq = tmpl.seq
    for i, a in enumerate(addrs):
        part = payload[i * mss:(i + 1) * mss]
        seg = tmpl.copy(seq=(seq + i * mss) & 0xFFFFFFFF, payload=part,
                        flags=last_flags if i == n - 1 else tmpl.flags)
        lens.append(build_frame_into(buf, a, src_mac, dst_mac, seg, vlan=vlan))
    return lens


def stamp_frames(buf, addrs, src_mac, dst_mac, tmpl, payload, mss, last_flags, vlan=None,
                 header=None):
    """Template transmit (software TSO): write ``len(addrs)`` frames into ``buf`` at
    ``addrs``, frame i carrying ``payload[i*mss:(i+1)*mss]`` at sequence
    ``tmpl.seq + i*mss``, every other field from ``tmpl`` (whose payload is ignored);
    the last frame's TCP flags are ``last_flags``. Each frame is byte for byte what
    :func:`build_frame_into` writes for that segment (default ttl, ip_id 0, DF).
    ``payload`` must fill every frame but the last, which gets 1..mss bytes.
    ``header`` is :func:`template_header`'s result, if the caller has it.
    Returns the frame lengths."""
    n = len(addrs)
    if not n or not (n - 1) * mss < len(payload) <= n * mss:
        raise ValueError("stamp_frames: payload does not fill the frames")
    if _accel is None:
        return _stamp_frames_py(buf, addrs, src_mac, dst_mac, tmpl, payload, mss,
                                last_flags, vlan)
    if header is None:
        header = template_header(src_mac, dst_mac, tmpl, vlan)
    return _accel.stamp_frames(buf, addrs, header[0], header[1], payload, mss, last_flags)


if _accel is not None:
    _accel.init(Segment)

#: _accel.build_frame (one frame of the common shape in C), or None (pure Python;
#: FPD_ACCEL_BUILD=0 in the environment chooses that, for A/B measurements)
_build1 = None if os.environ.get("FPD_ACCEL_BUILD", "1") in ("0", "no", "false") \
    else getattr(_accel, "build_frame", None)


# --------------------------------------------------------------------------------------
# Address helpers.

def mac_to_bytes(s):
    """"aa:bb:cc:dd:ee:ff" (or with '-') -> 6 bytes. Raises ValueError."""
    parts = s.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {s!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {s!r}") from None


def mac_to_str(b):
    """6 bytes -> "aa:bb:cc:dd:ee:ff"."""
    if len(b) != 6:
        raise ValueError("a MAC address is 6 bytes")
    return bytes(b).hex(":")


def ip_to_bytes(s):
    """"10.77.0.1" -> 4 bytes (strict dotted quad). Raises ValueError."""
    return ipaddress.IPv4Address(s).packed


def ip_to_str(b):
    """4 bytes -> "10.77.0.1"."""
    if len(b) != 4:
        raise ValueError("an IPv4 address is 4 bytes")
    return "%d.%d.%d.%d" % tuple(b)
