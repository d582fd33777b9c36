/*
 * replay.c: jobs read back from the queue backend at start-up, recreated
 * in the job store (model layer of the dispatcher).  Main thread, before
 * the dispatcher runs (the dispatcher's state is not shared yet).
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdio.h>
#include <string.h>

int
gm_disp_replay_row(struct gm_dispatcher *d, const struct gm_qrow *row, char *err, size_t errlen)
{
    if (row->handle_len == 0 || row->handle_len >= GM_HANDLE_MAX) {
        snprintf(err, errlen, "bad handle length %u", row->handle_len);
        return -1;
    }
    if (row->unique_len > GM_UNIQUE_MAX) {
        snprintf(err, errlen, "unique key longer than %d bytes", GM_UNIQUE_MAX);
        return -1;
    }
    if (row->priority < 0 || row->priority >= GM_PRIO_COUNT) {
        snprintf(err, errlen, "bad priority %d", row->priority);
        return -1;
    }
    const struct gm_name_fault *bad = gm_name_check(GM_NAME_FUNCTION, row->function, row->function_len);
    if (bad) {
        snprintf(err, errlen, "%s", bad->text);
        return -1;
    }
    if (job_find_handle(d, row->handle, row->handle_len))
        return 1;
    struct gm_function *fn = gm_disp_function_get(d, row->function, row->function_len);
    if (!fn) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct submit s = {0};
    s.handle = row->handle;
    s.handle_len = row->handle_len;
    s.fn = row->function;
    s.fn_len = row->function_len;
    s.unique = row->unique;
    s.unique_len = row->unique_len;
    s.data = row->data;
    s.data_len = row->data_len;
    s.prio = (uint8_t)row->priority;
    s.background = true;
    s.when = row->when > 0 && row->when <= GM_EPOCH_MAX ? row->when : 0;
    struct gm_job *job = job_create(d, fn, &s, NULL);
    if (!job) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (d->persist.active)
        job->flags |= GM_JOB_PERSISTED;
    /* Index the unique key unless another stored job already holds it:
       storage never merges jobs. */
    bool data_keyed;
    const char *key;
    size_t key_len;
    if (submit_unique_key(&s, &data_keyed, &key, &key_len) &&
        !job_unique_find(d, fn, data_keyed, key, key_len))
        job_index_unique(d, job, data_keyed, key, key_len);
    fn->queued[job->prio]++;
    job_place(d, job, true);
    if (row->lifecycle_len)
        lifecycle_replayed(d, job, row->lifecycle, row->lifecycle_len);
    /* New handles continue above the replayed ones of our prefix. */
    size_t plen = strlen(d->cfg->handle_prefix);
    uint64_t n;
    if (row->handle_len > plen + 1 && memcmp(row->handle, d->cfg->handle_prefix, plen) == 0 &&
        row->handle[plen] == ':' &&
        gm_parse_u64(row->handle + plen + 1, row->handle_len - plen - 1, UINT64_MAX - 1, &n) &&
        n >= d->next_handle)
        d->next_handle = n + 1;
    return 0;
}
