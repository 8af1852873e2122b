/*
 * request_rules_unit.c — src/requests/request_rules.c on its own, no
 * PostgreSQL: every row of its rules (request_rules.h; docs/requests.md,
 * "What VoIPBIN's answers mean"): the classes of requests, the verdict on
 * each kind of answer, the backoff, the state a request gives up in, and the
 * paths voipbin_request() refuses.  Built and run by test/test_request_rules.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "requests/request_rules.h"

static int	failures;
static int	checks;

#define CHECK(cond, ...) do { checks++; if (!(cond) && failures++ < 50) { \
	fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
	fputc('\n', stderr); } } while (0)

static const char *
kind_name(RequestKind k)
{
	return k == REQ_SAFE ? "SAFE" : k == REQ_TRANSCRIBE_START ? "TRANSCRIBE_START" : "UNSAFE";
}

static const char *
verdict_name(RequestVerdict v)
{
	switch (v)
	{
		case VERDICT_DONE:
			return "DONE";
		case VERDICT_FAILED:
			return "FAILED";
		case VERDICT_RETRY:
			return "RETRY";
		case VERDICT_UNKNOWN:
			return "UNKNOWN";
	}
	return "?";
}

static void
kind_is(const char *method, const char *path, RequestKind want)
{
	RequestKind got = request_kind(method, path);

	CHECK(got == want, "request_kind(%s, %s) = %s, want %s", method, path, kind_name(got), kind_name(want));
}

static void
test_kinds(void)
{
	static const char *const state_setting[] = {"hold", "mute", "moh", "silence"};
	char		path[128];

	/* a GET never changes anything */
	kind_is("GET", "/calls", REQ_SAFE);
	kind_is("GET", "/calls/6a7ee5a0-0000-4000-8000-000000000001", REQ_SAFE);
	kind_is("GET", "/anything/at/all?page_size=10", REQ_SAFE);

	/* a transcription's start: repeated, VoIPBIN refuses it with a 409 that means done */
	kind_is("POST", "/transcribes", REQ_TRANSCRIBE_START);
	kind_is("POST", "/transcribes/", REQ_TRANSCRIBE_START);
	kind_is("POST", "/transcribes?x=1", REQ_TRANSCRIBE_START);
	kind_is("PUT", "/transcribes", REQ_UNSAFE);
	kind_is("DELETE", "/transcribes", REQ_UNSAFE);

	/* state-setting: a repeat sets the same state */
	for (int i = 0; i < 4; i++)
	{
		snprintf(path, sizeof(path), "/calls/c1/%s", state_setting[i]);
		kind_is("POST", path, REQ_SAFE);
		kind_is("DELETE", path, REQ_SAFE);
		kind_is("PUT", path, REQ_UNSAFE);
		kind_is("PATCH", path, REQ_UNSAFE);
		snprintf(path, sizeof(path), "/calls/c1/%s/x", state_setting[i]);
		kind_is("POST", path, REQ_UNSAFE);
		snprintf(path, sizeof(path), "/queues/c1/%s", state_setting[i]);
		kind_is("POST", path, REQ_UNSAFE);
	}

	/* the stops and the hangup: a repeat finds it stopped */
	kind_is("POST", "/calls/c1/hangup", REQ_SAFE);
	kind_is("POST", "/calls/c1/hangup?reason=x", REQ_SAFE);
	kind_is("POST", "//calls//c1//hangup", REQ_SAFE);
	kind_is("DELETE", "/calls/c1/hangup", REQ_UNSAFE);
	kind_is("POST", "/calls/c1/recording_stop", REQ_SAFE);
	kind_is("POST", "/calls/c1/recording_start", REQ_UNSAFE);
	kind_is("POST", "/transcribes/t1/stop", REQ_SAFE);
	kind_is("POST", "/activeflows/a1/stop", REQ_SAFE);
	kind_is("POST", "/recordings/r1/stop", REQ_UNSAFE);
	kind_is("GET", "/transcribes/t1/stop", REQ_SAFE);
	kind_is("DELETE", "/transcribes/t1/stop", REQ_UNSAFE);

	/* any other: a repeat may act twice */
	kind_is("POST", "/calls", REQ_UNSAFE);
	kind_is("POST", "/messages", REQ_UNSAFE);
	kind_is("POST", "/calls/c1/talk", REQ_UNSAFE);
	kind_is("PUT", "/customer", REQ_UNSAFE);
	kind_is("DELETE", "/calls/c1", REQ_UNSAFE);
	kind_is("POST", "/calls/hangup", REQ_UNSAFE);
	kind_is("POST", "/", REQ_UNSAFE);
	kind_is("POST", "", REQ_UNSAFE);
	/* methods are upper case by then (voipbin_request()); anything else is taken as unsafe */
	kind_is("post", "/calls/c1/hangup", REQ_UNSAFE);
	kind_is("HEAD", "/calls", REQ_UNSAFE);
}

