/* retrans: every TCP retransmission, with the socket's state and its owner.
 *
 * Probes: tracepoints tcp:tcp_retransmit_skb (a segment resent: by the
 * retransmission timer, fast retransmit, SACK recovery, a tail loss probe
 * that resends, a SYN resent) and tcp:tcp_retransmit_synack (a listener
 * resending the SYN-ACK of a connection not yet established), like bcc's
 * and libbpf-tools' tcpretrans, which need kprobes where these run without.
 * Every field comes from the tracepoint records, whose layout BCC takes from
 * tracefs. sock:inet_sock_set_state is attached too, only to learn owners.
 *
 * Counts are segments, as the kernel counts them. The kernel's TcpRetransSegs
 * (nstat) and a socket's total retransmits (ss -ti "retrans:N/TOTAL") add
 * tcp_skb_pcount(skb) for every retransmitted skb, and one segment of TSO or
 * GSO data makes an skb carry several; the tracepoint fires once per skb. So
 * each line says how many segments its skb carried (`segs`: the skb's
 * TCP_SKB_CB(skb)->tcp_gso_segs, read at offsets the host takes from the
 * running kernel's BTF, declared below; 1 without BTF), and the
 * metric and the per-flow counts add `segs`. A SYN-ACK is one segment.
 *
 * Since Linux 6.17 tcp_retransmit_skb fires also for a retransmission that
 * failed (the skb still queued in the host, no memory, no route: the
 * record's `err`), which the kernel does not count as retransmitted.
 * Those are left out where the record has `err` (the kernel's BTF says so:
 * TCPTRACE_OFFSET_RETRANSMIT_ERR), so on every kernel a line is a
 * retransmission that was sent. The 6.1 record has no `err` and fires only
 * for those. (The kernel also counts, in TcpRetransSegs and TCPRetransFail, a
 * retransmission whose transmit failed after it was counted, e.g. one a
 * local qdisc or an output firewall rule dropped; neither kernel fires the
 * tracepoint for it as sent.)
 *
 * Owner: retransmissions run in softirq or timer context, where the current
 * task is a bystander (bcc's tcpretrans prints it). As `states` does, the
 * program names the process that owns the socket: learnt from the system
 * call state changes (connect(), listen(), close(), shutdown()), for an
 * accepted socket the owner of its listener, and for sockets and listeners
 * older than the tracer the owners the host seeds from the socket table
 * (tcptrace:seed, tcptrace_owner.h). A SYN-ACK is resent for a listener: its
 * owner is the listener's. pid and comm are null when no owner is known (see
 * README, "retrans").
 *
 * Per-flow counting (-D COUNT_FLOWS=1, like tcpretrans -c): no line per
 * retransmission; the segments retransmitted per flow (family, addresses,
 * ports) are kept in the `flows` table, which the host prints every
 * --interval and at exit, clearing it after each print (--accumulate keeps
 * the totals).
 *
 * Metrics (--metrics): segments retransmitted by kind, family and state,
 * counted from the events in the host or, with --output none, in the kernel.
 *
 * tcptrace:metric counter tcptrace_tcp_retransmits_total value=segs labels=kind,family,state,dport? \
 *     help="TCP segments retransmitted (as TcpRetransSegs counts them), by kind, address family and the socket's state"
 * tcptrace:filters sport dport family pid
 * tcptrace:format skaddr=hex saddr=ip(family) daddr=ip(family) state=tcp_state kind=enum(retransmit,synack)
 * tcptrace:format pid=optional comm=optional
 * tcptrace:seed tcp-listeners=listeners tcp-connections=connections
 * tcptrace:tables flows?
 * tcptrace:offsets SKB_CB=sk_buff.cb TCP_GSO_SEGS=tcp_skb_cb.tcp_gso_segs
 * tcptrace:offsets RETRANSMIT_ERR=trace_event_raw_tcp_retransmit_skb.err
 */
#include "tcptrace_filter.h"
#include "tcptrace_owner.h"

#ifndef COUNT_FLOWS
#define COUNT_FLOWS 0 /* 1: count segments per flow in `flows` instead of a line per retransmission */
#endif
#if COUNT_FLOWS != 0 && COUNT_FLOWS != 1
#error "COUNT_FLOWS is 0 (a line per retransmission) or 1 (segments per flow)"
#endif

