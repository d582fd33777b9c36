/*
 * plugins/protocol/http/http_stats.c: the statistics of the dispatcher's
 * state view as the HTTP front-end shows them: the server's and each
 * function's in /api/status (JSON), and all of them as Prometheus text in
 * /metrics.
 *
 * Both are driven by frontend.h's lists (GM_VIEW_SERVER_STATS,
 * GM_VIEW_FUNCTION_COUNTERS, and for /metrics GM_VIEW_POLICY_STATS), laid
 * out here as tables: a statistic added there shows without code here.  A
 * function's policy (http_policy_json) is in its /api/status object, and
 * in /api/policies (http_lifecycle.c).  Runs on the dispatcher thread,
 * inside serve() (http_serve.c), and only reads the view it is given.
 *
 * Both stay within the page's limit (w->max, --max-output-size): they list
 * the functions that fit, in the view's order, and say whether some were
 * left out.  /metrics escapes each function's name once and copies it
 * into the function's ten samples (fourteen for a function with a policy:
 * GM_VIEW_POLICY_STATS's families list only those).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "plugins/protocol/http/http_int.h"

const char *const http_prio_name[3] = {"high", "normal", "low"};

/* ---- the server's statistics (frontend.h: GM_VIEW_SERVER_STATS) ---- */

enum stat_kind { STAT_STR, STAT_BOOL, STAT_U64, STAT_I64, STAT_MS };

/* One statistic of struct gm_view_server: where it is and how it shows. */
struct server_stat {
    enum stat_kind kind;
    size_t off;                 /* its member */
    const char *json;           /* dotted path in /api/status, or NULL */
    unsigned place;             /* its place among the server's samples of /metrics; 0: none */
    const char *metric, *help;
    const char *label;          /* label name, or NULL */
    const char *label_value;    /* the label's value, or NULL: */
    size_t label_off;           /* the string member that holds it */
};

