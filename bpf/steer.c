// SPDX-License-Identifier: GPL-2.0
/*
 * fpd_steer — the XDP half of fpd.
 *
 * For every frame received on the interface:
 *
 *   Ethernet [one 802.1Q / 802.1ad tag] → IPv4 (options honoured) → TCP
 *
 * and if (destination address, destination port) is in the steer map — first the exact
 * address, then address 0 meaning "any local address" — the frame is redirected into the
 * AF_XDP socket registered for the receive queue in the XSKMAP. Everything else goes to the
 * kernel with XDP_PASS. fpd drops no frame here but those over the SYN limit (below): if
 * the XSKMAP slot of the queue is empty, bpf_redirect_map() returns its fallback action
 * (XDP_PASS), so the kernel sees the frame and, with no socket of its own, answers RST.
 *
 * SYN limit (off unless userspace writes a rate into fpd_syn_cfg): a steered TCP segment
 * with SYN set and ACK clear (a connection request) spends a token of a per-CPU bucket
 * that refills at RATE per second up to BURST; without a token it is dropped here
 * (XDP_DROP), so a SYN flood cannot fill the AF_XDP ring that established connections'
 * segments need. A genuine client whose SYN is dropped retransmits it.
 *
 * Counters (per-CPU array fpd_stats, one __u64 per index of enum fpd_stat):
 *   every frame is counted in SEEN and in exactly one of PASSED, MALFORMED, STEERED;
 *   REDIRECT_FAILED is the subset of STEERED whose redirect did not happen (empty slot,
 *   queue index beyond the XSKMAP) and which therefore went to the kernel as well;
 *   SYN_LIMITED is the subset of STEERED dropped by the SYN limit.
 *
 * Hostile input: every read is preceded by a bounds check against data_end. A frame whose
 * headers are cut short, or that contradict themselves (IHL < 5, total length shorter than
 * the headers, TCP data offset < 5), is MALFORMED and passed to the kernel, which drops
 * it with its own accounting. IPv4 fragments are not ours (PASSED): only the first one
 * carries the ports, and fpd does not reassemble.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FPD_MAX_QUEUES 64
#define FPD_MAX_STEER 1024
#define FPD_MAX_FRAME 16384      /* > any frame of a 4096-byte UMEM chunk (xdp.frags aside) */

/* Key of the steer map. Userspace must zero 'pad'. Both fields in network byte order. */
struct fpd_steer_key {
	__be32 addr;   /* IPv4 destination, 0 = any local address */
	__be16 port;   /* TCP destination port */
	__u16 pad;
};

/* Value of the steer map: reserved for flags, userspace writes 0. */
struct fpd_steer_val {
	__u32 flags;
};

/* Index of each counter in fpd_stats. fpd/bpf.py mirrors this list (checked by a unit test). */
enum fpd_stat {
	FPD_STAT_SEEN = 0,
	FPD_STAT_STEERED = 1,
	FPD_STAT_PASSED = 2,
	FPD_STAT_MALFORMED = 3,
	FPD_STAT_REDIRECT_FAILED = 4,
	FPD_STAT_SYN_LIMITED = 5,
	FPD_STAT_MAX = 6,
};

/* The SYN limit (one entry, written by userspace): rate 0 = no limit. */
struct fpd_syn_cfg {
	__u64 rate;    /* SYNs per second per CPU */
	__u64 burst;   /* bucket size, SYNs */
};

/* Per-CPU bucket state: credit in SYN-nanoseconds (one SYN costs 1e9). */
struct fpd_syn_bucket {
	__u64 credit;
	__u64 last_ns;
};

/*
 * The steer map. In the kernel it is named "fpd_steer", like the program; C cannot give a
 * function and a variable one name, and libbpf names a BTF-defined map after its variable,
 * so the loader (fpd/bpf.py) creates this map itself under the name "fpd_steer" and hands
 * it to libbpf before the object is loaded.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FPD_MAX_STEER);
	__type(key, struct fpd_steer_key);
	__type(value, struct fpd_steer_val);
} fpd_steer_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, FPD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} fpd_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FPD_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fpd_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fpd_syn_cfg);
} fpd_syn_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fpd_syn_bucket);
} fpd_syn_bucket SEC(".maps");

struct vlan_tag {
	__be16 tci;
	__be16 inner_proto;
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&fpd_stats, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no other writer, no atomic needed */
}

#define NS_PER_S 1000000000ULL

