/* states: every TCP state change, the time spent in the old state, the owner.
 *
 * Probe: tracepoint sock:inet_sock_set_state (Linux 4.16+). Every field is
 * read from the tracepoint record, whose layout BCC takes from tracefs at
 * compile time; no kernel struct is dereferenced, so kernel headers that do
 * not match the running kernel cannot corrupt the data.
 *
 * Owner: most transitions run in softirq context (a SYN-ACK or FIN arriving),
 * where the current task is whichever one the CPU was running, often
 * swapper/N. Two transitions always run in the owning process:
 *   CLOSE -> SYN_SENT  inside connect()   (tcp_v4_connect/tcp_v6_connect)
 *   CLOSE -> LISTEN    inside listen()    (inet_csk_listen_start)
 * and an accepted socket is born LISTEN -> SYN_RECV as a clone of its
 * listener (inet_csk_clone_lock), carrying the listener's local port. So the
 * owner is taken from the task at those two transitions, inherited by the
 * children of a listener through its port, and kept with the socket's
 * timestamp in one map entry. Only sockets that predate the tracer fall back
 * to the current task.
 *
 * Metrics only (--output none --metrics): with TCPTRACE_AGGREGATE the
 * program sends nothing and counts in per-CPU arrays the host reads at each
 * scrape (host/kernel_aggregation.h): transitions by old state, new state
 * and family, and the time spent in the old state as a histogram.
 *
 * tcptrace:aggregate states
 * tcptrace:buffers ringbuf perf
 * tcptrace:filters sport dport family pid
 * tcptrace:format skaddr=hex saddr=ip(family) daddr=ip(family) oldstate=tcp_state newstate=tcp_state
 */
#include "tcptrace_filter.h"

#define TCPTRACE_AF_INET 2
#define TCPTRACE_AF_INET6 10
#define TCPTRACE_IPPROTO_TCP 6

/* include/net/tcp_states.h */
#define TCPTRACE_TCP_SYN_SENT 2
#define TCPTRACE_TCP_SYN_RECV 3
#define TCPTRACE_TCP_CLOSE 7
#define TCPTRACE_TCP_LISTEN 10