static void
verdict_is(RequestKind kind, const char *method, const char *path, AttemptTransport t, int status,
		   const char *reason, bool enveloped, RequestVerdict want)
{
	RequestVerdict got = request_verdict(kind, method, path, t, status, reason, enveloped);

	CHECK(got == want, "request_verdict(%s, %s %s, transport %d, %d, %s, %s) = %s, want %s",
		  kind_name(kind), method, path, (int) t, status, reason ? reason : "NULL",
		  enveloped ? "enveloped" : "bare", verdict_name(got), verdict_name(want));
}

/* kind, method and path of a representative of each class */
static const struct
{
	RequestKind kind;
	const char *method;
	const char *path;
}			classes[] = {
	{REQ_SAFE, "GET", "/calls/c1"},
	{REQ_SAFE, "POST", "/calls/c1/hangup"},
	{REQ_TRANSCRIBE_START, "POST", "/transcribes"},
	{REQ_UNSAFE, "POST", "/calls"},
	{REQ_UNSAFE, "POST", "/messages"},
};

#define N_CLASSES (sizeof(classes) / sizeof(classes[0]))

static void
test_verdicts(void)
{
	static const int success[] = {200, 201, 202, 204, 299};
	static const int refused[] = {400, 401, 403, 404, 405, 410, 422};

	for (size_t c = 0; c < N_CLASSES; c++)
	{
		RequestKind k = classes[c].kind;
		const char *m = classes[c].method;
		const char *p = classes[c].path;

		/* never sent: VoIPBIN cannot have seen it, whatever it is */
		verdict_is(k, m, p, ATTEMPT_NOT_SENT, 0, NULL, false, VERDICT_RETRY);
		/* sent, no answer: repeated only when a repeat is harmless */
		verdict_is(k, m, p, ATTEMPT_NO_ANSWER, 0, NULL, false,
				   k == REQ_UNSAFE ? VERDICT_UNKNOWN : VERDICT_RETRY);
		for (size_t i = 0; i < sizeof(success) / sizeof(success[0]); i++)
			verdict_is(k, m, p, ATTEMPT_ANSWERED, success[i], NULL, false, VERDICT_DONE);
		/* a 429 is refused before any handler ran */
		verdict_is(k, m, p, ATTEMPT_ANSWERED, 429, NULL, false, VERDICT_RETRY);
		verdict_is(k, m, p, ATTEMPT_ANSWERED, 429, "TOO_MANY_REQUESTS", true, VERDICT_RETRY);
		/* VoIPBIN said no */
		for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		{
			verdict_is(k, m, p, ATTEMPT_ANSWERED, refused[i], "INVALID_REQUEST", true, VERDICT_FAILED);
			verdict_is(k, m, p, ATTEMPT_ANSWERED, refused[i], NULL, false, VERDICT_FAILED);
		}
		verdict_is(k, m, p, ATTEMPT_ANSWERED, 409, "CONFLICT", true, VERDICT_FAILED);
		/* no redirect is followed (it would carry the access key away): not done */
		verdict_is(k, m, p, ATTEMPT_ANSWERED, 302, NULL, false, VERDICT_FAILED);
	}

	/* 5xx: safe ones again, whatever said it */
	verdict_is(REQ_SAFE, "GET", "/calls/c1", ATTEMPT_ANSWERED, 500, "INTERNAL", true, VERDICT_RETRY);
	verdict_is(REQ_SAFE, "GET", "/calls/c1", ATTEMPT_ANSWERED, 502, NULL, false, VERDICT_RETRY);
	verdict_is(REQ_SAFE, "POST", "/calls/c1/hangup", ATTEMPT_ANSWERED, 503, "REQUEST_TIMEOUT", true, VERDICT_RETRY);
	verdict_is(REQ_SAFE, "POST", "/calls/c1/hangup", ATTEMPT_ANSWERED, 504, NULL, false, VERDICT_RETRY);

	/* a transcription's start: VoIPBIN's 500 is an ended call; anything else again */
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 500, "INTERNAL", true, VERDICT_FAILED);
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 500, NULL, false, VERDICT_RETRY);
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 503, "REQUEST_TIMEOUT", true, VERDICT_RETRY);
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 502, NULL, false, VERDICT_RETRY);
	/* ... and one running already is done */
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 409,
			   "TRANSCRIBE_ALREADY_PROGRESSING", true, VERDICT_DONE);
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 409, "ALREADY_EXISTS", true, VERDICT_DONE);
	verdict_is(REQ_TRANSCRIBE_START, "POST", "/transcribes", ATTEMPT_ANSWERED, 409, NULL, false, VERDICT_FAILED);
	verdict_is(REQ_UNSAFE, "POST", "/calls", ATTEMPT_ANSWERED, 409, "TRANSCRIBE_ALREADY_PROGRESSING", true, VERDICT_FAILED);

	/* a hangup of a call already deleted: it has ended */
	verdict_is(REQ_SAFE, "POST", "/calls/c1/hangup", ATTEMPT_ANSWERED, 409, "STATE_INVALID", true, VERDICT_DONE);
	verdict_is(REQ_SAFE, "POST", "/calls/c1/hangup?x=1", ATTEMPT_ANSWERED, 409, "STATE_INVALID", true, VERDICT_DONE);
	verdict_is(REQ_SAFE, "POST", "/calls/c1/hold", ATTEMPT_ANSWERED, 409, "STATE_INVALID", true, VERDICT_FAILED);
	verdict_is(REQ_UNSAFE, "POST", "/calls/c1/talk", ATTEMPT_ANSWERED, 409, "STATE_INVALID", true, VERDICT_FAILED);

	/* unsafe 5xx: VoIPBIN's queue may still run it, a proxy may have passed it on */
	verdict_is(REQ_UNSAFE, "POST", "/messages", ATTEMPT_ANSWERED, 503, "REQUEST_TIMEOUT", true, VERDICT_UNKNOWN);
	verdict_is(REQ_UNSAFE, "POST", "/messages", ATTEMPT_ANSWERED, 503, "REQUEST_CANCELED", true, VERDICT_UNKNOWN);
	verdict_is(REQ_UNSAFE, "POST", "/messages", ATTEMPT_ANSWERED, 502, NULL, false, VERDICT_UNKNOWN);
	verdict_is(REQ_UNSAFE, "POST", "/messages", ATTEMPT_ANSWERED, 500, NULL, false, VERDICT_UNKNOWN);
	/* POST /calls answers 500 when no destination succeeded, a call row possibly made */
	verdict_is(REQ_UNSAFE, "POST", "/calls", ATTEMPT_ANSWERED, 500, "INTERNAL", true, VERDICT_UNKNOWN);
	verdict_is(REQ_UNSAFE, "POST", "/calls?x=1", ATTEMPT_ANSWERED, 500, "INTERNAL", true, VERDICT_UNKNOWN);
	/* any other 5xx in VoIPBIN's envelope: it said no */
	verdict_is(REQ_UNSAFE, "POST", "/messages", ATTEMPT_ANSWERED, 500, "INTERNAL", true, VERDICT_FAILED);
	verdict_is(REQ_UNSAFE, "POST", "/calls/c1/talk", ATTEMPT_ANSWERED, 503, "SERVICE_UNAVAILABLE", true, VERDICT_FAILED);
	verdict_is(REQ_UNSAFE, "PUT", "/calls", ATTEMPT_ANSWERED, 500, "INTERNAL", true, VERDICT_FAILED);

	/* the invariant the outbox rests on: an unsafe request is repeated only when it provably never arrived */
	for (int status = 100; status < 600; status++)
		for (int e = 0; e < 2; e++)
		{
			RequestVerdict v = request_verdict(REQ_UNSAFE, "POST", "/calls", ATTEMPT_ANSWERED, status,
											   e ? "REQUEST_TIMEOUT" : NULL, e);

			CHECK(v != VERDICT_RETRY || status == 429, "unsafe POST /calls retried after %d", status);
		}
}