/* 1: this connection request is over the SYN limit (drop it), 0: let it through */
static __always_inline int syn_over_limit(void)
{
	__u32 zero = 0;
	struct fpd_syn_cfg *cfg = bpf_map_lookup_elem(&fpd_syn_cfg, &zero);
	struct fpd_syn_bucket *b;
	__u64 now, elapsed, cap, credit;

	if (!cfg || !cfg->rate)
		return 0;
	b = bpf_map_lookup_elem(&fpd_syn_bucket, &zero);
	if (!b)
		return 0;
	now = bpf_ktime_get_ns();
	elapsed = now - b->last_ns;
	if (elapsed > NS_PER_S)
		elapsed = NS_PER_S;         /* a full bucket after 1 s idle; no overflow below */
	b->last_ns = now;
	cap = (cfg->burst ? cfg->burst : 1) * NS_PER_S;
	credit = b->credit + elapsed * (cfg->rate > 1000000000ULL ? 1000000000ULL : cfg->rate);
	if (credit > cap)
		credit = cap;
	if (credit < NS_PER_S) {
		b->credit = credit;
		return 1;
	}
	b->credit = credit - NS_PER_S;
	return 0;
}

/*
 * Parse the frame and decide: FPD_STAT_MALFORMED, FPD_STAT_PASSED (not ours) or
 * FPD_STAT_STEERED (the destination is in the steer map). *syn: set to 1 for a connection
 * request (SYN without ACK) that is steered.
 */
static __always_inline __u32 classify(struct xdp_md *ctx, int *syn)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct fpd_steer_key key = {};
	__u32 ihl_bytes, tot_len;
	__u16 proto;
	void *l3;

	if ((void *)(eth + 1) > data_end)
		return FPD_STAT_MALFORMED;
	proto = eth->h_proto;
	l3 = eth + 1;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *vt = l3;

		if ((void *)(vt + 1) > data_end)
			return FPD_STAT_MALFORMED;
		proto = vt->inner_proto;
		l3 = vt + 1;
		/* a second tag (QinQ) is not ours: it falls through as "not IPv4" */
	}
	if (proto != bpf_htons(ETH_P_IP))
		return FPD_STAT_PASSED;

	ip = l3;
	if ((void *)(ip + 1) > data_end)
		return FPD_STAT_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return FPD_STAT_MALFORMED;
	/* MF set or a non-zero offset: a fragment, left to the kernel's reassembly */
	if (ip->frag_off & bpf_htons(0x3fff))
		return FPD_STAT_PASSED;
	if (ip->protocol != IPPROTO_TCP)
		return FPD_STAT_PASSED;

	ihl_bytes = (__u32)ip->ihl * 4;     /* 20..60: ihl is a 4-bit field */
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < ihl_bytes + sizeof(struct tcphdr))
		return FPD_STAT_MALFORMED;
	/* An explicit upper bound before the pointer arithmetic below: verifiers before ~6.8
	 * lose the bounds of a byte-swapped value and refuse "math between pkt pointer and
	 * register with unbounded min value" (Linux 6.1, Debian 12's kernel). No frame an
	 * AF_XDP UMEM chunk holds is this long anyway. */
	if (tot_len > FPD_MAX_FRAME)
		return FPD_STAT_MALFORMED;
	/* the whole IPv4 datagram must be in the frame (Ethernet padding may follow it) */
	if ((void *)ip + tot_len > data_end)
		return FPD_STAT_MALFORMED;

	tcp = (void *)ip + ihl_bytes;
	if ((void *)(tcp + 1) > data_end)
		return FPD_STAT_MALFORMED;
	if (tcp->doff < 5 || (__u32)tcp->doff * 4 > tot_len - ihl_bytes)
		return FPD_STAT_MALFORMED;

	*syn = tcp->syn && !tcp->ack;
	key.addr = ip->daddr;
	key.port = tcp->dest;
	if (bpf_map_lookup_elem(&fpd_steer_map, &key))
		return FPD_STAT_STEERED;
	key.addr = 0;                       /* any local address */
	if (bpf_map_lookup_elem(&fpd_steer_map, &key))
		return FPD_STAT_STEERED;
	return FPD_STAT_PASSED;
}

SEC("xdp")
int fpd_steer(struct xdp_md *ctx)
{
	int syn = 0;
	__u32 verdict = classify(ctx, &syn);
	long act;

	count(FPD_STAT_SEEN);
	count(verdict);
	if (verdict != FPD_STAT_STEERED)
		return XDP_PASS;
	if (syn && syn_over_limit()) {
		count(FPD_STAT_SYN_LIMITED);
		return XDP_DROP;
	}

	/* XDP_REDIRECT if the queue's slot holds a socket, else the fallback, XDP_PASS */
	act = bpf_redirect_map(&fpd_xsks, ctx->rx_queue_index, XDP_PASS);
	if (act != XDP_REDIRECT) {
		count(FPD_STAT_REDIRECT_FAILED);
		return XDP_PASS;
	}
	return XDP_REDIRECT;
}

char _license[] SEC("license") = "GPL";