/* Member names are the JSON field names, in output order. */
struct event {
    u64 ts_us;
    u64 skaddr;
    u32 pid;
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

#ifndef TCPTRACE_AGGREGATE
#define TCPTRACE_AGGREGATE 0
#endif

/* Output: counts in the kernel (TCPTRACE_AGGREGATE); else a ring buffer
 * where the kernel has them (Linux 5.8+; one buffer
 * shared by all CPUs keeps every socket's events in order and wakes the
 * reader only when it has caught up), per-CPU perf buffers otherwise. The
 * host picks with TCPTRACE_RINGBUF (--buffer). A full ring buffer drops the
 * event; the drops are counted in tcptrace_lost, which the host reports as
 * lost events. (BCC rewrites map calls only in the program's own file, so
 * this helper cannot live in a shared header.) */
#if TCPTRACE_AGGREGATE
/* Per-CPU, so no atomics: the host sums the CPUs. 16 = 4-bit state values. */
BPF_PERCPU_ARRAY(tcptrace_agg_transitions, u64, 16 * 16 * 2);
struct state_duration_histogram {
    u64 buckets[TCPTRACE_STATE_DURATION_BUCKETS]; /* not cumulative; last: +Inf */
    u64 sum_us;
};
BPF_PERCPU_ARRAY(tcptrace_agg_state_duration, struct state_duration_histogram, 16);
#elif TCPTRACE_RINGBUF
BPF_RINGBUF_OUTPUT(events, TCPTRACE_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(tcptrace_lost, u64, 1);
/* Wake-up batching: the reader is woken for every TCPTRACE_WAKEUP_EVERY-th
 * event of a CPU (BPF_RB_FORCE_WAKEUP) and not for the others
 * (BPF_RB_NO_WAKEUP); it polls every 100 ms anyway, which bounds the wait. */
BPF_PERCPU_ARRAY(tcptrace_unannounced, u32, 1);
#else
BPF_PERF_OUTPUT(events);
#endif

static __always_inline void submit_event(void *ctx, struct event *e)
{
#if TCPTRACE_AGGREGATE
    u32 oldstate = e->oldstate & 15;
    u32 index = (oldstate * 16 + (e->newstate & 15)) * 2 + (e->family == 6);
    u64 *count = tcptrace_agg_transitions.lookup(&index);
    if (count)
        *count += 1;
    /* delta_us is 0 when the socket's entry into its old state was not seen:
     * no duration, as on the host-side path (host/metrics.cpp). */
    if (e->delta_us == 0)
        return;
    struct state_duration_histogram *histogram = tcptrace_agg_state_duration.lookup(&oldstate);
    if (!histogram)
        return;
    u32 bucket = TCPTRACE_STATE_DURATION_BUCKET(e->delta_us);
    if (bucket < TCPTRACE_STATE_DURATION_BUCKETS)
        histogram->buckets[bucket] += 1;
    histogram->sum_us += e->delta_us;
#elif TCPTRACE_RINGBUF
    u32 zero = 0;
    u64 flags = BPF_RB_NO_WAKEUP;
    u32 *unannounced = tcptrace_unannounced.lookup(&zero);
    if (unannounced && ++*unannounced >= TCPTRACE_WAKEUP_EVERY) {
        *unannounced = 0;
        flags = BPF_RB_FORCE_WAKEUP;
    }
    if (events.ringbuf_output(e, sizeof(*e), flags) != 0) {
        u64 *lost = tcptrace_lost.lookup(&zero);
        if (lost)
            *lost += 1;
    }
#else
    events.perf_submit(ctx, e, sizeof(*e));
#endif
}

struct owner {
    u32 pid;
    char comm[16];
};

/* One entry per live socket: when it entered its current state and who owns
 * it. LRU, so sockets whose CLOSE the tracer missed cannot fill the map. */
struct socket_record {
    u64 since_ns;
    struct owner owner;
    u32 owner_known;
};

BPF_TABLE("lru_hash", u64, struct socket_record, sockets, 65536);
/* Owner of each listening port, learnt in listen(). */
BPF_TABLE("lru_hash", u16, struct owner, listeners, 4096);

static __always_inline void current_owner(struct owner *owner)
{
    owner->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&owner->comm, sizeof(owner->comm));
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

    struct event e;
    __builtin_memset(&e, 0, sizeof(e));

    /* Bookkeeping comes before the port filters: a client socket has no local
     * port yet at CLOSE -> SYN_SENT (tcp_v4_connect sets the state before
     * inet_hash_connect picks the port), and its owner must still be known
     * when its later, matching transitions arrive. */
    struct socket_record *record = sockets.lookup(&skaddr);
    if (record) {
        e.delta_us = (now - record->since_ns) / 1000;
        if (record->owner_known) {
            e.pid = record->owner.pid;
            __builtin_memcpy(&e.comm, &record->owner.comm, sizeof(e.comm));
        } else {
            struct owner current = {};
            current_owner(&current);
            e.pid = current.pid;
            __builtin_memcpy(&e.comm, &current.comm, sizeof(e.comm));
        }
        if (newstate == TCPTRACE_TCP_CLOSE)
            sockets.delete(&skaddr);
        else
            record->since_ns = now;
    } else {
        struct socket_record fresh = {};
        fresh.since_ns = now;
        if (oldstate == TCPTRACE_TCP_CLOSE &&
            (newstate == TCPTRACE_TCP_SYN_SENT || newstate == TCPTRACE_TCP_LISTEN)) {
            current_owner(&fresh.owner);
            fresh.owner_known = 1;
        } else if (oldstate == TCPTRACE_TCP_LISTEN && newstate == TCPTRACE_TCP_SYN_RECV) {
            struct owner *listener = listeners.lookup(&sport);
            if (listener) {
                fresh.owner = *listener;
                fresh.owner_known = 1;
            }
        }
        if (!fresh.owner_known)
            current_owner(&fresh.owner);
        e.pid = fresh.owner.pid;
        __builtin_memcpy(&e.comm, &fresh.owner.comm, sizeof(e.comm));
        if (newstate != TCPTRACE_TCP_CLOSE)
            sockets.update(&skaddr, &fresh);
    }
    if (newstate == TCPTRACE_TCP_LISTEN) {
        struct owner listener = {};
        listener.pid = e.pid;
        __builtin_memcpy(&listener.comm, &e.comm, sizeof(listener.comm));
        listeners.update(&sport, &listener);
    }

    if (!TCPTRACE_SPORT_WANTED(sport) || !TCPTRACE_DPORT_WANTED(dport) || !TCPTRACE_PID_WANTED(e.pid))
        return 0;

    e.ts_us = now / 1000;
    e.skaddr = skaddr;
    e.family = family;
    e.sport = sport;
    e.dport = dport;
    e.oldstate = oldstate;
    e.newstate = newstate;
    if (TCPTRACE_AGGREGATE) {
        /* counts carry no addresses */
    } else if (family == 4) {
        __builtin_memcpy(&e.saddr, args->saddr, 4);
        __builtin_memcpy(&e.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(&e.saddr, args->saddr_v6, 16);
        __builtin_memcpy(&e.daddr, args->daddr_v6, 16);
    }
    submit_event(args, &e);
    return 0;
}
