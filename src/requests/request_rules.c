/*
 * request_rules.c — the classes of requests and the verdicts on their
 * answers (request_rules.h).  The table behind them is docs/requests.md,
 * "What VoIPBIN's answers mean"; in short:
 *
 *   - a 2xx is done; a 429 is refused before any handler ran, so it is sent
 *     again (after Retry-After) whatever the request;
 *   - nothing sent (DNS, connect, TLS) is sent again whatever the request;
 *   - a safe request (a repeat is harmless) is sent again after a 5xx or no
 *     answer, and so is a transcription's start (VoIPBIN refuses a second
 *     one for the call with a 409 that means done); any other one is then
 *     unknown: VoIPBIN's 503 REQUEST_TIMEOUT
 *     means its queue still holds the request and will run it, a timeout
 *     after sending may have reached it, a bare 5xx came from a proxy that
 *     may have passed the request on, and POST /calls answers 500 even when
 *     a call was made;
 *   - other 5xx answers in VoIPBIN's envelope, and 4xx, mean VoIPBIN said no,
 *     except the two that mean "already so": 409 TRANSCRIBE_ALREADY_PROGRESSING
 *     on a transcription's start, 409 STATE_INVALID on a hangup (the call was
 *     deleted, so it has ended).
 */
#include "requests/request_rules.h"

#include <string.h>
#include <strings.h>

#define MAX_PATH_LEN 2048
#define MAX_BACKOFF_MS (60 * 1000)
#define MAX_RETRY_AFTER_S 300

/* The path without its query, compared segment by segment. */
typedef struct PathSegments
{
	int			n;
	const char *seg[6];
	size_t		len[6];
} PathSegments;

static void
split_path(const char *path, PathSegments *p)
{
	const char *s = path;

	p->n = 0;
	while (*s == '/')
		s++;
	while (*s && *s != '?' && *s != '#')
	{
		const char *start = s;

		while (*s && *s != '/' && *s != '?' && *s != '#')
			s++;
		if (p->n < (int) (sizeof(p->seg) / sizeof(p->seg[0])))
		{
			p->seg[p->n] = start;
			p->len[p->n] = (size_t) (s - start);
		}
		p->n++;
		while (*s == '/')
			s++;
	}
}

static bool
seg_is(const PathSegments *p, int i, const char *word)
{
	return i < p->n && i < 6 && p->len[i] == strlen(word) && strncmp(p->seg[i], word, p->len[i]) == 0;
}

bool
request_method_known(const char *method)
{
	static const char *const known[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(method, known[i]) == 0)
			return true;
	return false;
}

/* Whether the query has a parameter accesskey or token (the credential's two names). */
static bool
names_credential(const char *path)
{
	const char *q = strchr(path, '?');

	while (q != NULL)
	{
		q++;
		if (strncasecmp(q, "accesskey=", 10) == 0 || strncasecmp(q, "token=", 6) == 0)
			return true;
		q = strchr(q, '&');
	}
	return false;
}

/*
 * Whether a segment of the path before its query is "." or "..": libcurl
 * removes them (RFC 3986's dot-segment removal), so "/calls/c1/hangup/..?x"
 * would go out as another request than the one classified.
 */
static bool
has_dot_segment(const char *path)
{
	for (const char *s = path; *s && *s != '?'; s++)
	{
		size_t		seg;

		if (*s != '/')
			continue;
		seg = strcspn(s + 1, "/?");
		if ((seg == 1 && s[1] == '.') || (seg == 2 && s[1] == '.' && s[2] == '.'))
			return true;
	}
	return false;
}

/* Whether the path before its query holds %2e (a dot, encoded): no id or name of VoIPBIN's has one. */
static bool
encodes_a_dot(const char *path)
{
	for (const char *s = path; *s && *s != '?'; s++)
		if (s[0] == '%' && s[1] == '2' && (s[2] == 'e' || s[2] == 'E'))
			return true;
	return false;
}

const char *
request_path_problem(const char *path)
{
	size_t		len = strlen(path);

	if (path[0] != '/')
		return "A path starts with \"/\", relative to voipbin.api_url (e.g. /calls).";
	if (len > MAX_PATH_LEN)
		return "The path is longer than 2048 bytes.";
	for (const unsigned char *s = (const unsigned char *) path; *s; s++)
		if (*s <= ' ' || *s == 0x7f || *s == '#' || *s == '\\')
			return "A path has no spaces, control characters, \"#\" or \"\\\": percent-encode them.";
	if (strncmp(path, "//", 2) == 0 || strstr(path, "://") != NULL)
		return "The path is relative to voipbin.api_url: it names no host.";
	if (strncasecmp(path, "/v1.0/", 6) == 0 || strcasecmp(path, "/v1.0") == 0)
		return "The path is relative to voipbin.api_url, which ends in /v1.0 already: drop that prefix.";
	if (strstr(path, "/../") != NULL || strstr(path, "/./") != NULL ||
		(len >= 3 && strcmp(path + len - 3, "/..") == 0) ||
		(len >= 2 && strcmp(path + len - 2, "/.") == 0) || has_dot_segment(path))
		return "A path has no \".\" or \"..\" segments.";
	if (encodes_a_dot(path))
		return "A path has no percent-encoded \".\" (%2e) before its query: a server may read it as a dot segment.";
	if (names_credential(path))
		return "The worker adds the credential itself: a path never carries one (it would be stored in voipbin_requests).";
	return NULL;
}