#define SERVER_STAT(kind, field, json, metric) \
    {STAT_##kind, offsetof(struct gm_view_server, field), json, metric},
static const struct server_stat server_stats[] = {GM_VIEW_SERVER_STATS(SERVER_STAT)};
#undef SERVER_STAT
#define NSTATS (sizeof server_stats / sizeof server_stats[0])

/* The string member of s at off. */
static const char *
stat_str(const struct gm_view_server *s, size_t off)
{
    return *(const char *const *)((const char *)s + off);
}

/* A statistic's value: in JSON (a string quoted, a bool true or false) or,
   with prom, as a Prometheus sample's (a string 1, a bool 1 or 0). */
static void
stat_value(struct gm_bytes *w, const struct server_stat *st, const struct gm_view_server *s, bool prom)
{
    const void *p = (const char *)s + st->off;
    switch (st->kind) {
    case STAT_STR:
        if (prom)
            gm_bytes_str(w, "1");
        else
            http_json_cstr(w, stat_str(s, st->off));
        break;
    case STAT_BOOL:
        gm_bytes_str(w, *(const bool *)p ? (prom ? "1" : "true") : (prom ? "0" : "false"));
        break;
    case STAT_U64:
        http_fmt(w, "%llu", (unsigned long long)*(const uint64_t *)p);
        break;
    case STAT_I64:
        http_fmt(w, "%lld", (long long)*(const int64_t *)p);
        break;
    case STAT_MS:
        http_fmt(w, "%.3f", *(const int64_t *)p / 1000.0);
        break;
    }
}

/* How many objects a dotted JSON path opens (its dots). */
static size_t
path_depth(const char *path)
{
    size_t n = 0;
    for (; *path; path++)
        n += *path == '.';
    return n;
}

/* How many leading objects two dotted paths share. */
static size_t
path_common(const char *a, const char *b)
{
    size_t n = 0;
    for (size_t i = 0; a[i] && a[i] == b[i]; i++)
        n += a[i] == '.';
    return n;
}

/* The server's statistics as the members "server":{...},"totals":{...} of
   /api/status: each at its dotted path, in the list's order, the objects
   of the paths opened and closed as they go. */
static void
server_json(struct gm_bytes *w, const struct gm_view_server *s)
{
    const char *prev = NULL; /* the path written last */
    for (size_t i = 0; i < NSTATS; i++) {
        const struct server_stat *st = &server_stats[i];
        if (!st->json)
            continue;
        size_t common = prev ? path_common(prev, st->json) : 0;
        for (size_t k = prev ? path_depth(prev) : 0; k > common; k--)
            gm_bytes_str(w, "}");
        if (prev)
            gm_bytes_str(w, ",");
        const char *c = st->json;
        for (size_t k = 0; k < common; k++)
            c = strchr(c, '.') + 1;
        for (const char *dot; (dot = strchr(c, '.')); c = dot + 1)
            http_fmt(w, "\"%.*s\":{", (int)(dot - c), c);
        http_fmt(w, "\"%s\":", c);
        stat_value(w, st, s, false);
        prev = st->json;
    }
    for (size_t k = prev ? path_depth(prev) : 0; k > 0; k--)
        gm_bytes_str(w, "}");
}

/* The HELP and TYPE lines that open a family of /metrics: a name that ends
   in "_total" is a counter's, any other a gauge's. */
static void
family_head(struct gm_bytes *w, const char *name, const char *help)
{
    size_t n = strlen(name);
    bool counter = n >= 6 && strcmp(name + n - 6, "_total") == 0;
    http_fmt(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, counter ? "counter" : "gauge");
}

/* One server sample of /metrics, after its family's head unless prev, the
   sample before it, is of the same family. */
static void
server_sample(struct gm_bytes *w, const struct server_stat *st, const struct server_stat *prev,
              const struct gm_view_server *s)
{
    if (!prev || strcmp(prev->metric, st->metric) != 0)
        family_head(w, st->metric, st->help);
    gm_bytes_str(w, st->metric);
    if (st->label) {
        const char *v = st->label_value ? st->label_value : stat_str(s, st->label_off);
        http_fmt(w, "{%s=\"", st->label);
        http_label(w, v, strlen(v));
        gm_bytes_str(w, "\"}");
    }
    gm_bytes_str(w, " ");
    stat_value(w, st, s, true);
    gm_bytes_str(w, "\n");
}

/* The server's samples of /metrics by their places: the strings' (info
   samples) with strings, else the others. */
static void
server_samples(struct gm_bytes *w, const struct gm_view_server *s, bool strings)
{
    unsigned last = 0;
    for (size_t i = 0; i < NSTATS; i++)
        if (server_stats[i].place > last)
            last = server_stats[i].place;
    const struct server_stat *prev = NULL;
    for (unsigned place = 1; place <= last; place++) {
        for (size_t i = 0; i < NSTATS; i++) {
            const struct server_stat *st = &server_stats[i];
            if (st->place != place || (st->kind == STAT_STR) != strings)
                continue;
            server_sample(w, st, prev, s);
            prev = st;
        }
    }
}

/* ---- a function's statistics ---- */

static uint64_t
fn_queued(const struct gm_view_function *f)
{
    return (uint64_t)f->queued[0] + f->queued[1] + f->queued[2];
}

static uint64_t
fn_total(const struct gm_view_function *f)
{
    return fn_queued(f) + f->running;
}

static uint64_t
fn_running(const struct gm_view_function *f)
{
    return f->running;
}

static uint64_t
fn_workers(const struct gm_view_function *f)
{
    return f->workers;
}

/* A family of /metrics with a sample for each function: a gauge computed
   by value(), or a counter of frontend.h's GM_VIEW_FUNCTION_COUNTERS, the
   uint64_t member at off, which the function's JSON object shows too; or,
   for the functions with a policy only, a statistic of
   GM_VIEW_POLICY_STATS, the member at off of the function's policy. */
struct fn_family {
    const char *metric, *help;
    uint64_t (*value)(const struct gm_view_function *f); /* NULL for a counter */
    size_t off;         /* a counter's member */
    const char *json;   /* a counter's key in the function's JSON object, else NULL */
    bool by_priority;   /* a sample for each priority, of queued[] */
    bool policy;        /* off is in struct gm_view_policy: only functions with one */
};

#define FN_COUNTER(unused, field, json, metric, help) \
    {metric, help, NULL, offsetof(struct gm_view_function, field), json, false, false},
#define FN_POLICY(unused, field, metric, help) \
    {metric, help, NULL, offsetof(struct gm_view_policy, field), NULL, false, true},
/* The functions' families in the order of /metrics. */
static const struct fn_family fn_families[] = {
    {"gearman_jobs", "Jobs of the function, queued and running.", fn_total, 0, NULL, false, false},
    {"gearman_jobs_running", "Jobs of the function a worker runs now.", fn_running, 0, NULL, false, false},
    {"gearman_jobs_waiting", "Jobs of the function waiting for a worker.", fn_queued, 0, NULL, false, false},
    {"gearman_workers", "Workers registered for the function.", fn_workers, 0, NULL, false, false},
    GM_VIEW_FUNCTION_COUNTERS(FN_COUNTER, 0)
    {"gearman_jobs_queued", "Jobs of the function waiting, by priority.", NULL, 0, NULL, true, false},
    GM_VIEW_POLICY_STATS(FN_POLICY, 0)
};
#undef FN_COUNTER
#undef FN_POLICY
#define NFAMILIES (sizeof fn_families / sizeof fn_families[0])

static uint64_t
fn_value(const struct fn_family *fam, const struct gm_view_function *f)
{
    if (fam->value)
        return fam->value(f);
    const char *base = fam->policy ? (const char *)f->policy : (const char *)f;
    return *(const uint64_t *)(base + fam->off);
}

void
http_policy_json(struct gm_bytes *w, const struct gm_view_policy *p)
{
    http_fmt(w, "\"retries\":%u,\"backoff\":%u,\"max_backoff\":%u,\"timeout\":%u,\"concurrency\":%u,\"paused\":%s",
             p->retries, p->backoff_ms, p->max_backoff_ms, p->timeout_s, p->concurrency, p->paused ? "true" : "false");
}

/* A function's object in the "functions" array of /api/status (a list of
   the page). */
static void
add_function_json(void *arg, const struct gm_view_function *f)
{
    struct http_list *l = arg;
    struct gm_bytes *w = l->w;
    if (!http_item_begin(l))
        return;
    http_json_sep(w);
    gm_bytes_str(w, "{\"name\":");
    http_json_str(w, f->name, f->name_len);
    http_fmt(w,
             ",\"total\":%llu,\"queued\":%llu,\"running\":%u,\"workers\":%u,"
             "\"queued_by_priority\":{\"high\":%u,\"normal\":%u,\"low\":%u},"
             "\"maxqueue\":{\"high\":%u,\"normal\":%u,\"low\":%u}",
             (unsigned long long)fn_total(f), (unsigned long long)fn_queued(f), f->running, f->workers,
             f->queued[0], f->queued[1], f->queued[2], f->max_queue[0], f->max_queue[1], f->max_queue[2]);
    for (size_t i = 0; i < NFAMILIES; i++)
        if (fn_families[i].json)
            http_fmt(w, ",\"%s\":%llu", fn_families[i].json, (unsigned long long)fn_value(&fn_families[i], f));
    gm_bytes_str(w, ",\"oldest_queued_age_s\":");
    if (f->oldest_queued_ms < 0)
        gm_bytes_str(w, "null");
    else
        http_fmt(w, "%.3f", f->oldest_queued_ms / 1000.0);
    if (f->policy && f->policy->listed) {
        gm_bytes_str(w, ",\"policy\":{");
        http_policy_json(w, f->policy);
        gm_bytes_str(w, "}}");
    } else {
        gm_bytes_str(w, ",\"policy\":null}");
    }
    http_item_end(l);
}

/* /metrics's functions: those that fit in the page, the first n in the
   view's order, with their label values escaped once, each as its length
   (uint32_t) then its bytes, in labels. */
struct fn_fit {
    struct gm_bytes labels;
    size_t left;      /* bytes the functions' samples may still take */
    size_t fixed[2];  /* what a function's samples take besides their labels, at most:
                         [0] in every function's families, [1] in the policy ones */
    size_t samples[2];/* samples per function, in the same families */
    uint64_t n;
    bool cut;         /* a function did not fit: it and the rest are left out */
};

/* The sample of /metrics before its label value, and after it up to its
   value (the priority's label, if any, between). */
#define SAMPLE_OPEN "{function=\""
#define SAMPLE_CLOSE "\"} "
#define SAMPLE_PRIO "\",priority=\""

/* Sets fit's fixed and samples from the families. */
static void
sample_cost(struct fn_fit *fit)
{
    size_t longest_prio = 0;
    for (int p = 0; p < 3; p++)
        if (strlen(http_prio_name[p]) > longest_prio)
            longest_prio = strlen(http_prio_name[p]);
    for (size_t i = 0; i < NFAMILIES; i++) {
        size_t k = fn_families[i].by_priority ? 3 : 1;
        size_t one = strlen(fn_families[i].metric) + strlen(SAMPLE_OPEN) + strlen(SAMPLE_CLOSE) +
                     20 /* a uint64_t's digits */ + 1 /* newline */;
        if (fn_families[i].by_priority)
            one += strlen(SAMPLE_PRIO) + longest_prio;
        fit->fixed[fn_families[i].policy] += k * one;
        fit->samples[fn_families[i].policy] += k;
    }
}

/* Pass one: whether the function's samples fit in what is left; its label
   value escaped into fit->labels if they do, else the list is cut. */
static void
fit_function(void *arg, const struct gm_view_function *f)
{
    struct fn_fit *fit = arg;
    struct gm_bytes *b = &fit->labels;
    if (fit->cut)
        return;
    size_t mark = b->len;
    uint32_t len = 0;
    gm_bytes_add(b, &len, sizeof len);
    http_label(b, f->name, f->name_len);
    size_t esc = b->len - mark - sizeof len;
    size_t cost = fit->fixed[0] + fit->samples[0] * esc;
    if (f->policy)
        cost += fit->fixed[1] + fit->samples[1] * esc;
    if (b->failed || cost > fit->left) {
        b->len = mark; /* nothing past mark is kept */
        b->failed = false;
        fit->cut = true;
        return;
    }
    len = (uint32_t)esc;
    memcpy(b->b->data + mark, &len, sizeof len);
    fit->left -= cost;
    fit->n++;
}

struct metrics_ctx {
    struct gm_bytes *w;
    const struct fn_family *fam;
    const struct fn_fit *fit;
    size_t at;    /* the next function's label in fit->labels */
    uint64_t i;   /* functions written in this family */
};

/* One sample: the family's name, the function's label value (escaped),
   the priority's (NULL: none), the value. */
static void
sample(struct gm_bytes *w, const char *metric, const char *label, uint32_t len, const char *prio, uint64_t v)
{
    char num[24];
    size_t k = gm_fmt_u64(num, v);
    num[k++] = '\n';
    gm_bytes_str(w, metric);
    gm_bytes_str(w, SAMPLE_OPEN);
    gm_bytes_add(w, label, len);
    if (prio) {
        gm_bytes_str(w, SAMPLE_PRIO);
        gm_bytes_str(w, prio);
    }
    gm_bytes_str(w, SAMPLE_CLOSE);
    gm_bytes_add(w, num, k);
}

/* Pass two, for each family: the sample (or, by priority, the samples) of
   one function, if it is among those that fit. */
static void
metric_fn(void *arg, const struct gm_view_function *f)
{
    struct metrics_ctx *m = arg;
    if (m->i == m->fit->n)
        return;
    m->i++;
    const char *at = m->fit->labels.b->data + m->at;
    uint32_t len;
    memcpy(&len, at, sizeof len);
    m->at += sizeof len + len;
    if (m->fam->policy && !f->policy)
        return;
    if (!m->fam->by_priority) {
        sample(m->w, m->fam->metric, at + sizeof len, len, NULL, fn_value(m->fam, f));
        return;
    }
    for (int p = 0; p < 3; p++)
        sample(m->w, m->fam->metric, at + sizeof len, len, http_prio_name[p], f->queued[p]);
}

void
http_metrics(struct gm_bytes *w, const struct gm_state_view *v)
{
    struct gm_view_server s;
    v->server(v->d, &s);
    gm_bytes_str(w, "# HELP gearman_up Whether the job server answers.\n# TYPE gearman_up gauge\ngearman_up 1\n");
    server_samples(w, &s, true);
    /* the functions that fit, within the page's limit less its room for
       the family heads and the samples after */
    size_t max = w->max ? w->max : UINT32_MAX;
    struct fn_fit fit = {0};
    fit.labels.max = max;
    sample_cost(&fit);
    fit.left = w->len < max - PAGE_ROOM ? max - PAGE_ROOM - w->len : 0;
    v->each_function(v->d, fit_function, &fit);
    for (size_t i = 0; i < NFAMILIES; i++) {
        const struct fn_family *fam = &fn_families[i];
        family_head(w, fam->metric, fam->help);
        struct metrics_ctx m = {w, fam, &fit, 0, 0};
        v->each_function(v->d, metric_fn, &m);
    }
    free(fit.labels.b);
    server_samples(w, &s, false);
    if (fit.cut)
        http_fmt(w, "# %llu of %llu functions listed: this page stops at --max-output-size (%zu bytes)\n",
                 (unsigned long long)fit.n, (unsigned long long)s.functions, max);
    family_head(w, "gearman_metrics_truncated",
                "Whether this page leaves functions out to stay within --max-output-size.");
    gm_bytes_str(w, fit.cut ? "gearman_metrics_truncated 1\n" : "gearman_metrics_truncated 0\n");
}

void
http_status_json(struct gm_bytes *w, const struct gm_state_view *v)
{
    struct gm_view_server s;
    v->server(v->d, &s);
    gm_bytes_str(w, "{");
    server_json(w, &s);
    gm_bytes_str(w, ",\"functions\":[");
    struct http_list l = {.w = w};
    v->each_function(v->d, add_function_json, &l);
    http_fmt(w, "],\"truncated\":%s}\n", l.cut ? "true" : "false");
}
