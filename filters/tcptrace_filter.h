/* BPF-side half of the filters: every macro the host may pass with -D gets
 * a default that disables its filter, so an unused filter costs nothing.
 * Included by the programs in programs/ (and usable by user programs).
 *
 *   FILTER_SPORT_MODE / FILTER_DPORT_MODE
 *       0: no filter; 1: FILTER_xPORT_MATCH(p) is an inline expression;
 *       2: the host fills the array filter_xport_ports (1 = port wanted).
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

/* The macros below expand inside the including program, so BCC rewrites the
 * map lookups there as it does for any map use in the program itself. */
#if FILTER_SPORT_MODE == 2
BPF_ARRAY(filter_sport_ports, u8, 65536);
#define TCPTRACE_SPORT_WANTED(port) \
  ({ u32 __key = (port); u8 *__hit = filter_sport_ports.lookup(&__key); __hit && *__hit; })
#elif FILTER_SPORT_MODE == 1
#define TCPTRACE_SPORT_WANTED(port) FILTER_SPORT_MATCH((u32)(port))
#else
#define TCPTRACE_SPORT_WANTED(port) 1
#endif

#if FILTER_DPORT_MODE == 2
BPF_ARRAY(filter_dport_ports, u8, 65536);
#define TCPTRACE_DPORT_WANTED(port) \
  ({ u32 __key = (port); u8 *__hit = filter_dport_ports.lookup(&__key); __hit && *__hit; })
#elif FILTER_DPORT_MODE == 1
#define TCPTRACE_DPORT_WANTED(port) FILTER_DPORT_MATCH((u32)(port))
#else
#define TCPTRACE_DPORT_WANTED(port) 1
#endif

/* family: 4 or 6 (not AF_*). */
#define TCPTRACE_FAMILY_WANTED(family) (FILTER_FAMILY == 0 || (family) == FILTER_FAMILY)
#define TCPTRACE_PID_WANTED(tgid) (FILTER_PID == 0 || (tgid) == FILTER_PID)

#endif /* TCPTRACE_FILTER_H */
