/*
 * request_line.h — is what a client has sent so far the start of an HTTP/1.x
 * request?  Decided before libmicrohttpd sees the connection.
 *
 * libmicrohttpd 0.9.75 hangs up without an answer on a request line it
 * cannot split (no space: a port scan, TLS spoken to the plain port, an SSH
 * banner; an empty method; a space inside the target under strict parsing),
 * and calls none of the application's hooks first, so the receiver could not
 * answer 400 or count it.  The receiver's gate (http_gate.c) therefore peeks
 * at the first bytes of each new connection and hands it to libmicrohttpd only
 * once they are a well-formed request line (RFC 9112 §3):
 *
 *     *( CRLF ) method SP request-target SP "HTTP/1." DIGIT CRLF
 *
 * method a token, request-target visible ASCII (no space, no control, no
 * byte over 0x7e), the line ended by CRLF (a bare LF, allowed to a recipient
 * only as a MAY, is refused: no proxy in front of the receiver sends one).
 * Empty lines before it are skipped, as RFC 9112 §2.2 asks of a server.
 *
 * Pure: no I/O, no globals, no PostgreSQL; test/fuzz.sh's request_line
 * target feeds it arbitrary bytes.
 */
#ifndef VOIPBIN_REQUEST_LINE_H
#define VOIPBIN_REQUEST_LINE_H

#include <stddef.h>

typedef enum RequestLineVerdict
{
	REQUEST_LINE_OK,			/* a whole, well-formed HTTP/1.x request line */
	REQUEST_LINE_PARTIAL,		/* well-formed so far, its end not there yet */
	REQUEST_LINE_BAD,			/* cannot become one: 400 */
	REQUEST_LINE_VERSION		/* well-formed, but HTTP/<not 1>.x: 505 */
} RequestLineVerdict;

/*
 * The verdict on the first len bytes a client sent.  A verdict other than
 * PARTIAL does not change with more bytes; BAD comes as soon as a byte rules
 * the line out, so bytes that are no HTTP are refused without waiting for a
 * line end that may never come.  *end (may be NULL) gets, for OK and
 * VERSION, the offset just past the line's CRLF, for BAD the offset of the
 * offending byte, for PARTIAL len.
 */
extern RequestLineVerdict request_line_check(const char *buf, size_t len, size_t *end);

#endif