RequestKind
request_kind(const char *method, const char *path)
{
	PathSegments p;

	if (strcmp(method, "GET") == 0)
		return REQ_SAFE;
	split_path(path, &p);
	if (strcmp(method, "POST") == 0 && p.n == 1 && seg_is(&p, 0, "transcribes"))
		return REQ_TRANSCRIBE_START;
	if (p.n == 3 && seg_is(&p, 0, "calls"))
	{
		/* state-setting: a repeat sets the same state */
		if ((strcmp(method, "POST") == 0 || strcmp(method, "DELETE") == 0) &&
			(seg_is(&p, 2, "hold") || seg_is(&p, 2, "mute") ||
			 seg_is(&p, 2, "moh") || seg_is(&p, 2, "silence")))
			return REQ_SAFE;
		if (strcmp(method, "POST") == 0 &&
			(seg_is(&p, 2, "hangup") || seg_is(&p, 2, "recording_stop")))
			return REQ_SAFE;
	}
	if (strcmp(method, "POST") == 0 && p.n == 3 && seg_is(&p, 2, "stop") &&
		(seg_is(&p, 0, "transcribes") || seg_is(&p, 0, "activeflows")))
		return REQ_SAFE;
	return REQ_UNSAFE;
}

static bool
reason_is(const char *reason, const char *word)
{
	return reason != NULL && strcmp(reason, word) == 0;
}

RequestVerdict
request_verdict(RequestKind kind, const char *method, const char *path,
				AttemptTransport transport, int status,
				const char *reason, bool enveloped)
{
	PathSegments p;

	if (transport == ATTEMPT_NOT_SENT)
		return VERDICT_RETRY;
	/* a transcription's start repeated is refused with a 409 that means done */
	if (transport == ATTEMPT_NO_ANSWER)
		return kind == REQ_UNSAFE ? VERDICT_UNKNOWN : VERDICT_RETRY;
	if (status >= 200 && status < 300)
		return VERDICT_DONE;
	if (status == 429)
		return VERDICT_RETRY;
	if (status == 409 && kind == REQ_TRANSCRIBE_START &&
		(reason_is(reason, "TRANSCRIBE_ALREADY_PROGRESSING") || reason_is(reason, "ALREADY_EXISTS")))
		return VERDICT_DONE;
	split_path(path, &p);
	if (status == 409 && reason_is(reason, "STATE_INVALID") && strcmp(method, "POST") == 0 &&
		p.n == 3 && seg_is(&p, 0, "calls") && seg_is(&p, 2, "hangup"))
		return VERDICT_DONE;
	/* VoIPBIN has no speech-to-text configured: refused, and so it stays */
	if (status == 503 && reason_is(reason, "STT_NOT_CONFIGURED"))
		return VERDICT_FAILED;
	if (status >= 500)
	{
		if (kind == REQ_SAFE)
			return VERDICT_RETRY;
		/* an ended call's transcription fails with a 500 in VoIPBIN's envelope */
		if (kind == REQ_TRANSCRIBE_START)
			return enveloped && status == 500 ? VERDICT_FAILED : VERDICT_RETRY;
		/* VoIPBIN's queue holds it still, and will run it */
		if (reason_is(reason, "REQUEST_TIMEOUT") || reason_is(reason, "REQUEST_CANCELED"))
			return VERDICT_UNKNOWN;
		/* not VoIPBIN's answer: a proxy in front, which may have passed it on */
		if (!enveloped)
			return VERDICT_UNKNOWN;
		/* POST /calls answers 500 when no destination succeeded, a call row possibly made */
		if (strcmp(method, "POST") == 0 && p.n == 1 && seg_is(&p, 0, "calls"))
			return VERDICT_UNKNOWN;
		return VERDICT_FAILED;
	}
	return VERDICT_FAILED;
}

long
request_backoff_ms(int attempts, long retry_after_s)
{
	long		ms = 1000;

	if (retry_after_s > 0)
		return (retry_after_s > MAX_RETRY_AFTER_S ? MAX_RETRY_AFTER_S : retry_after_s) * 1000L;
	for (int i = 1; i < attempts && ms < MAX_BACKOFF_MS; i++)
		ms *= 2;
	return ms > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : ms;
}

RequestVerdict
request_give_up(AttemptTransport last_transport, int last_status)
{
	if (last_transport == ATTEMPT_NOT_SENT ||
		(last_transport == ATTEMPT_ANSWERED && last_status == 429))
		return VERDICT_FAILED;
	return VERDICT_UNKNOWN;
}
