/* states: every TCP state change, the time spent in the old state, the owner.
 *
 * Probe: tracepoint sock:inet_sock_set_state (Linux 4.16+). Every field is
 * read from the tracepoint record, whose layout BCC takes from tracefs at
 * compile time, so kernel headers that do not match the running kernel
 * cannot corrupt the data. The one read from the socket itself, its network
 * namespace, uses offsets the host takes from the running kernel's BTF
 * (tcptrace_owner.h).
 *
 * Owner: the process that holds the socket, never a bystander. Most
 * transitions run in softirq context (a segment arriving, a timer firing),
 * where the current task is whichever one the CPU happened to run: swapper/N,
 * or on loopback the process that sent the segment. A tracepoint program
 * cannot ask which context it runs in (the record's common_flags and
 * common_preempt_count are overwritten with a registers pointer before it
 * runs), but the state machine knows: these transitions are made only by a
 * system call on the socket itself, in its caller's context:
 *   CLOSE -> SYN_SENT         connect()            tcp_v4_connect, tcp_v6_connect
 *   CLOSE -> LISTEN           listen()             inet_csk_listen_start
 *   LISTEN -> CLOSE           close() of a listener (tcp_close), or a listen() that failed
 *   ESTABLISHED -> FIN_WAIT1  close(), shutdown()  tcp_close_state
 *   SYN_RECV -> FIN_WAIT1     the same, on a Fast Open socket not yet established
 *   CLOSE_WAIT -> LAST_ACK    close(), shutdown()  tcp_close_state
 * They name the current task and make it the socket's recorded owner, so
 * once a pre-fork worker closes a connection it accepted, that worker is
 * named for the rest of it. Every other transition (the receive path, timers,
 * and -> CLOSE, which a reset or a timeout makes as well as close()) names
 * the recorded owner, or no one: pid and comm are null when no owner is
 * known. Costing nothing per event, this also holds where receive
 * processing runs in process context without a softirq (a TUN device's
 * writer, busy polling), where a softirq-depth test would name the
 * bystander.
 *
 * Where the recorded owner comes from:
 *   - those system call transitions;
 *   - an accepted socket is born LISTEN -> SYN_RECV as a clone of its
 *     listener (inet_csk_clone_lock): the owner of the listener with its
 *     network namespace, family and port, bound to its local address or to
 *     the wildcard address. A SO_REUSEPORT group whose sockets belong to
 *     different processes has no one owner until accept(): the record does
 *     not say which socket the kernel picked;
 *   - sockets and listeners older than the tracer: the host seeds their
 *     owners from the kernel's socket table before "ready" (tcptrace:seed,
 *     tcptrace_owner.h), keyed by namespace, addresses and ports.
 *
 * Metrics (--metrics): transitions by old state, new state and family, and
 * the time spent in the old state, counted from the events in the host or,
 * with --output none, in the kernel by code the host generates from these
 * declarations (README, "Declaring metrics"). A transition whose start was
 * not seen (delta_us 0) has no duration to observe.
 *
 * tcptrace:metric counter tcptrace_tcp_state_transitions_total \
 *     labels=old_state:oldstate,new_state:newstate,family,dport? \
 *     help="TCP state changes, by old and new state and address family"
 * tcptrace:metric histogram tcptrace_tcp_state_duration_seconds value=delta_us unit=us \
 *     buckets=100us,1ms,10ms,100ms,1s,10s,60s,300s,900s,3600s labels=state:oldstate when=delta_us!=0 \
 *     help="Time a socket spent in a TCP state before leaving it (transitions whose start the tracer did not see are not observed)"
 * tcptrace:filters sport dport family pid
 * tcptrace:format skaddr=hex saddr=ip(family) daddr=ip(family) oldstate=tcp_state newstate=tcp_state
 * tcptrace:format pid=optional comm=optional
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

/* The host writes this table's declaration and tcptrace_submit_events(): a
 * ring buffer or perf buffers as --buffer chooses (losses counted), or the
 * in-kernel counting of the metrics declared above. */
/* tcptrace:output events event */

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
    tcptrace_submit_events(args, &e);
    return 0;
}
