/*
 * status.h — hooks every backend installs when the library loads, so the
 * worker hears of CREATE and DROP EXTENSION (sql/status.c).
 */
#ifndef VOIPBIN_SQL_STATUS_H
#define VOIPBIN_SQL_STATUS_H

extern void voipbin_install_hooks(void);

#endif