#define RETRANS_AF_INET6 10
#define RETRANS_IPPROTO_TCP 6

/* include/net/tcp_states.h */
#define RETRANS_TCP_ESTABLISHED 1
#define RETRANS_TCP_SYN_SENT 2
#define RETRANS_TCP_SYN_RECV 3
#define RETRANS_TCP_FIN_WAIT1 4
#define RETRANS_TCP_CLOSE 7
#define RETRANS_TCP_CLOSE_WAIT 8
#define RETRANS_TCP_LAST_ACK 9
#define RETRANS_TCP_LISTEN 10
#define RETRANS_TCP_NEW_SYN_RECV 12 /* a request socket: what a SYN-ACK is resent for */

/* kind values, named by the enum() hint above */
#define KIND_RETRANSMIT 0
#define KIND_SYNACK 1

/* Member names are the JSON field names, in output order. */
struct event {
    u64 ts_us;
    u64 skaddr;   /* the socket; for a SYN-ACK, the listener */
    u32 pid;      /* the owner; 0 (null in JSON) when unknown */
    char comm[16];
    u16 family;
    u8 saddr[16];
    u16 sport;
    u8 daddr[16];
    u16 dport;
    u8 state;     /* the socket's state; NEW_SYN_RECV for a SYN-ACK */
    u8 kind;
    u16 segs;     /* segments the retransmitted skb carried */
};

/* The host writes this table's declaration and tcptrace_submit_events(): a
 * ring buffer or perf buffers as --buffer chooses (losses counted), or the
 * in-kernel counting of the metric declared above. */
/* tcptrace:output events event */

#if COUNT_FLOWS
/* A flow, as tcpretrans -c keys it. No padding: the whole key is hashed. */
struct flow {
    u16 family;
    u8 saddr[16];
    u16 sport;
    u8 daddr[16];
    u16 dport;
};

BPF_HASH(flows, struct flow, u64, 10240);
#endif

/* Owner of every socket the program has seen take an owner, by address.
 * LRU, so sockets whose CLOSE the tracer missed cannot fill the map. */
BPF_TABLE("lru_hash", u64, struct tcptrace_owner, sockets, 65536);
/* Owners of listening sockets: learnt in listen(), seeded for older ones. */
BPF_TABLE("lru_hash", struct tcptrace_listener_key, struct tcptrace_listener, listeners, 4096);
/* Owners of connections older than the tracer, seeded by the host; an entry
 * moves into `sockets` when the connection is first seen. */
BPF_TABLE("lru_hash", struct tcptrace_connection_key, struct tcptrace_owner, connections, 65536);

/* Segments in a retransmitted skb: tcp_skb_pcount(skb), which is
 * TCP_SKB_CB(skb)->tcp_gso_segs, the u16 the kernel adds to TcpRetransSegs.
 * The tracepoint fires after the retransmission, on the skb that stays in
 * the retransmit queue, whose count the transmit does not change. */
static __always_inline u16 skb_segments(const void *skb)
{
#if defined(TCPTRACE_OFFSET_SKB_CB) && defined(TCPTRACE_OFFSET_TCP_GSO_SEGS)
    u16 segs = 0;
    bpf_probe_read_kernel(&segs, sizeof(segs),
                          (const char *)skb + TCPTRACE_OFFSET_SKB_CB + TCPTRACE_OFFSET_TCP_GSO_SEGS);
    return segs ? segs : 1;
#else
    return 1;
#endif
}

/* State changes only a system call on the socket itself makes, in its
 * caller's context (see states.bpf.c). */
static __always_inline int made_by_system_call(int oldstate, int newstate)
{
    switch (oldstate) {
    case RETRANS_TCP_CLOSE:
        return newstate == RETRANS_TCP_SYN_SENT || newstate == RETRANS_TCP_LISTEN;
    case RETRANS_TCP_LISTEN:
        return newstate == RETRANS_TCP_CLOSE;
    case RETRANS_TCP_ESTABLISHED:
    case RETRANS_TCP_SYN_RECV:
        return newstate == RETRANS_TCP_FIN_WAIT1;
    case RETRANS_TCP_CLOSE_WAIT:
        return newstate == RETRANS_TCP_LAST_ACK;
    default:
        return 0;
    }
}

