/* connlat, as it counted its metrics by hand before the host generated the
 * counting code (commit 4d1e558^, programs/connlat.bpf.c with
 * TCPTRACE_AGGREGATE=1): kept ONLY as a fixture for scripts/bench-metrics
 * --bpf-side, which compares it with the code the host generates from the
 * metric declarations of programs/connlat.bpf.c (--aggregate kernel). Not
 * a program to trace with.
 *
 * What is kept: the three attach variants, the event and the connect
 * bookkeeping exactly as they were (and still are in programs/connlat.bpf.c:
 * see there for what they do), so the per-event BPF work is the same as the
 * generated variant's apart from the counting; and the hand-written
 * counting, now unconditional: each connect's latency in a histogram by
 * outcome and family, in a per-CPU array of its own (hw_latency). Nothing
 * reads it but the bench (bpftool map dump, for the event count).
 *
 * What is gone: the ring buffer and perf buffer variants and the
 * "aggregate" and "buffers" annotation lines, which today's host no longer
 * knows. Today's host refuses a program that submits nothing ("nothing to
 * print"), so an output table is still declared and submitted to, but only
 * in a branch that never runs (ts_us == 0: the event's time since boot in
 * microseconds) and that the compiler cannot remove. Run it as
 *     tcptrace-bcc --program-file bench/handwritten/connlat.bpf.c --output json >/dev/null
 * (perf buffers, which stay empty).
 *
 * Bucket bounds: those of tcptrace_tcp_connect_latency_seconds in
 * programs/connlat.bpf.c (50us,100us,250us,500us,1ms,2.5ms,5ms,10ms,25ms,
 * 50ms,100ms,250ms,500ms,1s,2.5s,5s,10s), as the expression the host used to
 * define (-DTCPTRACE_CONNECT_LATENCY_BUCKET, host/kernel_aggregation.cpp at
 * 4d1e558^).
 *
 * tcptrace:attach kfunc kprobe tracepoint
 * tcptrace:filters sport dport family pid min-us no-failures
 */
#include "tcptrace_filter.h"

#ifndef TCPTRACE_ATTACH_KFUNC
#define TCPTRACE_ATTACH_KFUNC 0
#endif
#ifndef TCPTRACE_ATTACH_KPROBE
#define TCPTRACE_ATTACH_KPROBE 0
#endif
#ifndef TCPTRACE_ATTACH_TRACEPOINT
#define TCPTRACE_ATTACH_TRACEPOINT 0
#endif
#if TCPTRACE_ATTACH_KFUNC + TCPTRACE_ATTACH_KPROBE + TCPTRACE_ATTACH_TRACEPOINT != 1
#error "define exactly one of TCPTRACE_ATTACH_KFUNC, TCPTRACE_ATTACH_KPROBE, TCPTRACE_ATTACH_TRACEPOINT"
#endif

#define CONNLAT_AF_INET 2
#define CONNLAT_AF_INET6 10
#define CONNLAT_IPPROTO_TCP 6
#define CONNLAT_TCP_ESTABLISHED 1
#define CONNLAT_TCP_SYN_SENT 2
#define CONNLAT_TCP_CLOSE 7

/* outcome values (programs/connlat.bpf.c names them in its enum() hint) */
#define OUTCOME_ESTABLISHED 0
#define OUTCOME_REFUSED 1
#define OUTCOME_TIMEOUT 2
#define OUTCOME_UNREACHABLE 3
#define OUTCOME_RESET 4
#define OUTCOME_FAILED 5

/* errno values (include/uapi/asm-generic/errno.h) */
#define CONNLAT_ENETUNREACH 101
#define CONNLAT_ECONNRESET 104
#define CONNLAT_ETIMEDOUT 110
#define CONNLAT_ECONNREFUSED 111
#define CONNLAT_EHOSTUNREACH 113

/* Member names are the JSON field names, in output order. */
struct event {
    u64 ts_us;
    u32 pid;
    char comm[16];
    u16 family;
    u8 saddr[16];
    u16 sport;
    u8 daddr[16];
    u16 dport;
    u64 latency_us;
    u8 outcome;
    s32 errno;
};