static void
test_backoff(void)
{
	static const struct
	{
		int			attempts;
		long		retry_after_s;
		long		want;
	}			rows[] = {
		{0, 0, 1000}, {1, 0, 1000}, {2, 0, 2000}, {3, 0, 4000}, {4, 0, 8000}, {5, 0, 16000},
		{6, 0, 32000}, {7, 0, 60000}, {8, 0, 60000}, {1000000, 0, 60000},
		/* Retry-After wins, capped at 300 s */
		{1, 5, 5000}, {7, 1, 1000}, {1, 300, 300000}, {1, 301, 300000}, {3, 2147483647L, 300000},
		{3, -1, 4000},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
	{
		long		got = request_backoff_ms(rows[i].attempts, rows[i].retry_after_s);

		CHECK(got == rows[i].want, "request_backoff_ms(%d, %ld) = %ld, want %ld",
			  rows[i].attempts, rows[i].retry_after_s, got, rows[i].want);
	}
}

static void
test_give_up(void)
{
	/* provably never reached VoIPBIN: failed; anything else may have: unknown */
	CHECK(request_give_up(ATTEMPT_NOT_SENT, 0) == VERDICT_FAILED, "not sent gives up failed");
	CHECK(request_give_up(ATTEMPT_ANSWERED, 429) == VERDICT_FAILED, "429 gives up failed");
	CHECK(request_give_up(ATTEMPT_ANSWERED, 503) == VERDICT_UNKNOWN, "503 gives up unknown");
	CHECK(request_give_up(ATTEMPT_ANSWERED, 500) == VERDICT_UNKNOWN, "500 gives up unknown");
	CHECK(request_give_up(ATTEMPT_NO_ANSWER, 0) == VERDICT_UNKNOWN, "no answer gives up unknown");
}

static void
path_ok(const char *path)
{
	const char *problem = request_path_problem(path);

	CHECK(problem == NULL, "request_path_problem(%s) = \"%s\", want NULL", path, problem ? problem : "");
}

static void
path_refused(const char *path, const char *words)
{
	const char *problem = request_path_problem(path);

	CHECK(problem != NULL && strstr(problem, words) != NULL,
		  "request_path_problem(%s) = %s, want a sentence with \"%s\"", path,
		  problem ? problem : "NULL", words);
}

static void
test_paths(void)
{
	char		longest[2050];

	path_ok("/calls");
	path_ok("/calls/6a7ee5a0-0000-4000-8000-000000000001/hangup");
	path_ok("/calls?page_size=10&page_token=2026-01-01");
	path_ok("/calls?my_token=1");		/* a parameter merely ending in token */
	path_ok("/v1.00/x");
	path_ok("/a%20b");
	path_ok("/caf\xc3\xa9");
	path_ok("/a..b/c.d");

	path_refused("", "starts with");
	path_refused("calls", "starts with");
	path_refused("https://evil.example/calls", "starts with");
	path_refused("//evil.example/calls", "names no host");
	path_refused("/x?u=https://evil.example/", "names no host");
	path_refused("/v1.0/calls", "drop that prefix");
	path_refused("/V1.0/calls", "drop that prefix");
	path_refused("/v1.0", "drop that prefix");
	path_refused("/a b", "no spaces");
	path_refused("/a\tb", "no spaces");
	path_refused("/a\x7f", "no spaces");
	path_refused("/a#b", "no spaces");
	path_refused("/a\\b", "no spaces");
	path_refused("/a/../b", "segments");
	path_refused("/a/./b", "segments");
	path_refused("/a/..", "segments");
	path_refused("/a/.", "segments");
	path_refused("/..", "segments");
	/* before a query too: libcurl would remove them, sending another request than the one classified */
	path_refused("/calls/c1/hangup/..?x=1", "segments");
	path_refused("/calls/%2e%2e/customer", "%2e");
	path_refused("/calls/c1/%2E", "%2e");
	path_ok("/calls?page_token=a%2eb");
	path_refused("/calls/.?x=1", "segments");
	path_refused("/calls?accesskey=vb_x", "credential");
	path_refused("/calls?a=1&AccessKey=vb_x", "credential");
	path_refused("/calls?token=x", "credential");
	path_refused("/calls?a=1&Token=", "credential");

	memset(longest, 'a', sizeof(longest));
	longest[0] = '/';
	longest[2048] = '\0';
	path_ok(longest);
	longest[2048] = 'a';
	longest[2049] = '\0';
	path_refused(longest, "longer than 2048");

	CHECK(request_method_known("GET") && request_method_known("POST") && request_method_known("PUT") &&
		  request_method_known("PATCH") && request_method_known("DELETE"), "the five methods");
	CHECK(!request_method_known("HEAD") && !request_method_known("get") && !request_method_known("") &&
		  !request_method_known("CONNECT") && !request_method_known("GETX"), "no other method");
}

int
main(void)
{
	test_kinds();
	test_verdicts();
	test_backoff();
	test_give_up();
	test_paths();
	if (failures)
	{
		fprintf(stderr, "%d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("request_rules: %d checks passed\n", checks);
	return 0;
}
