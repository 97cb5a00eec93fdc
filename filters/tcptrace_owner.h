/* Owners of TCP sockets that existed before the tracer started: the layouts
 * of the maps the host fills for a program that declares
 *
 *   tcptrace:seed tcp-listeners=MAP tcp-connections=MAP
 *
 * Between attaching the probes and "ready", the host reads the kernel's
 * socket table the way `ss -tanp` does (sock_diag, and the socket links in
 * /proc/PID/fd of every process) in every network namespace a process is
 * in, and writes one entry per listening socket group into the
 * tcp-listeners map and one per connection a process holds into the
 * tcp-connections map. Entries the program wrote itself after attaching
 * are kept (BPF_NOEXIST). Both maps must be hash or LRU hash maps with
 * exactly these key and value types.
 *
 * Keys carry what the sock:inet_sock_set_state record carries (family,
 * addresses, ports) plus the socket's network namespace, which the record
 * lacks: tcptrace_socket_netns() reads it from the socket at offsets the
 * host takes from the running kernel's BTF and passes as
 * TCPTRACE_SOCK_NET_OFFSET and TCPTRACE_NET_INUM_OFFSET. Without BTF they
 * are not defined, netns is 0 in every key, and the host seeds only its own
 * network namespace.
 *
 * Shared by BPF programs and the host (C++), like libbpf-tools' per-tool
 * headers: one definition of each layout.
 */
#ifndef TCPTRACE_OWNER_H
#define TCPTRACE_OWNER_H

#ifdef __cplusplus
#include <linux/types.h>
#endif

#define TCPTRACE_COMM_LEN 16

/* A process that holds a socket; pid 0 (and an empty comm) when unknown. */
struct tcptrace_owner {
    __u32 pid;                     /* tgid */
    char comm[TCPTRACE_COMM_LEN];  /* its main thread's name when seeded */
};

/* Where a socket listens. addr is all zero for the wildcard address
 * (0.0.0.0 or ::); an IPv4 address fills the first 4 bytes. A connection
 * accepted by a dual-stack :: listener from an IPv4 peer is family 6 with a
 * v4-mapped address, like the listener. */
struct tcptrace_listener_key {
    __u32 netns;   /* network namespace inode, 0 when unknown */
    __u16 family;  /* 4 or 6 */
    __u16 port;    /* host byte order */
    __u8 addr[16];
};

struct tcptrace_listener {
    struct tcptrace_owner owner;
    /* Listening sockets with this key: more than one in a SO_REUSEPORT
     * group. */
    __u32 sockets;
    /* Non-zero when those sockets belong to more than one process: the
     * kernel picks the socket per connection, and the connection's record
     * does not say which, so its owner before accept() is unknown. */
    __u32 owners_differ;
};

/* A connection, by its addresses and ports (local first), as the state
 * change record gives them. */
struct tcptrace_connection_key {
    __u32 netns;
    __u16 family;
    __u16 sport;
    __u16 dport;
    __u16 zero;  /* padding, kept zero so keys compare byte by byte */
    __u8 saddr[16];
    __u8 daddr[16];
};

#ifndef __cplusplus
/* The network namespace inode of a socket (a `struct sock *` as the record's
 * skaddr gives it): sk->__sk_common.skc_net.net->ns.inum. */
static __always_inline __u32 tcptrace_socket_netns(const void *sk)
{
#if defined(TCPTRACE_SOCK_NET_OFFSET) && defined(TCPTRACE_NET_INUM_OFFSET)
    const void *net = 0;
    __u32 inum = 0;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + TCPTRACE_SOCK_NET_OFFSET);
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + TCPTRACE_NET_INUM_OFFSET);
    return inum;
#else
    return 0;
#endif
}
#endif

#endif /* TCPTRACE_OWNER_H */
