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
"""

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80


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
