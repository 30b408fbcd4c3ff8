"""ctypes declarations for libbpf (libbpf1 >= 1.1) — declarations only, no logic.

Every function carries the C prototype it mirrors (from /usr/include/bpf/*.h, libbpf 1.1.2)
next to its ``restype``/``argtypes``. fpd/bpf.py is the only caller; everything else uses
fpd.bpf. The libc calls fpd needs are declared in fpd/libc.py.

Error conventions of libbpf 1.x (its "strict mode" is always on):
  * functions returning a pointer return NULL on error and set errno;
  * functions returning int return a negative errno (``-EPERM`` …) and also set errno.
The library is opened with ``use_errno=True`` so ``ctypes.get_errno()`` is valid right after
a call made from the same thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util

LIBBPF_NAMES = ("libbpf.so.1", ctypes.util.find_library("bpf") or "libbpf.so")


def _open():
    last = None
    for name in LIBBPF_NAMES:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            last = e
    raise OSError(f"libbpf not found (install libbpf1 / libbpf-dev): {last}")


lib = _open()

c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint
c_uint8 = ctypes.c_uint8
c_uint32 = ctypes.c_uint32
c_uint64 = ctypes.c_uint64
c_size_t = ctypes.c_size_t
c_long = ctypes.c_long

# --- constants -------------------------------------------------------------------------
# <linux/if_link.h>
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
XDP_FLAGS_MODES = XDP_FLAGS_SKB_MODE | XDP_FLAGS_DRV_MODE | XDP_FLAGS_HW_MODE

# enum { XDP_ATTACHED_NONE = 0, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW,
#        XDP_ATTACHED_MULTI };
XDP_ATTACHED_NONE = 0
XDP_ATTACHED_DRV = 1
XDP_ATTACHED_SKB = 2
XDP_ATTACHED_HW = 3
XDP_ATTACHED_MULTI = 4

# <linux/bpf.h> enum bpf_map_type (the ones fpd uses)
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_XSKMAP = 17

# <linux/bpf.h> flags of bpf_map_update_elem
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# <bpf/libbpf.h> enum libbpf_print_level
LIBBPF_WARN = 0
LIBBPF_INFO = 1
LIBBPF_DEBUG = 2


# --- structs ---------------------------------------------------------------------------
class bpf_xdp_attach_opts(ctypes.Structure):
    """struct bpf_xdp_attach_opts {
           size_t sz;
           int old_prog_fd;
           size_t :0;
       };"""
    _fields_ = [("sz", c_size_t), ("old_prog_fd", c_int)]


class bpf_xdp_query_opts(ctypes.Structure):
    """struct bpf_xdp_query_opts {
           size_t sz;
           __u32 prog_id;      /* output */
           __u32 drv_prog_id;  /* output */
           __u32 hw_prog_id;   /* output */
           __u32 skb_prog_id;  /* output */
           __u8 attach_mode;   /* output */
           size_t :0;
       };"""
    _fields_ = [("sz", c_size_t), ("prog_id", c_uint32), ("drv_prog_id", c_uint32),
                ("hw_prog_id", c_uint32), ("skb_prog_id", c_uint32),
                ("attach_mode", c_uint8)]


class bpf_map_create_opts(ctypes.Structure):
    """struct bpf_map_create_opts {
           size_t sz;
           __u32 btf_fd;
           __u32 btf_key_type_id;
           __u32 btf_value_type_id;
           __u32 btf_vmlinux_value_type_id;
           __u32 inner_map_fd;
           __u32 map_flags;
           __u64 map_extra;
           __u32 numa_node;
           __u32 map_ifindex;
       };"""
    _fields_ = [("sz", c_size_t), ("btf_fd", c_uint32), ("btf_key_type_id", c_uint32),
                ("btf_value_type_id", c_uint32), ("btf_vmlinux_value_type_id", c_uint32),
                ("inner_map_fd", c_uint32), ("map_flags", c_uint32), ("map_extra", c_uint64),
                ("numa_node", c_uint32), ("map_ifindex", c_uint32)]


# --- logging ---------------------------------------------------------------------------
# typedef int (*libbpf_print_fn_t)(enum libbpf_print_level level,
#                                  const char *, va_list ap);
# va_list is an array type on x86-64 (and passed by reference on arm64): the callback
# receives it as a pointer, which is handed on to vsnprintf() unchanged.
libbpf_print_fn_t = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

# libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
lib.libbpf_set_print.restype = c_void_p
lib.libbpf_set_print.argtypes = [libbpf_print_fn_t]
libbpf_set_print = lib.libbpf_set_print

# int libbpf_strerror(int err, char *buf, size_t size);
lib.libbpf_strerror.restype = c_int
lib.libbpf_strerror.argtypes = [c_int, c_char_p, c_size_t]
libbpf_strerror = lib.libbpf_strerror

# long libbpf_get_error(const void *ptr);   (deprecated in 1.x: NULL + errno instead)
lib.libbpf_get_error.restype = c_long
lib.libbpf_get_error.argtypes = [c_void_p]
libbpf_get_error = lib.libbpf_get_error

# int libbpf_num_possible_cpus(void);
lib.libbpf_num_possible_cpus.restype = c_int
lib.libbpf_num_possible_cpus.argtypes = []
libbpf_num_possible_cpus = lib.libbpf_num_possible_cpus

# --- objects ---------------------------------------------------------------------------
# struct bpf_object *bpf_object__open_file(const char *path,
#                                          const struct bpf_object_open_opts *opts);
lib.bpf_object__open_file.restype = c_void_p
lib.bpf_object__open_file.argtypes = [c_char_p, c_void_p]
bpf_object__open_file = lib.bpf_object__open_file

# struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
#                                         const struct bpf_object_open_opts *opts);
lib.bpf_object__open_mem.restype = c_void_p
lib.bpf_object__open_mem.argtypes = [c_void_p, c_size_t, c_void_p]
bpf_object__open_mem = lib.bpf_object__open_mem

# int bpf_object__load(struct bpf_object *obj);
lib.bpf_object__load.restype = c_int
lib.bpf_object__load.argtypes = [c_void_p]
bpf_object__load = lib.bpf_object__load

# void bpf_object__close(struct bpf_object *obj);
lib.bpf_object__close.restype = None
lib.bpf_object__close.argtypes = [c_void_p]
bpf_object__close = lib.bpf_object__close

# struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
#                                                       const char *name);
lib.bpf_object__find_program_by_name.restype = c_void_p
lib.bpf_object__find_program_by_name.argtypes = [c_void_p, c_char_p]
bpf_object__find_program_by_name = lib.bpf_object__find_program_by_name

# int bpf_program__fd(const struct bpf_program *prog);
lib.bpf_program__fd.restype = c_int
lib.bpf_program__fd.argtypes = [c_void_p]
bpf_program__fd = lib.bpf_program__fd

# int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
lib.bpf_program__set_autoload.restype = c_int
lib.bpf_program__set_autoload.argtypes = [c_void_p, ctypes.c_bool]
bpf_program__set_autoload = lib.bpf_program__set_autoload

# --- maps (object side) ----------------------------------------------------------------
# struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj,
#                                              const char *name);
lib.bpf_object__find_map_by_name.restype = c_void_p
lib.bpf_object__find_map_by_name.argtypes = [c_void_p, c_char_p]
bpf_object__find_map_by_name = lib.bpf_object__find_map_by_name

# int bpf_map__fd(const struct bpf_map *map);
lib.bpf_map__fd.restype = c_int
lib.bpf_map__fd.argtypes = [c_void_p]
bpf_map__fd = lib.bpf_map__fd

# int bpf_map__reuse_fd(struct bpf_map *map, int fd);
lib.bpf_map__reuse_fd.restype = c_int
lib.bpf_map__reuse_fd.argtypes = [c_void_p, c_int]
bpf_map__reuse_fd = lib.bpf_map__reuse_fd

# enum bpf_map_type bpf_map__type(const struct bpf_map *map);
lib.bpf_map__type.restype = c_int
lib.bpf_map__type.argtypes = [c_void_p]
bpf_map__type = lib.bpf_map__type

# __u32 bpf_map__max_entries(const struct bpf_map *map);
lib.bpf_map__max_entries.restype = c_uint32
lib.bpf_map__max_entries.argtypes = [c_void_p]
bpf_map__max_entries = lib.bpf_map__max_entries

# __u32 bpf_map__map_flags(const struct bpf_map *map);
lib.bpf_map__map_flags.restype = c_uint32
lib.bpf_map__map_flags.argtypes = [c_void_p]
bpf_map__map_flags = lib.bpf_map__map_flags

# __u32 bpf_map__key_size(const struct bpf_map *map);
lib.bpf_map__key_size.restype = c_uint32
lib.bpf_map__key_size.argtypes = [c_void_p]
bpf_map__key_size = lib.bpf_map__key_size

# __u32 bpf_map__value_size(const struct bpf_map *map);
lib.bpf_map__value_size.restype = c_uint32
lib.bpf_map__value_size.argtypes = [c_void_p]
bpf_map__value_size = lib.bpf_map__value_size

# --- maps (syscall wrappers, <bpf/bpf.h>) ----------------------------------------------
# int bpf_map_create(enum bpf_map_type map_type, const char *map_name, __u32 key_size,
#                    __u32 value_size, __u32 max_entries,
#                    const struct bpf_map_create_opts *opts);
lib.bpf_map_create.restype = c_int
lib.bpf_map_create.argtypes = [c_int, c_char_p, c_uint32, c_uint32, c_uint32,
                               ctypes.POINTER(bpf_map_create_opts)]
bpf_map_create = lib.bpf_map_create

# int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
lib.bpf_map_update_elem.restype = c_int
lib.bpf_map_update_elem.argtypes = [c_int, c_void_p, c_void_p, c_uint64]
bpf_map_update_elem = lib.bpf_map_update_elem

# int bpf_map_lookup_elem(int fd, const void *key, void *value);
lib.bpf_map_lookup_elem.restype = c_int
lib.bpf_map_lookup_elem.argtypes = [c_int, c_void_p, c_void_p]
bpf_map_lookup_elem = lib.bpf_map_lookup_elem

# int bpf_map_delete_elem(int fd, const void *key);
lib.bpf_map_delete_elem.restype = c_int
lib.bpf_map_delete_elem.argtypes = [c_int, c_void_p]
bpf_map_delete_elem = lib.bpf_map_delete_elem

# int bpf_map_get_next_key(int fd, const void *key, void *next_key);
lib.bpf_map_get_next_key.restype = c_int
lib.bpf_map_get_next_key.argtypes = [c_int, c_void_p, c_void_p]
bpf_map_get_next_key = lib.bpf_map_get_next_key

# --- XDP attachment (netlink, in the calling thread's network namespace) -----------------
# int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags,
#                    const struct bpf_xdp_attach_opts *opts);
lib.bpf_xdp_attach.restype = c_int
lib.bpf_xdp_attach.argtypes = [c_int, c_int, c_uint32, ctypes.POINTER(bpf_xdp_attach_opts)]
bpf_xdp_attach = lib.bpf_xdp_attach

# int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
lib.bpf_xdp_detach.restype = c_int
lib.bpf_xdp_detach.argtypes = [c_int, c_uint32, ctypes.POINTER(bpf_xdp_attach_opts)]
bpf_xdp_detach = lib.bpf_xdp_detach

# int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);
lib.bpf_xdp_query.restype = c_int
lib.bpf_xdp_query.argtypes = [c_int, c_int, ctypes.POINTER(bpf_xdp_query_opts)]
bpf_xdp_query = lib.bpf_xdp_query

# int bpf_xdp_query_id(int ifindex, int flags, __u32 *prog_id);
lib.bpf_xdp_query_id.restype = c_int
lib.bpf_xdp_query_id.argtypes = [c_int, c_int, ctypes.POINTER(c_uint32)]
bpf_xdp_query_id = lib.bpf_xdp_query_id
