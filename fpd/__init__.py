"""fpd — a fast-path TCP termination daemon: XDP steering, AF_XDP rings and a
user-space TCP engine written in Python."""

__version__ = "0.1.0"
