"""asyncio streams over fpd sockets.

    from fpd import aio

    async def handle(reader, writer):
        line = await reader.readline()
        writer.write(line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await aio.start_server(handle, "", 8080)     # port steered by fpd
    async with server:
        await server.serve_forever()

    reader, writer = await aio.open_connection("10.77.0.2", 80)

``start_server`` and ``open_connection`` mirror :func:`asyncio.start_server` and
:func:`asyncio.open_connection`; the reader and writer behave like asyncio's
StreamReader/StreamWriter (read, readexactly, readline, readuntil, at_eof, async
iteration; write, writelines, drain, write_eof, close, wait_closed, is_closing,
get_extra_info). They are built on non-blocking :mod:`fpd.client` sockets and the
event loop's ``add_reader``/``add_writer`` on the sockets' readiness descriptors
(``fileno()``), so any asyncio event loop works. Not supported: ``ssl``,
``sock=``/``path=`` arguments (use the standard asyncio functions for those).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os

from . import client as _client

__all__ = ["open_connection", "start_server", "StreamReader", "StreamWriter", "Server"]

_LIMIT = 2 ** 16
_READ = 65536
_HIGH = 64 * 1024            # drain() waits while more than this is buffered
_LOW = 16 * 1024             # ... until it is down to this
log = logging.getLogger("fpd.aio")


async def _wait_fd(loop, fd, writer: bool):
    fut = loop.create_future()

    def ready():
        if not fut.done():
            fut.set_result(None)
    if writer:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if writer:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


class StreamReader:
    """Reads from a non-blocking fpd socket (asyncio.StreamReader's interface)."""

    def __init__(self, sock, limit: int = _LIMIT, loop=None):
        self._sock = sock
        self._limit = limit
        self._loop = loop or asyncio.get_running_loop()
        self._buf = bytearray()
        self._eof = False
        self._exc = None
        self._fd = sock.fileno()

    def __repr__(self):
        return f"<fpd.aio.StreamReader {len(self._buf)} bytes{' eof' if self._eof else ''}>"

    def exception(self):
        return self._exc

    def set_exception(self, exc) -> None:
        self._exc = exc

    def feed_eof(self) -> None:
        self._eof = True

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def _fill_nowait(self) -> bool:
        """One recv into the buffer; False if nothing was there."""
        try:
            data = self._sock.recv(max(self._limit, _READ))
        except BlockingIOError:
            return False
        except OSError as e:
            self._exc = e
            raise
        if data:
            self._buf += data
        else:
            self._eof = True
        return True

    async def _fill(self) -> None:
        if self._exc is not None:
            raise self._exc
        if self._eof:
            return
        while not self._fill_nowait():
            await _wait_fd(self._loop, self._fd, False)

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if n < 0:
            while not self._eof:
                await self._fill()
            data = bytes(self._buf)
            self._buf.clear()
            return data
        if not self._buf and not self._eof:
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._buf) < n:
            if self._eof:
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, n)
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def readuntil(self, separator=b"\n") -> bytes:
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        seplen = len(separator)
        start = 0
        while True:
            i = self._buf.find(separator, start)
            if i >= 0:
                end = i + seplen
                if end > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", i)
                data = bytes(self._buf[:end])
                del self._buf[:end]
                return data
            if len(self._buf) > self._limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", len(self._buf))
            if self._eof:
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, None)
            start = max(0, len(self._buf) - seplen + 1)
            await self._fill()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            i = self._buf.find(b"\n")
            if i >= 0:
                del self._buf[:i + 1]
            else:
                self._buf.clear()
            raise ValueError(e.args[0])

    def __aiter__(self):
        return self

    async def __anext__(self):
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class _Transport:
    """Just enough of an asyncio transport for code that reaches for one."""

    def __init__(self, writer):
        self._writer = writer

    def get_extra_info(self, name, default=None):
        return self._writer.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer._abort()

    def write(self, data) -> None:
        self._writer.write(data)

    def get_write_buffer_size(self) -> int:
        return len(self._writer._wbuf)


