/*
 * settings.c — the extension's settings (GUCs): their variables, and their
 * definition when the library loads.  Secrets show as set or not, never as
 * what they are.
 */
#include "voipbin.h"

#include <limits.h>

#include "utils/guc.h"

#include "base/settings.h"

/* connection to VoIPBIN */
char	   *voipbin_database = NULL;
char	   *voipbin_api_url = NULL;
char	   *voipbin_token = NULL;
char	   *voipbin_token_file = NULL;
char	   *voipbin_ca_file = NULL;
int			voipbin_reconnect_min_delay_ms = 1000;
int			voipbin_reconnect_max_delay_ms = 30000;
int			voipbin_idle_timeout_s = 35;
int			voipbin_http_timeout_ms = 10000;

/* durability: the journal, frames, storing, memory */
char	   *voipbin_spool_directory = NULL;
int			voipbin_spool_limit_kb = 1024 * 1024;
int			voipbin_max_frame_size = 16 * 1024 * 1024;
int			voipbin_store_retry_timeout_ms = 10 * 60 * 1000;
int			voipbin_buffer_limit_kb = 64 * 1024;

/* retention and partitions */
int			voipbin_event_retention_s = 7 * 86400;
int			voipbin_partition_interval_s = 86400;

/* security */
int			voipbin_notify_payload = VB_NOTIFY_FULL;
char	   *voipbin_worker_role = NULL;

/* webhook receiver */
int			voipbin_webhook_port = 0;
char	   *voipbin_webhook_listen_addresses = NULL;
char	   *voipbin_webhook_path = NULL;
char	   *voipbin_webhook_secret = NULL;

/* gap repair */
bool		voipbin_repair = true;
double		voipbin_repair_rate = 10.0;
double		voipbin_request_rate = 5.0;
int			voipbin_request_retry_timeout_s = 3600;
int			voipbin_request_retention_s = 7 * 86400;

static const struct config_enum_entry notify_payload_options[] = {
	{"full", VB_NOTIFY_FULL, false},
	{"id", VB_NOTIFY_ID, false},
	{NULL, 0, false}
};

/*
 * What SHOW, current_setting() and pg_settings say of a secret: whether it
 * is set, never what it is, to superusers and pg_read_all_settings members
 * too.  The worker and the REST functions read the variables themselves.
 */
#define SECRET_MASK "********"

static const char *
show_token(void)
{
	return voipbin_token && voipbin_token[0] ? SECRET_MASK : "";
}

static const char *
show_webhook_secret(void)
{
	return voipbin_webhook_secret && voipbin_webhook_secret[0] ? SECRET_MASK : "";
}

