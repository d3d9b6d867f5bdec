/* serve.c - `sqserve serve`: model + scheduler + HTTP until drained.
 *
 * Shutdown: SIGTERM/SIGINT reach the scheduler's loop (uv_signal), which
 * flips /health to 503 and refuses new work, lets running and queued
 * sequences finish for up to --drain-timeout, then stops; main then waits
 * for the last bytes of open responses to leave and exits 0.
 */
#include "cli.h"
#include "server.h"

#include "../engine/gen.h"

#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *msg) {
    fprintf(stderr, "error: %s\n", msg);
    return 1;
}

static void model_id_of(const char *path, char *out, size_t n) {
    char *copy = strdup(path);
    const char *base = copy ? basename(copy) : path;
    snprintf(out, n, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
    free(copy);
}

int cmd_serve(const config_t *c) {
    const char *fmt = cfg_str(c, "log-format");
    if (strcmp(fmt, "text") && strcmp(fmt, "json")) return fail("--log-format must be text or json");
    signal(SIGPIPE, SIG_IGN); /* a vanished client must not kill the server */
    k_init();
    static model_t m;
    char err[512];
    double t0 = gen_now();
    if (model_load(&m, cfg_str(c, "model"), err, sizeof err) != 0) return fail(err);
    char id[256];
    if (cfg_str(c, "model-name")) snprintf(id, sizeof id, "%s", cfg_str(c, "model-name"));
    else model_id_of(cfg_str(c, "model"), id, sizeof id);

    long threads = cfg_int(c, "threads");
    if (threads <= 0) threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    int n_ctx = (int)cfg_int(c, "ctx");
    if (n_ctx <= 0) n_ctx = m.hp.n_ctx_train < 4096 ? m.hp.n_ctx_train : 4096;
    if (n_ctx > m.hp.n_ctx_train) {
        model_free(&m);
        snprintf(err, sizeof err, "--ctx %d exceeds the model's context of %d", n_ctx, m.hp.n_ctx_train);
        return fail(err);
    }
    sched_config_t sc = {.max_seqs = (int)cfg_int(c, "max-seqs"), .max_queue = (int)cfg_int(c, "max-queue"),
                         .max_batch_tokens = (int)cfg_int(c, "max-batch-tokens"), .n_ctx = n_ctx,
                         .threads = (int)threads,
                         .kv_mem = (size_t)(cfg_float(c, "kv-cache-mem") * 1024 * 1024),
                         .drain_timeout_s = cfg_float(c, "drain-timeout")};
    sched_t *sched = sched_new(&m, &sc, err, sizeof err);
    if (!sched) {
        model_free(&m);
        return fail(err);
    }
    static srv_t srv;
    srv = (srv_t){.m = &m, .sched = sched, .model_id = id, .api_key = cfg_str(c, "api-key"),
                  .max_body = (size_t)cfg_int(c, "max-body"),
                  .request_timeout_s = cfg_float(c, "request-timeout"),
                  .log_json = !strcmp(fmt, "json")};
    int port;
    if (sched_start(sched) != 0 ||
        http_start(&srv, cfg_str(c, "host"), (int)cfg_int(c, "port"), &port, err, sizeof err) != 0) {
        sched_drain(sched);
        sched_join(sched);
        sched_free(sched);
        model_free(&m);
        return fail(err[0] ? err : "cannot start the engine thread");
    }
    stats_data_t d;
    stats_snapshot(sched_stats(sched), &d);
    fprintf(stderr, "sqserve: serving %s on http://%s:%d (%d threads, %s kernels, ctx %d, "
            "%d KV blocks of %d tokens, max %d seqs; loaded in %.2f s)\n", id, cfg_str(c, "host"),
            port, (int)threads, k_isa_name(), n_ctx, d.kv_total, KV_BLOCK, sc.max_seqs,
            gen_now() - t0);
    sched_join(sched); /* returns once drained (SIGTERM/SIGINT) */
    for (int i = 0; i < 100; i++) { /* let the last response bytes leave */
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!info || info->num_connections == 0) break;
        usleep(20000);
    }
    http_stop(&srv);
    sched_free(sched);
    model_free(&m);
    fprintf(stderr, "sqserve: drained, exiting\n");
    return 0;
}
