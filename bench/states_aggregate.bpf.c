/* states_aggregate: the in-kernel alternative to `--program states
 * --metrics ... --output none`, measured by `scripts/bench-metrics
 * --bpf-side`. Instead of one ring-buffer record per state change for the
 * host to count, it counts in per-CPU BPF arrays that a scrape would read:
 * transitions by (old state, new state, family), and the time spent in the
 * old state as a histogram with the host's bucket bounds (host/metrics.cpp:
 * state_duration_buckets). It keeps no owner: metrics carry no pid or comm.
 * The host has no scrape-time reader for these maps (README, Metrics).
 */

#define AGG_AF_INET6 10
#define AGG_IPPROTO_TCP 6
#define AGG_TCP_CLOSE 7
#define AGG_STATES 16 /* TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12), rounded up */
#define AGG_BUCKETS 11 /* the host's 10 bounds, and +Inf */

/* Index (old * AGG_STATES + new) * 2 + (family is IPv6). Per-CPU: no atomics. */
BPF_PERCPU_ARRAY(transitions, u64, AGG_STATES * AGG_STATES * 2);
/* Index old * AGG_BUCKETS + bucket; and the sum in µs per old state. */
BPF_PERCPU_ARRAY(duration_buckets, u64, AGG_STATES * AGG_BUCKETS);
BPF_PERCPU_ARRAY(duration_sum_us, u64, AGG_STATES);
BPF_TABLE("lru_hash", u64, u64, since_ns, 65536);

static __always_inline u32 duration_bucket(u64 us)
{
    /* 100 µs, 1 ms, 10 ms, 100 ms, 1 s, 10 s, 60 s, 300 s, 900 s, 3600 s */
    if (us <= 100) return 0;
    if (us <= 1000) return 1;
    if (us <= 10000) return 2;
    if (us <= 100000) return 3;
    if (us <= 1000000) return 4;
    if (us <= 10000000) return 5;
    if (us <= 60000000) return 6;
    if (us <= 300000000) return 7;
    if (us <= 900000000) return 8;
    if (us <= 3600000000ULL) return 9;
    return 10;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != AGG_IPPROTO_TCP)
        return 0;
    u32 oldstate = args->oldstate & (AGG_STATES - 1);
    u32 newstate = args->newstate & (AGG_STATES - 1);
    u32 v6 = args->family == AGG_AF_INET6;
    u64 now = bpf_ktime_get_ns();
    u64 skaddr = (u64)args->skaddr;

    u32 index = (oldstate * AGG_STATES + newstate) * 2 + v6;
    u64 *count = transitions.lookup(&index);
    if (count)
        *count += 1;

    u64 *since = since_ns.lookup(&skaddr);
    if (since) {
        u64 us = (now - *since) / 1000;
        u32 bucket = oldstate * AGG_BUCKETS + duration_bucket(us);
        u64 *in_bucket = duration_buckets.lookup(&bucket);
        if (in_bucket)
            *in_bucket += 1;
        u64 *sum = duration_sum_us.lookup(&oldstate);
        if (sum)
            *sum += us;
        if (newstate == AGG_TCP_CLOSE)
            since_ns.delete(&skaddr);
        else
            *since = now;
    } else if (newstate != AGG_TCP_CLOSE) {
        since_ns.update(&skaddr, &now);
    }
    return 0;
}