/* The connection to VoIPBIN: where, with what credential, how it is retried. */
static void
define_connection_settings(void)
{
	DefineCustomStringVariable("voipbin.database",
							   "Database the voipbin worker connects to.",
							   "Run CREATE EXTENSION voipbin in this database.",
							   &voipbin_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.api_url",
							   "VoIPBIN REST base URL; the WebSocket URL is derived from it.",
							   "http becomes ws and https becomes wss, plus /ws.",
							   &voipbin_api_url, "https://api.voipbin.net/v1.0",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.token",
							   "VoIPBIN credential: an access key (vb_…) or a JWT.",
							   "Prefer voipbin.token_file: a reload logs changed values.",
							   &voipbin_token, "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, show_token);
	DefineCustomStringVariable("voipbin.token_file",
							   "File whose first line is the VoIPBIN credential; wins over voipbin.token.",
							   NULL,
							   &voipbin_token_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.ca_file",
							   "PEM bundle of extra CAs trusted for VoIPBIN TLS.",
							   "Certificates are always verified; these add to the system store.",
							   &voipbin_ca_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.reconnect_min_delay",
							"First reconnect delay; it doubles, with jitter, on each failure.",
							NULL,
							&voipbin_reconnect_min_delay_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.reconnect_max_delay",
							"Largest reconnect delay.",
							NULL,
							&voipbin_reconnect_max_delay_ms, 30000, 10, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.idle_timeout",
							"A connection that passes no frame for this long is dead.",
							"VoIPBIN pings every 10 s.",
							&voipbin_idle_timeout_s, 35, 2, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.http_timeout",
							"Total time one VoIPBIN REST call may take.",
							NULL,
							&voipbin_http_timeout_ms, 10000, 100, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
}

/* Durability: the journal of received frames, their size, storing them, the memory held. */
static void
define_durability_settings(void)
{
	DefineCustomStringVariable("voipbin.spool_directory",
							   "Directory of the worker's journal of received frames.",
							   "A relative path is under the data directory.  Read when the worker starts: change it with an empty journal only.",
							   &voipbin_spool_directory, "voipbin_journal",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.spool_limit",
							"Disk the journal may hold for frames not stored yet; past it frames are counted as lost.",
							NULL,
							&voipbin_spool_limit_kb, 1024 * 1024, 1024, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.max_frame_size",
							"Largest WebSocket message or webhook body taken whole; a larger one becomes a dead letter.",
							NULL,
							&voipbin_max_frame_size, 16 * 1024 * 1024, 1024, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.store_retry_timeout",
							"How long a batch is retried after errors of the moment before its frames become dead letters.",
							NULL,
							&voipbin_store_retry_timeout_ms, 10 * 60 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.buffer_limit",
							"Memory the worker may hold for events the database cannot take yet.",
							NULL,
							&voipbin_buffer_limit_kb, 64 * 1024, 1024, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
}

/* How long events are kept, and the partitions they are kept in. */
static void
define_retention_settings(void)
{
	DefineCustomIntVariable("voipbin.event_retention",
							"Events and dead letters older than this are deleted; 0 keeps them.",
							NULL,
							&voipbin_event_retention_s, 7 * 86400, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.partition_interval",
							"Time range of each partition of voipbin_events; retention drops whole partitions.",
							"Counted from 2000-01-01 00:00 UTC; a change applies to partitions made after it.",
							&voipbin_partition_interval_s, 86400, 60, 366 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/* Security: what NOTIFY tells every listener, the role the worker runs as. */
static void
define_security_settings(void)
{
	DefineCustomEnumVariable("voipbin.notify_payload",
							 "What the NOTIFY payloads carry: the event's data (full) or only its id (id).",
							 "LISTEN needs no privilege: with full, every role that can connect hears the data.",
							 &voipbin_notify_payload, VB_NOTIFY_FULL, notify_payload_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.worker_role",
							   "Role the worker's session runs as; empty: the bootstrap superuser.",
							   NULL,
							   &voipbin_worker_role, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/* The webhook receiver. */
static void
define_webhook_settings(void)
{
	DefineCustomIntVariable("voipbin.webhook_port",
							"TCP port of the webhook receiver; 0 turns it off.",
							NULL,
							&voipbin_webhook_port, 0, 0, 65535,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.webhook_listen_addresses",
							   "Addresses the webhook receiver listens on.",
							   "Comma-separated host names or IP addresses; localhost by default.",
							   &voipbin_webhook_listen_addresses, "localhost",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.webhook_path",
							   "URL path on which the webhook receiver takes VoIPBIN's requests.",
							   NULL,
							   &voipbin_webhook_path, "/voipbin/events",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("voipbin.webhook_secret",
							   "Key of the webhooks' HMAC signature; empty: the customer's webhook_secret from VoIPBIN.",
							   NULL,
							   &voipbin_webhook_secret, "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, show_webhook_secret);
}

/* Gap repair over REST. */
static void
define_repair_settings(void)
{
	DefineCustomBoolVariable("voipbin.repair",
							 "After a reconnection, fetch over REST what the outage cost.",
							 NULL,
							 &voipbin_repair, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("voipbin.repair_rate",
							 "Requests per second gap repair may make to VoIPBIN's REST API.",
							 "VoIPBIN allows 17 per second per customer, shared with the customer's own users.",
							 &voipbin_repair_rate, 10.0, 0.1, 17.0,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* Requests queued from SQL (voipbin_request and its helpers). */
static void
define_request_settings(void)
{
	DefineCustomRealVariable("voipbin.request_rate",
							 "Requests per second the worker sends from voipbin_requests.",
							 "With voipbin.repair_rate, the worker never sends more than VoIPBIN's 17 per second for the customer.",
							 &voipbin_request_rate, 5.0, 0.1, 17.0,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.request_retry_timeout",
							"How long a request that may be repeated is tried again.",
							"After this, counted from when it was queued, it ends failed or unknown.",
							&voipbin_request_retry_timeout_s, 3600, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("voipbin.request_retention",
							"Finished requests older than this are deleted from voipbin_requests; 0 keeps them.",
							NULL,
							&voipbin_request_retention_s, 7 * 86400, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/* Defines every setting, a subject at a time; _PG_init calls it once. */
void
settings_define(void)
{
	define_connection_settings();
	define_durability_settings();
	define_retention_settings();
	define_security_settings();
	define_webhook_settings();
	define_repair_settings();
	define_request_settings();

	MarkGUCPrefixReserved("voipbin");
}
