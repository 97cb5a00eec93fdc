/* states, as it counted its metrics by hand before the host generated the
 * counting code (commit 4d1e558^, programs/states.bpf.c with
 * TCPTRACE_AGGREGATE=1): kept ONLY as a fixture for scripts/bench-metrics
 * --bpf-side, which compares it with the code the host generates from the
 * metric declarations of programs/states.bpf.c (--aggregate kernel). Not a
 * program to trace with.
 *
 * What is kept: the probe, the event and the owner tracking exactly as they
 * were (and still are in programs/states.bpf.c: see there for what they do),
 * so the per-event BPF work is the same as the generated variant's apart
 * from the counting; and the hand-written counting, now unconditional: the
 * transitions by old state, new state and family, and the time spent in the
 * old state as a histogram, in per-CPU arrays of its own (hw_*). Nothing
 * reads them but the bench (bpftool map dump, for the event count).
 *
 * What is gone: the ring buffer and perf buffer variants and the
 * "aggregate" and "buffers" annotation lines, which today's host no longer
 * knows. Today's host refuses a program that submits nothing ("nothing to
 * print"), so an output table is still declared and submitted to, but only
 * in a branch that never runs (ts_us == 0: the event's time since boot in
 * microseconds) and that the compiler cannot remove. Run it as
 *     tcptrace-bcc --program-file bench/handwritten/states.bpf.c --output json >/dev/null
 * (perf buffers, which stay empty).
 *
 * Bucket bounds: those of tcptrace_tcp_state_duration_seconds in
 * programs/states.bpf.c (100us,1ms,10ms,100ms,1s,10s,60s,300s,900s,3600s),
 * as the expression the host used to define (-DTCPTRACE_STATE_DURATION_BUCKET,
 * host/kernel_aggregation.cpp at 4d1e558^).
 *
 * tcptrace:filters sport dport family pid
 * tcptrace:seed tcp-listeners=listeners tcp-connections=connections
 */
#include "tcptrace_filter.h"
#include "tcptrace_owner.h"

#define TCPTRACE_AF_INET 2
#define TCPTRACE_AF_INET6 10
#define TCPTRACE_IPPROTO_TCP 6

/* include/net/tcp_states.h */
#define TCPTRACE_TCP_ESTABLISHED 1
#define TCPTRACE_TCP_SYN_SENT 2
#define TCPTRACE_TCP_SYN_RECV 3
#define TCPTRACE_TCP_FIN_WAIT1 4
#define TCPTRACE_TCP_CLOSE 7
#define TCPTRACE_TCP_CLOSE_WAIT 8
#define TCPTRACE_TCP_LAST_ACK 9
#define TCPTRACE_TCP_LISTEN 10

/* Member names are the JSON field names, in output order. */
struct event {
    u64 ts_us;
    u64 skaddr;
    u32 pid;      /* the owner; 0 (null in JSON) when unknown */
    char comm[16];
    u16 family;
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
    u8 oldstate;
    u8 newstate;
    u64 delta_us;
};

/* The hand-written counting (4d1e558^), always on. */
#define TCPTRACE_STATE_DURATION_BUCKETS 11
#define TCPTRACE_STATE_DURATION_BUCKET(us) \
    ((us) <= 100ULL ? 0 : (us) <= 1000ULL ? 1 : (us) <= 10000ULL ? 2 : (us) <= 100000ULL ? 3 : \
     (us) <= 1000000ULL ? 4 : (us) <= 10000000ULL ? 5 : (us) <= 60000000ULL ? 6 : (us) <= 300000000ULL ? 7 : \
     (us) <= 900000000ULL ? 8 : (us) <= 3600000000ULL ? 9 : 10)

/* Per-CPU, so no atomics. 16 = 4-bit state values. */
BPF_PERCPU_ARRAY(hw_transitions, u64, 16 * 16 * 2);
struct state_duration_histogram {
    u64 buckets[TCPTRACE_STATE_DURATION_BUCKETS]; /* not cumulative; last: +Inf */
    u64 sum_us;
};
BPF_PERCPU_ARRAY(hw_durations, struct state_duration_histogram, 16);

