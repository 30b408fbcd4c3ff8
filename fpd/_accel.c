/* fpd._accel: optional C versions of primitives pure Python cannot make cheap.
 *
 * wsum(buffer) -> int: the 16-bit big-endian word sum of the buffer (an odd last byte is
 * the high byte of a zero-padded word), folded with end-around carry to 0..0xFFFF.
 * The result is congruent modulo 0xFFFF to fpd.wire's pure-Python reference
 * (int.from_bytes(data, "big"), shifted left 8 bits for an odd length), and it is 0
 * only when every byte is 0 -- the two properties the checksum code relies on.
 * The pure-Python path stays the reference; tests compare the two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint64_t sum_words(const unsigned char *p, Py_ssize_t n)
{
    uint64_t s = 0;
    /* 8 bytes at a time: four big-endian words in one 64-bit load, summed in 32-bit lanes
       by splitting even and odd words; a 64-bit accumulator cannot overflow for any
       buffer below 2^32 words per lane. */
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v = __builtin_bswap64(v);              /* big-endian words in host order */
        s += (v >> 48) + ((v >> 32) & 0xFFFF) + ((v >> 16) & 0xFFFF) + (v & 0xFFFF);
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        s += ((uint64_t)p[0] << 8) | p[1];
        p += 2;
        n -= 2;
    }
    if (n)
        s += (uint64_t)p[0] << 8;
    return s;
}

static uint64_t fold(uint64_t s)
{
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

static PyMethodDef methods[] = {
    {"wsum", wsum, METH_O, "16-bit big-endian word sum, folded to 0..0xFFFF."},
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
