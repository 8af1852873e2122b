/*
 * repair_http.c — gap repair's lane of the worker's REST engine
 * (base/loop_http.c, which paces every lane together within VoIPBIN's limit
 * per customer): GETs at voipbin.repair_rate, at most RH_MAX_RUNNING in
 * flight, a 429 waited out and sent again.
 */
#include "voipbin.h"

#include "repair/repair_http.h"
#include "base/loop_http.h"
#include "base/settings.h"

#define RH_USER_AGENT		"voipbin-postgres/1.1 (gap repair)"

static LhLane *lane = NULL;

static LhLane *
repair_lane(void)
{
	if (lane == NULL)
		lane = lh_lane_create(RH_USER_AGENT, &voipbin_repair_rate, RH_MAX_RUNNING, LH_429_RESEND);
	return lane;
}

bool
rh_configure(const char *api_url, const char *credential, CredentialKind kind,
			 const char *ca_file, const char **error)
{
	return lh_configure(repair_lane(), api_url, credential, kind, ca_file, error);
}

void
rh_submit(const char *path, void *tag)
{
	LhSend		s = {0};

	s.path = path;
	s.tag = tag;
	lh_submit(repair_lane(), &s);
}

long
rh_step(void)
{
	return lh_step(repair_lane());
}

RhResult *
rh_take(void)
{
	return lh_take(repair_lane());
}

void
rh_result_free(RhResult *r)
{
	lh_result_free(r);
}

int
rh_outstanding(void)
{
	return lh_outstanding(repair_lane());
}

void
rh_cancel_all(void)
{
	lh_cancel_all(repair_lane());
}

void
rh_close_idle(void)
{
	lh_close_idle();
}