static __always_inline void listener_key(struct tcptrace_listener_key *key, u32 netns, u16 family, u16 port,
                                         const u8 *addr)
{
    key->netns = netns;
    key->family = family;
    key->port = port;
    __builtin_memcpy(key->addr, addr, 16);
}

/* The owner of the listener bound to this address and port, else to the
 * wildcard address, as the kernel's own listener lookup falls back. A
 * SO_REUSEPORT group of several processes has no one owner. */
static __always_inline void listener_owner(struct tcptrace_owner *owner, u32 netns, u16 family, u16 port,
                                           const u8 *addr)
{
    struct tcptrace_listener_key key = {};
    listener_key(&key, netns, family, port, addr);
    struct tcptrace_listener *listener = listeners.lookup(&key);
    if (!listener) {
        __builtin_memset(key.addr, 0, sizeof(key.addr));
        listener = listeners.lookup(&key);
    }
    if (listener && !listener->owners_differ)
        *owner = listener->owner;
}

/* Counts the listening sockets behind one key, as states.bpf.c does. */
static __always_inline void count_listener(u32 netns, u16 family, u16 port, const u8 *addr,
                                           struct tcptrace_owner *owner, int listening)
{
    struct tcptrace_listener_key key = {};
    listener_key(&key, netns, family, port, addr);
    struct tcptrace_listener *listener = listeners.lookup(&key);
    if (listening) {
        if (listener) {
            __sync_fetch_and_add(&listener->sockets, 1);
            if (listener->owner.pid != owner->pid)
                listener->owners_differ = 1;
        } else {
            struct tcptrace_listener fresh = {};
            fresh.owner = *owner;
            fresh.sockets = 1;
            listeners.update(&key, &fresh);
        }
    } else if (listener) {
        __sync_fetch_and_add(&listener->sockets, -1);
        if ((s32)listener->sockets <= 0)
            listeners.delete(&key);
    }
}

/* The owner the host seeded for a connection older than the tracer; the
 * entry moves into `sockets`. */
static __always_inline void seeded_owner(struct tcptrace_owner *owner, u64 skaddr, u32 netns, u16 family,
                                         u16 sport, u16 dport, const u8 *saddr, const u8 *daddr)
{
    struct tcptrace_connection_key key = {};
    key.netns = netns;
    key.family = family;
    key.sport = sport;
    key.dport = dport;
    __builtin_memcpy(key.saddr, saddr, 16);
    __builtin_memcpy(key.daddr, daddr, 16);
    struct tcptrace_owner *seeded = connections.lookup(&key);
    if (seeded) {
        *owner = *seeded;
        if (owner->pid != 0)
            sockets.update(&skaddr, owner);
        connections.delete(&key);
    }
}

/* Keeps the owners up to date; reports nothing. */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != RETRANS_IPPROTO_TCP)
        return 0;
    u64 skaddr = (u64)args->skaddr;
    int oldstate = args->oldstate;
    int newstate = args->newstate;
    u16 family = args->family == RETRANS_AF_INET6 ? 6 : 4;
    u8 saddr[16] = {};
    u8 daddr[16] = {};
    if (family == 4) {
        __builtin_memcpy(saddr, args->saddr, 4);
        __builtin_memcpy(daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(saddr, args->saddr_v6, 16);
        __builtin_memcpy(daddr, args->daddr_v6, 16);
    }

    struct tcptrace_owner owner = {};
    if (made_by_system_call(oldstate, newstate)) {
        owner.pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&owner.comm, sizeof(owner.comm));
    }
    if (oldstate == RETRANS_TCP_CLOSE && newstate == RETRANS_TCP_LISTEN)
        count_listener(tcptrace_socket_netns(args->skaddr), family, args->sport, saddr, &owner, 1);
    else if (oldstate == RETRANS_TCP_LISTEN && newstate == RETRANS_TCP_CLOSE)
        count_listener(tcptrace_socket_netns(args->skaddr), family, args->sport, saddr, &owner, 0);

    if (newstate == RETRANS_TCP_CLOSE) {
        sockets.delete(&skaddr);
        return 0;
    }
    if (owner.pid != 0) {
        sockets.update(&skaddr, &owner);
    } else if (oldstate == RETRANS_TCP_LISTEN && newstate == RETRANS_TCP_SYN_RECV) {
        /* An accepted socket, born a clone of its listener: a record at
         * this address is another socket's past. */
        listener_owner(&owner, tcptrace_socket_netns(args->skaddr), family, args->sport, saddr);
        if (owner.pid != 0)
            sockets.update(&skaddr, &owner);
        else
            sockets.delete(&skaddr);
    } else if (oldstate == RETRANS_TCP_CLOSE) {
        /* Born some other way, without a known owner. */
        sockets.delete(&skaddr);
    } else if (!sockets.lookup(&skaddr)) {
        seeded_owner(&owner, skaddr, tcptrace_socket_netns(args->skaddr), family, args->sport, args->dport, saddr,
                     daddr);
    }
    return 0;
}

