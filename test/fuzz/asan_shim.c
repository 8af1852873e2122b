/*
 * asan_shim.c — preloaded after the ASAN runtime into PostgreSQL's
 * uninstrumented programs (postgres, psql), which would otherwise hang at
 * start.
 *
 * Why: libgpg-error (pulled in by libldap → gnutls) calls bindtextdomain()
 * from its constructor, which runs before the preloaded runtime's own.  Its
 * malloc() is ASAN's first, ASAN initialises there, and its symbolizer set-up
 * looks up swift_demangle with dlsym(); the failure's dlerror() goes through
 * gettext, which unlocks the lock bindtextdomain() holds, and the next
 * bindtextdomain() (postgres's own) waits on it for ever.  With the symbol
 * present the lookup succeeds and gettext is never entered.  ASAN calls it
 * only for Swift names, which PostgreSQL has none of.
 */
#include <stddef.h>
#include <stdint.h>

char	   *swift_demangle(const char *mangled, size_t mangled_len, char *out,
						   size_t *out_len, uint32_t flags);

char *
swift_demangle(const char *mangled, size_t mangled_len, char *out,
			   size_t *out_len, uint32_t flags)
{
	return NULL;
}