/* The hand-written counting (4d1e558^), always on. */
#define TCPTRACE_CONNECT_LATENCY_BUCKETS 18
#define TCPTRACE_CONNECT_LATENCY_BUCKET(us) \
    ((us) <= 50ULL ? 0 : (us) <= 100ULL ? 1 : (us) <= 250ULL ? 2 : (us) <= 500ULL ? 3 : \
     (us) <= 1000ULL ? 4 : (us) <= 2500ULL ? 5 : (us) <= 5000ULL ? 6 : (us) <= 10000ULL ? 7 : \
     (us) <= 25000ULL ? 8 : (us) <= 50000ULL ? 9 : (us) <= 100000ULL ? 10 : (us) <= 250000ULL ? 11 : \
     (us) <= 500000ULL ? 12 : (us) <= 1000000ULL ? 13 : (us) <= 2500000ULL ? 14 : (us) <= 5000000ULL ? 15 : \
     (us) <= 10000000ULL ? 16 : 17)

/* Per-CPU, so no atomics. Index outcome * 2 + IPv6. */
struct connect_latency_histogram {
    u64 buckets[TCPTRACE_CONNECT_LATENCY_BUCKETS]; /* not cumulative; last: +Inf */
    u64 sum_us;
};
BPF_PERCPU_ARRAY(hw_latency, struct connect_latency_histogram, 16 * 2);

/* Never written (see the top): declared so that the host accepts the program. */
BPF_PERF_OUTPUT(events);

static __always_inline void submit_event(void *ctx, struct event *e)
{
    if (e->ts_us == 0) { /* never: keeps an output table the host accepts */
        events.perf_submit(ctx, e, sizeof(*e));
        return;
    }
    u32 index = (e->outcome & 15) * 2 + (e->family == 6);
    struct connect_latency_histogram *histogram = hw_latency.lookup(&index);
    if (!histogram)
        return;
    u32 bucket = TCPTRACE_CONNECT_LATENCY_BUCKET(e->latency_us);
    if (bucket < TCPTRACE_CONNECT_LATENCY_BUCKETS)
        histogram->buckets[bucket] += 1;
    histogram->sum_us += e->latency_us;
}

/* Who called connect(), and when. */
struct connect_start {
    u64 ts_ns;
    u32 pid;
    char comm[16];
};

BPF_TABLE("lru_hash", u64, struct connect_start, connects, 65536);

static __always_inline u8 outcome_of(s32 error)
{
    switch (error) {
    case CONNLAT_ECONNREFUSED:
        return OUTCOME_REFUSED;
    case CONNLAT_ETIMEDOUT:
        return OUTCOME_TIMEOUT;
    case CONNLAT_EHOSTUNREACH:
    case CONNLAT_ENETUNREACH:
        return OUTCOME_UNREACHABLE;
    case CONNLAT_ECONNRESET:
        return OUTCOME_RESET;
    default:
        return OUTCOME_FAILED;
    }
}

/* Records the caller of connect(); runs in its context. */
static __always_inline void remember_connect(u64 skaddr, u16 family, u16 dport)
{
    if (!TCPTRACE_FAMILY_WANTED(family) || !TCPTRACE_DPORT_WANTED(dport))
        return;
    struct connect_start start = {};
    start.pid = bpf_get_current_pid_tgid() >> 32;
    if (!TCPTRACE_PID_WANTED(start.pid))
        return;
    start.ts_ns = bpf_ktime_get_ns();
    bpf_get_current_comm(&start.comm, sizeof(start.comm));
    connects.update(&skaddr, &start);
}

/* Fills in the caller, latency and outcome (a failure whose cause is not
 * known yet is "failed", errno 0); false when the event is filtered out. */
static __always_inline int finish_event(struct event *e, struct connect_start *start, u64 now, int failed,
                                        s32 error)
{
    e->ts_us = now / 1000;
    e->pid = start->pid;
    __builtin_memcpy(&e->comm, &start->comm, sizeof(e->comm));
    e->latency_us = (now - start->ts_ns) / 1000;
    e->errno = error;
    e->outcome = failed ? outcome_of(error) : OUTCOME_ESTABLISHED;
    if (!TCPTRACE_SPORT_WANTED(e->sport))
        return 0;
    if (!failed)
        return e->latency_us >= FILTER_MIN_US;
    return !FILTER_NO_FAILURES;
}

#if TCPTRACE_ATTACH_KFUNC || TCPTRACE_ATTACH_KPROBE
/* Only these methods read kernel structs, and so only they need headers. */
#include <net/sock.h>
#include <linux/skbuff.h>
#include <linux/in.h>
#include <linux/in6.h>