/* Never written (see the top): declared so that the host accepts the program. */
BPF_PERF_OUTPUT(events);

static __always_inline void submit_event(void *ctx, struct event *e)
{
    if (e->ts_us == 0) { /* never: keeps an output table the host accepts */
        events.perf_submit(ctx, e, sizeof(*e));
        return;
    }
    u32 oldstate = e->oldstate & 15;
    u32 index = (oldstate * 16 + (e->newstate & 15)) * 2 + (e->family == 6);
    u64 *count = hw_transitions.lookup(&index);
    if (count)
        *count += 1;
    /* delta_us is 0 when the socket's entry into its old state was not seen:
     * no duration, as on the host-side path (host/metrics.cpp). */
    if (e->delta_us == 0)
        return;
    struct state_duration_histogram *histogram = hw_durations.lookup(&oldstate);
    if (!histogram)
        return;
    u32 bucket = TCPTRACE_STATE_DURATION_BUCKET(e->delta_us);
    if (bucket < TCPTRACE_STATE_DURATION_BUCKETS)
        histogram->buckets[bucket] += 1;
    histogram->sum_us += e->delta_us;
}

/* One entry per live socket: when it entered its current state and who
 * owns it (pid 0: unknown). LRU, so sockets whose CLOSE the tracer missed
 * cannot fill the map. */
struct socket_record {
    u64 since_ns;
    struct tcptrace_owner owner;
};

BPF_TABLE("lru_hash", u64, struct socket_record, sockets, 65536);
/* Owners of listening sockets: learnt in listen(), seeded for older ones. */
BPF_TABLE("lru_hash", struct tcptrace_listener_key, struct tcptrace_listener, listeners, 4096);
/* Owners of connections older than the tracer, seeded by the host; an entry
 * moves into `sockets` at the connection's first transition. */
BPF_TABLE("lru_hash", struct tcptrace_connection_key, struct tcptrace_owner, connections, 65536);

