"""ctypes declarations for the C library — declarations only, no logic.

The few libc calls Python's standard library does not offer: ``setns`` (Python 3.11 has no
``os.setns``), ``bind`` with an AF_XDP address (``socket.bind`` knows no
``struct sockaddr_xdp``), ``prctl`` and ``vsnprintf`` (to format libbpf's log messages).
Each carries the C prototype it mirrors next to its ``restype``/``argtypes``. Loading this
module loads only libc (entering a namespace does not need libbpf).

The library is opened with ``use_errno=True`` so ``ctypes.get_errno()`` is valid right after
a call made from the same thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
c_ulong = ctypes.c_ulong
c_size_t = ctypes.c_size_t
c_uint32 = ctypes.c_uint32

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# int vsnprintf(char *str, size_t size, const char *format, va_list ap);
libc.vsnprintf.restype = c_int
libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
vsnprintf = libc.vsnprintf

# int setns(int fd, int nstype);
libc.setns.restype = c_int
libc.setns.argtypes = [c_int, c_int]
setns = libc.setns

# int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
libc.bind.restype = c_int
libc.bind.argtypes = [c_int, c_char_p, c_uint32]
bind = libc.bind

# int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
#           unsigned long arg5);
libc.prctl.restype = c_int
libc.prctl.argtypes = [c_int, c_ulong, c_ulong, c_ulong, c_ulong]
prctl = libc.prctl