#define CONNLAT_TCPHDR_FLAGS_OFFSET 13 /* struct tcphdr: byte holding SYN/RST/ACK */
#define CONNLAT_TCP_FLAG_RST 0x04

static __always_inline void read_socket(struct event *e, struct sock *sk)
{
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), &sk->__sk_common.skc_family);
    bpf_probe_read_kernel(&e->sport, sizeof(e->sport), &sk->__sk_common.skc_num);
    u16 dport_be = 0;
    bpf_probe_read_kernel(&dport_be, sizeof(dport_be), &sk->__sk_common.skc_dport);
    e->dport = ntohs(dport_be);
    if (family == CONNLAT_AF_INET6) {
        e->family = 6;
        bpf_probe_read_kernel(&e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
        bpf_probe_read_kernel(&e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
    } else {
        e->family = 4;
        bpf_probe_read_kernel(&e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
        bpf_probe_read_kernel(&e->daddr, 4, &sk->__sk_common.skc_daddr);
    }
}

/* On entry to tcp_v4_connect()/tcp_v6_connect() the socket has no remote
 * port yet (skc_dport is 0: they copy the destination into it themselves),
 * so --dport filters on the address the caller passed. */
static __always_inline void on_connect(struct sock *sk, struct sockaddr *uaddr, u16 family)
{
    u16 dport_be = 0;
    if (family == 6)
        bpf_probe_read_kernel(&dport_be, sizeof(dport_be), &((struct sockaddr_in6 *)uaddr)->sin6_port);
    else
        bpf_probe_read_kernel(&dport_be, sizeof(dport_be), &((struct sockaddr_in *)uaddr)->sin_port);
    remember_connect((u64)sk, family, ntohs(dport_be));
}

/* The first segment a SYN_SENT socket processes decides the connect. */
static __always_inline int on_segment(void *ctx, struct sock *sk, struct sk_buff *skb)
{
    u8 state = 0;
    bpf_probe_read_kernel(&state, sizeof(state), (void *)&sk->__sk_common.skc_state);
    if (state != CONNLAT_TCP_SYN_SENT)
        return 0;
    u64 skaddr = (u64)sk;
    struct connect_start *start = connects.lookup(&skaddr);
    if (!start)
        return 0;
    /* tcp_rcv_state_process() sees skb->data at the TCP header. */
    unsigned char *data = 0;
    u8 flags = 0;
    bpf_probe_read_kernel(&data, sizeof(data), &skb->data);
    bpf_probe_read_kernel(&flags, sizeof(flags), data + CONNLAT_TCPHDR_FLAGS_OFFSET);
    s32 error = (flags & CONNLAT_TCP_FLAG_RST) ? CONNLAT_ECONNREFUSED : 0;

    struct event e;
    __builtin_memset(&e, 0, sizeof(e));
    read_socket(&e, sk);
    if (finish_event(&e, start, bpf_ktime_get_ns(), error != 0, error))
        submit_event(ctx, &e);
    connects.delete(&skaddr);
    return 0;
}
#endif

#if TCPTRACE_ATTACH_KFUNC
KFUNC_PROBE(tcp_v4_connect, struct sock *sk, struct sockaddr *uaddr)
{
    on_connect(sk, uaddr, 4);
    return 0;
}

KFUNC_PROBE(tcp_v6_connect, struct sock *sk, struct sockaddr *uaddr)
{
    on_connect(sk, uaddr, 6);
    return 0;
}

KFUNC_PROBE(tcp_rcv_state_process, struct sock *sk, struct sk_buff *skb)
{
    return on_segment(ctx, sk, skb);
}
#endif

#if TCPTRACE_ATTACH_KPROBE
int kprobe__tcp_v4_connect(struct pt_regs *ctx, struct sock *sk, struct sockaddr *uaddr)
{
    on_connect(sk, uaddr, 4);
    return 0;
}

int kprobe__tcp_v6_connect(struct pt_regs *ctx, struct sock *sk, struct sockaddr *uaddr)
{
    on_connect(sk, uaddr, 6);
    return 0;
}

int kprobe__tcp_rcv_state_process(struct pt_regs *ctx, struct sock *sk, struct sk_buff *skb)
{
    return on_segment(ctx, sk, skb);
}
#endif

#if TCPTRACE_ATTACH_TRACEPOINT
/* A failed connect is SYN_SENT -> CLOSE, and its cause arrives in
 * sock:inet_sk_error_report, whose record has no socket address. Both fire
 * in the same context, one right after the other, on one CPU, in an order
 * that changed in Linux 6.10 (tcp_done_with_error: state change, then
 * report; before, the ICMP path reported first). So each CPU keeps the
 * failure waiting for its report, and the report waiting for its failure,
 * matched by ports. A failure with no report at all (the caller closed the
 * socket during the connect) is sent as "failed" with the CPU's next TCP
 * state change. */
struct pending_failure {
    struct event e;
    u32 waiting;
};

struct recent_error {
    u64 ts_ns;
    u16 sport;
    u16 dport;
    s32 error;
};

BPF_PERCPU_ARRAY(pending_failures, struct pending_failure, 1);
BPF_PERCPU_ARRAY(recent_errors, struct recent_error, 1);

/* Reports from the same context are microseconds apart. */
#define CONNLAT_SAME_CONTEXT_NS 1000000

static __always_inline void send_pending(void *ctx, struct pending_failure *pending)
{
    if (!FILTER_NO_FAILURES)
        submit_event(ctx, &pending->e);
    pending->waiting = 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != CONNLAT_IPPROTO_TCP)
        return 0;
    int oldstate = args->oldstate;
    int newstate = args->newstate;
    u64 skaddr = (u64)args->skaddr;
    u16 family = args->family == CONNLAT_AF_INET6 ? 6 : 4;

    u32 zero = 0;
    struct pending_failure *pending = pending_failures.lookup(&zero);
    if (pending && pending->waiting)
        send_pending(args, pending);

    /* In connect() (tcp_v4_connect/tcp_v6_connect), in the caller's context. */
    if (oldstate == CONNLAT_TCP_CLOSE && newstate == CONNLAT_TCP_SYN_SENT) {
        remember_connect(skaddr, family, args->dport);
        return 0;
    }
    if (oldstate != CONNLAT_TCP_SYN_SENT)
        return 0;
    if (newstate != CONNLAT_TCP_ESTABLISHED && newstate != CONNLAT_TCP_CLOSE)
        return 0; /* simultaneous open passes through SYN_RECV: not a normal connect */
    struct connect_start *start = connects.lookup(&skaddr);
    if (!start)
        return 0;

    u64 now = bpf_ktime_get_ns();
    struct event e;
    __builtin_memset(&e, 0, sizeof(e));
    e.family = family;
    e.sport = args->sport;
    e.dport = args->dport;
    if (family == 4) {
        __builtin_memcpy(&e.saddr, args->saddr, 4);
        __builtin_memcpy(&e.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(&e.saddr, args->saddr_v6, 16);
        __builtin_memcpy(&e.daddr, args->daddr_v6, 16);
    }

    if (newstate == CONNLAT_TCP_ESTABLISHED) {
        if (finish_event(&e, start, now, 0, 0))
            submit_event(args, &e);
        connects.delete(&skaddr);
        return 0;
    }

    /* SYN_SENT -> CLOSE: did the cause arrive first? */
    s32 error = 0;
    struct recent_error *recent = recent_errors.lookup(&zero);
    if (recent && recent->ts_ns && now - recent->ts_ns < CONNLAT_SAME_CONTEXT_NS &&
        recent->sport == e.sport && recent->dport == e.dport) {
        error = recent->error;
        recent->ts_ns = 0;
    }
    int wanted = finish_event(&e, start, now, 1, error);
    connects.delete(&skaddr);
    if (!wanted)
        return 0;
    if (error != 0) {
        submit_event(args, &e);
    } else if (pending) {
        pending->e = e;
        pending->waiting = 1;
    }
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
    if (args->protocol != CONNLAT_IPPROTO_TCP)
        return 0;
    u32 zero = 0;
    struct pending_failure *pending = pending_failures.lookup(&zero);
    if (pending && pending->waiting && pending->e.sport == args->sport && pending->e.dport == args->dport) {
        pending->e.errno = args->error;
        pending->e.outcome = outcome_of(args->error);
        send_pending(args, pending);
        return 0;
    }
    struct recent_error *recent = recent_errors.lookup(&zero);
    if (recent) {
        recent->ts_ns = bpf_ktime_get_ns();
        recent->sport = args->sport;
        recent->dport = args->dport;
        recent->error = args->error;
    }
    return 0;
}
#endif
