/* rtt: smoothed round-trip times of TCP connections, as a histogram (bcc's tcprtt) or per sample.
 *
 * Probe: tracepoint tcp:tcp_probe (Linux 4.16+), which fires for every
 * segment an established socket receives (tcp_rcv_established) and carries
 * the socket's smoothed RTT (tp->srtt_us >> 3, in µs), congestion window,
 * slow-start threshold, windows and cookie. Every field is read from the
 * tracepoint record, whose layout BCC takes from tracefs at compile time,
 * so headers that do not match the running kernel cannot corrupt the data.
 * The fields used here are those Linux 6.1 has too. Needs neither kprobes
 * nor BTF: bcc's and libbpf-tools' tcprtt (kprobe or fentry on
 * tcp_rcv_established) do not start on kernels without them.
 *
 * Default: every sample into the log2 histogram `srtt` (µs), one histogram
 * per address family, printed at every --interval and at the end (cleared
 * after each print, unless --accumulate), as tcprtt prints its one, and
 * exported with --metrics as tcptrace_tcp_srtt_seconds{family}. The
 * histogram is counted in the kernel whatever the options; with --output
 * none nothing else is sent.
 *
 * Macros (-D NAME[=VALUE]):
 *   RTT_BY_LADDR     one histogram per local address as well (tcprtt -b)
 *   RTT_BY_RADDR     one histogram per remote address as well (tcprtt -B)
 *   RTT_ADDRS=N      with either: the first N addresses seen keep a
 *                    histogram of their own, later ones share one whose
 *                    address is null (default 10, at most 100), as part 10
 *                    bounds labels (--metrics-label-limit); the exported
 *                    metric gets the address as opt-in label saddr or daddr
 *                    (--metrics-label), folded again by the host
 *   RTT_EVENTS=1     also one event per sample (fields below)
 *   RTT_SAMPLE_MS=N  with RTT_EVENTS: at most one event per socket every N
 *                    ms (the histogram still counts every sample)
 * --min-us N keeps only samples whose srtt is at least N µs, in the events
 * and the histogram alike; --sport, --dport, -4 and -6 filter as usual.
 *
 * tcptrace:tables srtt=us
 * tcptrace:metric histogram tcptrace_tcp_srtt_seconds map=srtt labels=family,saddr?,daddr? \
 *     help="Smoothed round-trip time of TCP connections (srtt) at each segment they received, by address family"
 * tcptrace:filters sport dport family min-us
 * tcptrace:format saddr=ip(family) daddr=ip(family) sock_cookie=hex srtt.saddr=optional srtt.daddr=optional
 */
#include "tcptrace_filter.h"

#ifndef RTT_EVENTS
#define RTT_EVENTS 0
#endif
#ifndef RTT_SAMPLE_MS
#define RTT_SAMPLE_MS 0
#endif
#ifndef RTT_BY_LADDR
#define RTT_BY_LADDR 0
#endif
#ifndef RTT_BY_RADDR
#define RTT_BY_RADDR 0
#endif
#ifndef RTT_ADDRS
#define RTT_ADDRS 10
#endif
#if RTT_BY_LADDR && RTT_BY_RADDR
#error "rtt: RTT_BY_LADDR and RTT_BY_RADDR exclude each other (one histogram key, as tcprtt's -b and -B)"
#endif
#if RTT_ADDRS < 1 || RTT_ADDRS > 100
#error "rtt: RTT_ADDRS must be from 1 to 100"
#endif
#if RTT_SAMPLE_MS < 0
#error "rtt: RTT_SAMPLE_MS must not be negative"
#endif

#define RTT_AF_INET 2
#define RTT_AF_INET6 10
#define RTT_BY_ADDRESS (RTT_BY_LADDR || RTT_BY_RADDR)

/* One sample (RTT_EVENTS). Member names are the JSON field names, in
 * output order. */
struct event {
    u64 ts_us;
    u64 sock_cookie; /* the socket's cookie, as `ss -e` shows it after sk: */
    u16 family;
    u8 saddr[16];
    u16 sport;
    u8 daddr[16];
    u16 dport;
    u32 srtt_us;
    u32 snd_cwnd;
    u32 ssthresh;
    u32 snd_wnd;
    u32 rcv_wnd;
};

/* The host writes this table's declaration and tcptrace_submit_events(): a
 * ring buffer or perf buffers, or with --output none a count of the
 * samples that would have been sent. Without RTT_EVENTS nothing is. */
/* tcptrace:output events event */