#if COUNT_FLOWS
static __always_inline void count_flow(struct event *e)
{
    struct flow key;
    __builtin_memset(&key, 0, sizeof(key));
    key.family = e->family;
    __builtin_memcpy(key.saddr, e->saddr, 16);
    key.sport = e->sport;
    __builtin_memcpy(key.daddr, e->daddr, 16);
    key.dport = e->dport;
    flows.increment(key, e->segs);
}
#else
static __always_inline void count_flow(struct event *e) {}
#endif

/* Names the owner, applies the filters, and reports or counts. */
static __always_inline int report(void *ctx, struct event *e)
{
    if (!TCPTRACE_FAMILY_WANTED(e->family) || !TCPTRACE_SPORT_WANTED(e->sport) ||
        !TCPTRACE_DPORT_WANTED(e->dport))
        return 0;
    struct tcptrace_owner owner = {};
    struct tcptrace_owner *known = sockets.lookup(&e->skaddr);
    if (known) {
        owner = *known;
    } else if (e->kind == KIND_SYNACK) {
        listener_owner(&owner, tcptrace_socket_netns((const void *)e->skaddr), e->family, e->sport, e->saddr);
    } else {
        seeded_owner(&owner, e->skaddr, tcptrace_socket_netns((const void *)e->skaddr), e->family, e->sport,
                     e->dport, e->saddr, e->daddr);
    }
    if (!TCPTRACE_PID_WANTED(owner.pid))
        return 0;
    e->pid = owner.pid;
    __builtin_memcpy(&e->comm, &owner.comm, sizeof(e->comm));
    e->ts_us = bpf_ktime_get_ns() / 1000;
    if (COUNT_FLOWS) {
        count_flow(e);
        return 0;
    }
    tcptrace_submit_events(ctx, e);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
#ifdef TCPTRACE_OFFSET_RETRANSMIT_ERR
    /* Linux 6.17+: an attempt that failed; nothing was sent. */
    if (args->err != 0)
        return 0;
#endif
    struct event e;
    __builtin_memset(&e, 0, sizeof(e));
    e.skaddr = (u64)args->skaddr;
    e.family = args->family == RETRANS_AF_INET6 ? 6 : 4;
    if (e.family == 4) {
        __builtin_memcpy(&e.saddr, args->saddr, 4);
        __builtin_memcpy(&e.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(&e.saddr, args->saddr_v6, 16);
        __builtin_memcpy(&e.daddr, args->daddr_v6, 16);
    }
    e.sport = args->sport;
    e.dport = args->dport;
    e.state = args->state;
    e.kind = KIND_RETRANSMIT;
    e.segs = skb_segments(args->skbaddr);
    return report(args, &e);
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_synack)
{
    struct event e;
    __builtin_memset(&e, 0, sizeof(e));
    e.skaddr = (u64)args->skaddr;
    e.family = args->family == RETRANS_AF_INET6 ? 6 : 4;
    if (e.family == 4) {
        __builtin_memcpy(&e.saddr, args->saddr, 4);
        __builtin_memcpy(&e.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(&e.saddr, args->saddr_v6, 16);
        __builtin_memcpy(&e.daddr, args->daddr_v6, 16);
    }
    e.sport = args->sport;
    e.dport = args->dport;
    e.state = RETRANS_TCP_NEW_SYN_RECV;
    e.kind = KIND_SYNACK;
    e.segs = 1;
    return report(args, &e);
}