class StreamWriter:
    """Writes to a non-blocking fpd socket (asyncio.StreamWriter's interface)."""

    def __init__(self, sock, reader, loop=None):
        self._sock = sock
        self._reader = reader
        self._loop = loop or asyncio.get_running_loop()
        self._wbuf = bytearray()
        self._fd = sock.fileno()
        self._watching = False
        self._closing = False
        self._eof_pending = False
        self._exc = None
        self._drainers = collections.deque()
        self._closed = self._loop.create_future()
        self.transport = _Transport(self)
        try:
            self._extra = {"peername": sock.getpeername(), "sockname": sock.getsockname(),
                           "socket": sock}
        except OSError:
            self._extra = {"socket": sock}

    def __repr__(self):
        return f"<fpd.aio.StreamWriter {self._extra.get('peername')}>"

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def can_write_eof(self) -> bool:
        return True

    def write(self, data) -> None:
        if self._closing or self._exc is not None:
            return                           # as asyncio: dropped once closing / broken
        if not data:
            return
        if not self._wbuf:
            try:
                n = self._sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as e:
                self._fail(e)
                return
            if n == len(data):
                return
            self._wbuf += memoryview(data)[n:]
        else:
            self._wbuf += data
        self._watch()

    def writelines(self, data) -> None:
        for d in data:
            self.write(d)

    def _watch(self) -> None:
        if not self._watching:
            self._watching = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._fd)

    def _on_writable(self) -> None:
        try:
            while self._wbuf:
                n = self._sock.send(self._wbuf)
                del self._wbuf[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            self._fail(e)
            return
        if len(self._wbuf) <= _LOW:
            self._wake_drainers()
        if not self._wbuf:
            self._unwatch()
            if self._eof_pending:
                self._eof_pending = False
                self._shutdown_wr()
            if self._closing:
                self._finish_close()

    def _wake_drainers(self, exc=None) -> None:
        while self._drainers:
            f = self._drainers.popleft()
            if not f.done():
                if exc is None:
                    f.set_result(None)
                else:
                    f.set_exception(exc)

    def _fail(self, exc) -> None:
        self._exc = exc
        self._wbuf.clear()
        self._unwatch()
        self._wake_drainers(exc)
        if self._closing:
            self._finish_close()

    async def drain(self) -> None:
        if self._exc is not None:
            raise self._exc
        if self._closing and not self._wbuf:
            await asyncio.sleep(0)
            return
        if len(self._wbuf) > _HIGH:
            f = self._loop.create_future()
            self._drainers.append(f)
            await f
        else:
            await asyncio.sleep(0)
        if self._exc is not None:
            raise self._exc

    def _shutdown_wr(self) -> None:
        try:
            self._sock.shutdown(_client.SHUT_WR)
        except OSError as e:
            self._exc = e

    def write_eof(self) -> None:
        if self._wbuf:
            self._eof_pending = True
        else:
            self._shutdown_wr()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._wbuf:
            self._finish_close()

    def _abort(self) -> None:
        self._closing = True
        self._wbuf.clear()
        self._unwatch()
        try:
            self._sock.setsockopt(_client.SOL_SOCKET, _client.SO_LINGER,
                                  (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
        except OSError:
            pass
        self._finish_close()

    def _finish_close(self) -> None:
        self._unwatch()
        self._sock.close()
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)
        if self._exc is not None and not isinstance(self._exc, (BrokenPipeError,
                                                                ConnectionResetError)):
            raise self._exc

    async def start_tls(self, *a, **kw):
        raise NotImplementedError("fpd.aio: TLS is not supported")


def _streams(sock, limit, loop):
    r = StreamReader(sock, limit, loop)
    return r, StreamWriter(sock, r, loop)


async def _resolve(loop, host, port):
    if host in (None, ""):
        return ("0.0.0.0", port)
    try:
        _client.inet_aton(host)
        if host.count(".") == 3:
            return (host, port)
    except (OSError, TypeError):
        pass
    info = await loop.getaddrinfo(host, port, family=_client.AF_INET,
                                  type=_client.SOCK_STREAM)
    return info[0][4][:2]


async def open_connection(host=None, port=None, *, limit=_LIMIT, ssl=None,
                          local_addr=None, **kw):
    """Connect to ``(host, port)`` through fpd; returns ``(reader, writer)``."""
    if ssl:
        raise NotImplementedError("fpd.aio: TLS is not supported")
    loop = asyncio.get_running_loop()
    addr = await _resolve(loop, host, port)
    sock = _client.socket(_client.AF_INET, _client.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if local_addr:
            sock.bind(local_addr)
        try:
            sock.connect(addr)
        except BlockingIOError:
            fd = sock.fileno()
            while True:
                await _wait_fd(loop, fd, True)
                err = sock.getsockopt(_client.SOL_SOCKET, _client.SO_ERROR)
                if not err:
                    err = sock.connect_ex(addr)
                if err in (0, errno.EISCONN):
                    break
                if err not in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
                    raise OSError(err, f"Connect call failed {addr}: {os.strerror(err)}")
        return _streams(sock, limit, loop)
    except BaseException:
        sock.close()
        raise


class Server:
    """What :func:`start_server` returns (asyncio.Server's interface)."""

    def __init__(self, sock, cb, limit, loop):
        self._sock = sock
        self._cb = cb
        self._limit = limit
        self._loop = loop
        self._serving = False
        self._closed = False
        self._fd = sock.fileno()
        self._tasks = set()
        self._forever = None
        self._done = loop.create_future()

    @property
    def sockets(self):
        return () if self._closed else (self._sock,)

    def get_loop(self):
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()
        await asyncio.sleep(0)

    def _start(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        self._loop.add_reader(self._fd, self._on_accept)

    def _on_accept(self) -> None:
        for _ in range(128):
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("fpd.aio: accept failed: %s", e)
                return
            try:
                conn.setblocking(False)
                r, w = _streams(conn, self._limit, self._loop)
            except OSError as e:
                conn.close()
                log.warning("fpd.aio: new connection failed: %s", e)
                continue
            t = self._loop.create_task(self._run(r, w))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _run(self, r, w) -> None:
        try:
            res = self._cb(r, w)
            if asyncio.iscoroutine(res):
                await res
        except Exception:
            log.exception("fpd.aio: unhandled exception in client_connected_cb")
            w.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._serving:
            self._loop.remove_reader(self._fd)
        self._serving = False
        self._sock.close()
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
        if not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    async def serve_forever(self) -> None:
        if self._forever is not None:
            raise RuntimeError("server is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError("server is closed")
        self._start()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()


async def start_server(client_connected_cb, host=None, port=None, *, limit=_LIMIT,
                       backlog=100, start_serving=True, ssl=None, reuse_address=None,
                       **kw) -> Server:
    """Listen on ``(host, port)`` through fpd; call ``client_connected_cb(reader,
    writer)`` (a function or a coroutine function) for each connection."""
    if ssl:
        raise NotImplementedError("fpd.aio: TLS is not supported")
    loop = asyncio.get_running_loop()
    addr = await _resolve(loop, host, port)
    sock = _client.socket(_client.AF_INET, _client.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(addr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    srv = Server(sock, client_connected_cb, limit, loop)
    if start_serving:
        srv._start()
    return srv
