/* conns.c - the connection table and the receive deadline (slowloris).
 *
 * libmicrohttpd runs a thread per connection and its only timeout,
 * MHD_OPTION_CONNECTION_TIMEOUT, is an inactivity timeout: a client that
 * sends one byte a second never trips it and holds its thread (and, with
 * enough of them, every connection slot) forever. It also cannot be used
 * while a handler blocks on the engine without risking the cut of a long
 * generation. So sqserve enforces its own rule instead:
 *
 *   a connection is "receiving" from its accept, and again from the end of
 *   each response (keep-alive idle time counts), until the last byte of a
 *   request (headers and body) has arrived; a connection that stays
 *   receiving longer than --receive-timeout is shut down.
 *
 * While a request is being processed (waiting on the engine, streaming)
 * there is no deadline here: --request-timeout bounds that. A reaper
 * thread scans the table a few times per timeout and shutdown()s the
 * sockets of late connections; the connection's own thread then sees the
 * socket end and closes it as for any vanished client. The table entry is
 * created and removed by libmicrohttpd's connection notifications (STARTED,
 * CLOSED) under conns_mu; the socket is closed only after CLOSED, so an fd
 * in the table is never one that was reused by a later connection.
 *
 * Trade-off: thread-per-connection keeps handlers simple (they block), at
 * the cost of one thread per open connection; --max-connections bounds
 * that, and the deadline keeps idle and trickling clients from pinning the
 * slots. An attacker opening connections faster than the deadline frees
 * them can still fill the table; a reverse proxy in front is the answer.
 */
#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct conn_slot {
    int fd;
    int receiving;          /* 1 while a request is being received or the connection idles */
    double since;           /* when the current receiving phase began */
    struct conn_slot *prev, *next;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                  enum MHD_ConnectionNotificationCode code) {
    srv_t *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_slot_t *e = calloc(1, sizeof *e);
        if (!e) return; /* untracked: served, but without a deadline */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        e->fd = ci ? ci->connect_fd : -1;
        e->receiving = 1;
        e->since = now_s();
        pthread_mutex_lock(&s->conns_mu);
        e->next = s->conns;
        if (s->conns) s->conns->prev = e;
        s->conns = e;
        pthread_mutex_unlock(&s->conns_mu);
        *socket_context = e;
        return;
    }
    conn_slot_t *e = *socket_context;
    if (!e) return;
    pthread_mutex_lock(&s->conns_mu);
    if (e->prev) e->prev->next = e->next;
    else s->conns = e->next;
    if (e->next) e->next->prev = e->prev;
    pthread_mutex_unlock(&s->conns_mu);
    free(e);
    *socket_context = NULL;
}

static conn_slot_t *slot_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void conns_request_received(srv_t *s, struct MHD_Connection *c) {
    conn_slot_t *e = slot_of(c);
    if (!e) return;
    pthread_mutex_lock(&s->conns_mu);
    e->receiving = 0;
    pthread_mutex_unlock(&s->conns_mu);
}

void conns_request_done(srv_t *s, struct MHD_Connection *c) {
    conn_slot_t *e = slot_of(c);
    if (!e) return;
    pthread_mutex_lock(&s->conns_mu);
    e->receiving = 1;
    e->since = now_s();
    pthread_mutex_unlock(&s->conns_mu);
}

static void *reaper_main(void *arg) {
    srv_t *s = arg;
    double period = s->receive_timeout_s / 4;
    if (period > 1) period = 1;
    if (period < 0.05) period = 0.05;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->conns_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long ns = ts.tv_nsec + (long)(period * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        int rc = pthread_cond_timedwait(&s->conns_cv, &s->conns_mu, &ts);
        if (rc != 0 && rc != ETIMEDOUT) break;
        double t = now_s();
        for (conn_slot_t *e = s->conns; e; e = e->next)
            if (e->receiving && e->fd >= 0 && t - e->since > s->receive_timeout_s) {
                shutdown(e->fd, SHUT_RDWR); /* its thread sees the end and closes it */
                e->receiving = 0;           /* once */
                s->receive_timeouts++;
            }
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

int conns_init(srv_t *s) {
    pthread_condattr_t ca;
    if (pthread_mutex_init(&s->conns_mu, NULL) != 0) return -1;
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&s->conns_cv, &ca) != 0) {
        pthread_mutex_destroy(&s->conns_mu);
        return -1;
    }
    pthread_condattr_destroy(&ca);
    s->conns_ready = 1;
    return 0;
}

int conns_start_reaper(srv_t *s) {
    if (s->receive_timeout_s <= 0) return 0; /* 0: no deadline */
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) return -1;
    s->reaper_on = 1;
    return 0;
}

void conns_stop(srv_t *s) {
    if (!s->conns_ready) return;
    if (s->reaper_on) {
        pthread_mutex_lock(&s->conns_mu);
        s->conns_stop = 1;
        pthread_cond_signal(&s->conns_cv);
        pthread_mutex_unlock(&s->conns_mu);
        pthread_join(s->reaper, NULL);
        s->reaper_on = 0;
    }
    /* MHD_stop_daemon has closed every connection (CLOSED freed its slot) */
    pthread_cond_destroy(&s->conns_cv);
    pthread_mutex_destroy(&s->conns_mu);
    s->conns_ready = 0;
}

uint64_t conns_receive_timeouts(srv_t *s) {
    pthread_mutex_lock(&s->conns_mu);
    uint64_t n = s->receive_timeouts;
    pthread_mutex_unlock(&s->conns_mu);
    return n;
}

unsigned conns_open(srv_t *s) {
    const union MHD_DaemonInfo *info =
        s->daemon ? MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS) : NULL;
    return info ? info->num_connections : 0;
}
