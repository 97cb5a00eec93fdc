/* BPF-side half of the filters: every macro the host may pass with -D gets
 * a default that disables its filter, so an unused filter costs nothing.
 * Included by the programs in programs/ (and usable by user programs).
 *
 *   FILTER_SPORT_MODE / FILTER_DPORT_MODE
 *       0: no filter; 1: FILTER_xPORT_CASES holds the wanted ports as
 *       switch case labels.
 *   FILTER_FAMILY   0, 4 or 6
 *   FILTER_PID      0 or the tgid to keep
 *   FILTER_MIN_US   0 or the smallest latency worth reporting
 *   FILTER_NO_FAILURES  1 to drop failed connects
 */
#ifndef TCPTRACE_FILTER_H
#define TCPTRACE_FILTER_H

#ifndef FILTER_SPORT_MODE
#define FILTER_SPORT_MODE 0
#endif
#ifndef FILTER_DPORT_MODE
#define FILTER_DPORT_MODE 0
#endif
#ifndef FILTER_FAMILY
#define FILTER_FAMILY 0
#endif
#ifndef FILTER_PID
#define FILTER_PID 0
#endif
#ifndef FILTER_MIN_US
#define FILTER_MIN_US 0
#endif
#ifndef FILTER_NO_FAILURES
#define FILTER_NO_FAILURES 0
#endif

/* Output buffer kind, for programs that declare "tcptrace:buffers ringbuf
 * perf": 1 = one BPF ring buffer of TCPTRACE_RINGBUF_PAGES pages (a power
 * of two), 0 = per-CPU perf buffers. */
#ifndef TCPTRACE_RINGBUF
#define TCPTRACE_RINGBUF 0
#endif
#ifndef TCPTRACE_RINGBUF_PAGES
#define TCPTRACE_RINGBUF_PAGES 64
#endif
#ifndef TCPTRACE_WAKEUP_EVERY
#define TCPTRACE_WAKEUP_EVERY 32
#endif

/* A port set arrives as the case labels of a switch ("case 80: case 1000
 * ... 2000:"). clang lowers a switch to a balanced compare tree (BPF has no
 * jump tables), so a thousand ports cost about ten comparisons per event and
 * no map lookup. (A map could not be used from here anyway: BCC rewrites map
 * calls only in the program's own file, never in headers or macros.) */
static __always_inline int tcptrace_sport_wanted(u32 port)
{
#if FILTER_SPORT_MODE
    switch (port) {
    FILTER_SPORT_CASES
        return 1;
    default:
        return 0;
    }
#else
    return 1;
#endif
}

static __always_inline int tcptrace_dport_wanted(u32 port)
{
#if FILTER_DPORT_MODE
    switch (port) {
    FILTER_DPORT_CASES
        return 1;
    default:
        return 0;
    }
#else
    return 1;
#endif
}

#define TCPTRACE_SPORT_WANTED(port) tcptrace_sport_wanted(port)
#define TCPTRACE_DPORT_WANTED(port) tcptrace_dport_wanted(port)

/* family: 4 or 6 (not AF_*). */
#define TCPTRACE_FAMILY_WANTED(family) (FILTER_FAMILY == 0 || (family) == FILTER_FAMILY)
#define TCPTRACE_PID_WANTED(tgid) (FILTER_PID == 0 || (tgid) == FILTER_PID)

#endif /* TCPTRACE_FILTER_H */
