/*
 * handlers.h: the dispatcher's handler layer, one entry per kind of
 * request, called by dispatcher.c (a table by packet type) and calling the
 * model (dispatcher_int.h) only.  Dispatcher thread only.
 */
#ifndef GM_DISP_HANDLERS_H
#define GM_DISP_HANDLERS_H

#include "libgearman-server/dispatch/dispatcher_int.h"

/* Field i of a parsed packet. */
static inline const char *
field(const struct gm_in *m, int i, size_t *len)
{
    *len = m->u.fields.len[i];
    return m->payload + m->u.fields.start[i];
}

/* A handler of one packet type, for peer p. */
typedef void gm_disp_handler(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m);

/* on_client.c */
gm_disp_handler on_submit, on_get_status, on_get_status_unique, on_option, on_set_client_id, on_echo;
/* A front-end (HTTP) request: a job submission, or a question answered from
   the state view. */
gm_disp_handler on_frontend;

/* on_worker.c */
gm_disp_handler on_can_do, on_cant_do, on_reset_abilities, on_pre_sleep, on_grab, on_work;

/* admin.c: runs one text command for peer p. */
void gm_admin_execute(struct gm_dispatcher *d, struct gm_peer *p, const struct gm_in *m);

/* view.c: sets up d->view. */
void gm_disp_view_init(struct gm_dispatcher *d);

#endif /* GM_DISP_HANDLERS_H */
