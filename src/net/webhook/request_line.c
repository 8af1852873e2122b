/*
 * request_line.c — the request line's grammar, one byte at a time (see
 * request_line.h).
 */
#ifdef POSTGRES_H
#error "request_line.c runs on the receiver's threads and must not use the PostgreSQL API"
#endif

#include <stdbool.h>
#include <string.h>

#include "net/webhook/request_line.h"
#include "net/no_postgres.h"

/* tchar of RFC 9110 §5.6.2 */
static bool
is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* VCHAR: a visible ASCII character, which is all a request-target is made of */
static bool
is_vchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

typedef enum
{
	S_LEAD,						/* before the method: empty lines may come */
	S_LEAD_LF,					/* an empty line's CR seen */
	S_METHOD,
	S_TARGET_FIRST,
	S_TARGET,
	S_VERSION,					/* "HTTP/d.d", at position vpos */
	S_CR,
	S_LF
} State;

RequestLineVerdict
request_line_check(const char *buf, size_t len, size_t *end)
{
	static const char version[] = "HTTP/d.d";
	State		s = S_LEAD;
	size_t		vpos = 0;
	bool		http1 = false;

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) buf[i];
		bool		ok;

		switch (s)
		{
			case S_LEAD:
				ok = c == '\r' || is_tchar(c);
				s = c == '\r' ? S_LEAD_LF : S_METHOD;
				break;
			case S_LEAD_LF:
				ok = c == '\n';
				s = S_LEAD;
				break;
			case S_METHOD:
				ok = c == ' ' || is_tchar(c);
				if (c == ' ')
					s = S_TARGET_FIRST;
				break;
			case S_TARGET_FIRST:
				ok = is_vchar(c);
				s = S_TARGET;
				break;
			case S_TARGET:
				ok = c == ' ' || is_vchar(c);
				if (c == ' ')
					s = S_VERSION;
				break;
			case S_VERSION:
				if (version[vpos] == 'd')
					ok = c >= '0' && c <= '9';
				else
					ok = c == (unsigned char) version[vpos];
				if (vpos == 5)
					http1 = c == '1';
				if (++vpos == strlen(version))
					s = S_CR;
				break;
			case S_CR:
				ok = c == '\r';
				s = S_LF;
				break;
			case S_LF:
			default:
				ok = c == '\n';
				if (ok)
				{
					if (end)
						*end = i + 1;
					return http1 ? REQUEST_LINE_OK : REQUEST_LINE_VERSION;
				}
				break;
		}
		if (!ok)
		{
			if (end)
				*end = i;
			return REQUEST_LINE_BAD;
		}
	}
	if (end)
		*end = len;
	return REQUEST_LINE_PARTIAL;
}