/* The histogram: slot bpf_log2l(srtt_us), per family and, with
 * RTT_BY_LADDR or RTT_BY_RADDR, per address (all zero: the addresses
 * beyond the first RTT_ADDRS). srtt is a u32, so slots stay below 34. */
struct srtt_key {
    u16 family;
#if RTT_BY_LADDR
    u8 saddr[16];
#elif RTT_BY_RADDR
    u8 daddr[16];
#endif
    u64 slot;
};

#if RTT_BY_ADDRESS
BPF_HISTOGRAM(srtt, struct srtt_key, 2 * (RTT_ADDRS + 1) * 34);

/* The addresses that have a histogram of their own: a plain hash of
 * RTT_ADDRS entries refuses the next one (E2BIG), which then goes to the
 * shared histogram. Never cleared, so the same addresses keep theirs from
 * one interval to the next. */
struct address_key {
    u16 family;
    u8 addr[16];
};
BPF_HASH(kept_addresses, struct address_key, u8, RTT_ADDRS);

#define RTT_EEXIST 17

static __always_inline int address_kept(u16 family, const u8 *addr)
{
    struct address_key key;
    __builtin_memset(&key, 0, sizeof(key));
    key.family = family;
    __builtin_memcpy(key.addr, addr, 16);
    if (kept_addresses.lookup(&key))
        return 1;
    u8 one = 1;
    int error = kept_addresses.insert(&key, &one);
    return error == 0 || error == -RTT_EEXIST; /* -EEXIST: another CPU added it meanwhile */
}
#else
BPF_HISTOGRAM(srtt, struct srtt_key, 2 * 34);
#endif

#if RTT_EVENTS && RTT_SAMPLE_MS
/* When each socket last sent an event, by cookie. LRU: sockets that close
 * leave no entry behind for long. */
BPF_TABLE("lru_hash", u64, u64, last_event, 65536);
#endif

TRACEPOINT_PROBE(tcp, tcp_probe)
{
    if (args->family != RTT_AF_INET && args->family != RTT_AF_INET6)
        return 0;
    u16 family = args->family == RTT_AF_INET6 ? 6 : 4;
    if (!TCPTRACE_FAMILY_WANTED(family))
        return 0;
    u16 sport = args->sport;
    u16 dport = args->dport;
    if (!TCPTRACE_SPORT_WANTED(sport) || !TCPTRACE_DPORT_WANTED(dport))
        return 0;
    u32 srtt_us = args->srtt;
    if (srtt_us < FILTER_MIN_US)
        return 0;

    /* saddr and daddr hold a sockaddr_in (the address at byte 4) or a
     * sockaddr_in6 (at byte 8), as the socket's family says. */
    u8 saddr[16] = {};
    u8 daddr[16] = {};
    if (family == 4) {
        __builtin_memcpy(saddr, args->saddr + 4, 4);
        __builtin_memcpy(daddr, args->daddr + 4, 4);
    } else {
        __builtin_memcpy(saddr, args->saddr + 8, 16);
        __builtin_memcpy(daddr, args->daddr + 8, 16);
    }

    struct srtt_key key;
    __builtin_memset(&key, 0, sizeof(key));
    key.family = family;
    key.slot = bpf_log2l(srtt_us);
#if RTT_BY_LADDR
    if (address_kept(family, saddr))
        __builtin_memcpy(key.saddr, saddr, 16);
#elif RTT_BY_RADDR
    if (address_kept(family, daddr))
        __builtin_memcpy(key.daddr, daddr, 16);
#endif
    srtt.increment(key);

#if RTT_EVENTS
    u64 now = bpf_ktime_get_ns();
    u64 cookie = args->sock_cookie;
#if RTT_SAMPLE_MS
    u64 *last = last_event.lookup(&cookie);
    if (last && now - *last < (u64)RTT_SAMPLE_MS * 1000000)
        return 0;
    last_event.update(&cookie, &now);
#endif
    struct event e;
    __builtin_memset(&e, 0, sizeof(e));
    e.ts_us = now / 1000;
    e.sock_cookie = cookie;
    e.family = family;
    __builtin_memcpy(e.saddr, saddr, 16);
    e.sport = sport;
    __builtin_memcpy(e.daddr, daddr, 16);
    e.dport = dport;
    e.srtt_us = srtt_us;
    e.snd_cwnd = args->snd_cwnd;
    e.ssthresh = args->ssthresh;
    e.snd_wnd = args->snd_wnd;
    e.rcv_wnd = args->rcv_wnd;
    tcptrace_submit_events(args, &e);
#endif
    return 0;
}