static __always_inline int made_by_system_call(int oldstate, int newstate)
{
    switch (oldstate) {
    case TCPTRACE_TCP_CLOSE:
        return newstate == TCPTRACE_TCP_SYN_SENT || newstate == TCPTRACE_TCP_LISTEN;
    case TCPTRACE_TCP_LISTEN:
        return newstate == TCPTRACE_TCP_CLOSE;
    case TCPTRACE_TCP_ESTABLISHED:
    case TCPTRACE_TCP_SYN_RECV:
        return newstate == TCPTRACE_TCP_FIN_WAIT1;
    case TCPTRACE_TCP_CLOSE_WAIT:
        return newstate == TCPTRACE_TCP_LAST_ACK;
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

/* The owner of the listener that accepted a connection: one bound to its
 * local address, else one bound to the wildcard address, as the kernel's
 * own listener lookup falls back (__inet_lookup_listener). */
static __always_inline void accepting_listener_owner(struct tcptrace_owner *owner, u32 netns, u16 family,
                                                     u16 port, const u8 *saddr)
{
    struct tcptrace_listener_key key = {};
    listener_key(&key, netns, family, port, saddr);
    struct tcptrace_listener *listener = listeners.lookup(&key);
    if (!listener) {
        __builtin_memset(key.addr, 0, sizeof(key.addr));
        listener = listeners.lookup(&key);
    }
    if (listener && !listener->owners_differ)
        *owner = listener->owner;
}

/* Counts the listening sockets behind one key: a SO_REUSEPORT group has
 * several, and once they belong to different processes no accepted socket
 * can be given one of them until accept() (owners_differ stays set until
 * the last of them closes). */
static __always_inline void count_listener(u32 netns, u16 family, u16 port, const u8 *saddr,
                                           struct tcptrace_owner *owner, int listening)
{
    struct tcptrace_listener_key key = {};
    listener_key(&key, netns, family, port, saddr);
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

/* The owner the host seeded for a connection older than the tracer. */
static __always_inline void seeded_owner(struct tcptrace_owner *owner, u32 netns, u16 family, u16 sport, u16 dport,
                                         const u8 *saddr, const u8 *daddr)
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
        connections.delete(&key);
    }
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != TCPTRACE_IPPROTO_TCP)
        return 0;
    u16 family = args->family == TCPTRACE_AF_INET6 ? 6 : 4;
    if (!TCPTRACE_FAMILY_WANTED(family))
        return 0;

    u64 now = bpf_ktime_get_ns();
    u64 skaddr = (u64)args->skaddr;
    int oldstate = args->oldstate;
    int newstate = args->newstate;
    u16 sport = args->sport;
    u16 dport = args->dport;

    /* The addresses go straight into the event, which the listener and seed
     * keys are then built from (an IPv4 address fills 4 of the 16 bytes). */
    struct event e;
    __builtin_memset(&e, 0, sizeof(e));
    if (family == 4) {
        __builtin_memcpy(&e.saddr, args->saddr, 4);
        __builtin_memcpy(&e.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(&e.saddr, args->saddr_v6, 16);
        __builtin_memcpy(&e.daddr, args->daddr_v6, 16);
    }

    /* Bookkeeping comes before the port filters: a client socket has no local
     * port yet at CLOSE -> SYN_SENT (tcp_v4_connect sets the state before
     * inet_hash_connect picks the port), and its owner must still be known
     * when its later, matching transitions arrive. A socket is born at
     * CLOSE -> * and LISTEN -> SYN_RECV: a record left at its address by a
     * socket whose CLOSE was missed is not its past. */
    int born = oldstate == TCPTRACE_TCP_CLOSE ||
               (oldstate == TCPTRACE_TCP_LISTEN && newstate == TCPTRACE_TCP_SYN_RECV);
    struct socket_record *record = born ? 0 : sockets.lookup(&skaddr);
    struct tcptrace_owner owner = {};
    if (made_by_system_call(oldstate, newstate)) {
        owner.pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&owner.comm, sizeof(owner.comm));
    } else if (record && record->owner.pid != 0) {
        owner = record->owner;
    } else if (oldstate == TCPTRACE_TCP_LISTEN) {
        accepting_listener_owner(&owner, tcptrace_socket_netns(args->skaddr), family, sport, e.saddr);
    } else {
        seeded_owner(&owner, tcptrace_socket_netns(args->skaddr), family, sport, dport, e.saddr, e.daddr);
    }

    if (record) {
        /* Rounded up: 0 stays the mark of a duration not seen (a socket's
         * first transition), so a state left within a microsecond (FIN_WAIT2
         * -> CLOSE in tcp_time_wait, right after FIN_WAIT1 -> FIN_WAIT2)
         * still counts as 1 us in the duration metrics instead of vanishing
         * from them. */
        e.delta_us = (now - record->since_ns + 999) / 1000;
        if (newstate == TCPTRACE_TCP_CLOSE) {
            sockets.delete(&skaddr);
        } else {
            record->since_ns = now;
            record->owner = owner;
        }
    } else if (newstate != TCPTRACE_TCP_CLOSE) {
        struct socket_record fresh = {};
        fresh.since_ns = now;
        fresh.owner = owner;
        sockets.update(&skaddr, &fresh);
    }
    /* The namespace is read only where a key needs it: a socket's own
     * record is keyed by its address. */
    if (oldstate == TCPTRACE_TCP_CLOSE && newstate == TCPTRACE_TCP_LISTEN)
        count_listener(tcptrace_socket_netns(args->skaddr), family, sport, e.saddr, &owner, 1);
    else if (oldstate == TCPTRACE_TCP_LISTEN && newstate == TCPTRACE_TCP_CLOSE)
        count_listener(tcptrace_socket_netns(args->skaddr), family, sport, e.saddr, &owner, 0);

    e.pid = owner.pid;
    if (!TCPTRACE_SPORT_WANTED(sport) || !TCPTRACE_DPORT_WANTED(dport) || !TCPTRACE_PID_WANTED(e.pid))
        return 0;

    __builtin_memcpy(&e.comm, &owner.comm, sizeof(e.comm));
    e.ts_us = now / 1000;
    e.skaddr = skaddr;
    e.family = family;
    e.sport = sport;
    e.dport = dport;
    e.oldstate = oldstate;
    e.newstate = newstate;
    submit_event(args, &e);
    return 0;
}
