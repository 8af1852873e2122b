/*
 * settings.h — the settings (GUCs) every part of the worker reads; settings.c defines them.
 */
#ifndef VOIPBIN_BASE_SETTINGS_H
#define VOIPBIN_BASE_SETTINGS_H

#include "postgres.h"

/* connection to VoIPBIN */
extern char *voipbin_database;
extern char *voipbin_api_url;
extern char *voipbin_token;
extern char *voipbin_token_file;
extern char *voipbin_ca_file;
extern int	voipbin_reconnect_min_delay_ms;
extern int	voipbin_reconnect_max_delay_ms;
extern int	voipbin_idle_timeout_s;
extern int	voipbin_http_timeout_ms;

/* durability: the journal, frames, storing, memory */
extern char *voipbin_spool_directory;
extern int	voipbin_spool_limit_kb;
extern int	voipbin_max_frame_size;
extern int	voipbin_store_retry_timeout_ms;
extern int	voipbin_buffer_limit_kb;

/* retention and partitions */
extern int	voipbin_event_retention_s;
extern int	voipbin_partition_interval_s;

/* security */
typedef enum VoipbinNotifyPayload
{
	VB_NOTIFY_FULL,
	VB_NOTIFY_ID
} VoipbinNotifyPayload;

extern int	voipbin_notify_payload;
extern char *voipbin_worker_role;

/* webhook receiver */
extern int	voipbin_webhook_port;
extern char *voipbin_webhook_listen_addresses;
extern char *voipbin_webhook_path;
extern char *voipbin_webhook_secret;

/* gap repair */
extern bool voipbin_repair;
extern double voipbin_repair_rate;

/* requests to VoIPBIN queued from SQL (voipbin_requests) */
extern double voipbin_request_rate;
extern int	voipbin_request_retry_timeout_s;
extern int	voipbin_request_retention_s;

/* VoIPBIN's limit per customer: repair and requests together stay within it */
#define VOIPBIN_CUSTOMER_RATE 17.0

/* Defines every setting; _PG_init calls it once. */
extern void settings_define(void);

#endif
