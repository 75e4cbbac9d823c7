/* loopbackbind: an LD_PRELOAD shim that keeps listeners off the wildcard address.
 *
 * Some services of the local stack bind to every interface with no setting to change it (Pinot 0.11's Zookeeper,
 * HTTP and query listeners; Pulsar standalone's bookie; the gRPC and metrics ports of Pulsar's Python function
 * instances). Loaded with LD_PRELOAD, this library intercepts bind(): when RTCA_BIND_HOST holds an IP address and
 * a TCP socket is bound to a wildcard address, the address is replaced by that host, same port:
 *   - 0.0.0.0 (AF_INET)                     -> the IPv4 host;
 *   - :: on a dual-stack AF_INET6 socket    -> ::ffff:<IPv4 host> (v4-mapped: IPv4 clients still reach it);
 *   - :: on an IPv6-only socket             -> ::1 when the host is a 127.x loopback address, else unchanged;
 *   - with an IPv6 host (e.g. ::1), :: becomes that host, and 0.0.0.0 becomes 127.0.0.1 if the host is ::1.
 * RTCA_BIND_HOST unset, empty, not an IP literal, or itself a wildcard (0.0.0.0, ::): nothing changes. UDP and
 * other socket types, explicit addresses and non-IP families are passed through untouched. The variable is read
 * on every call (no state), and the library is inherited by child processes through the environment.
 *
 * Build: gcc -shared -fPIC -O2 -o libloopbackbind.so loopbackbind.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int real_bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn next = NULL;
    if (next == NULL)
        next = (bind_fn)dlsym(RTLD_NEXT, "bind");
    return next(fd, addr, len);
}

/* The configured host as an IPv4 and/or IPv6 target; 0 when there is nothing to do. */
static int target(struct in_addr *v4, int *has_v4, struct in6_addr *v6, int *has_v6) {
    const char *host = getenv("RTCA_BIND_HOST");
    *has_v4 = *has_v6 = 0;
    if (host == NULL || *host == '\0')
        return 0;
    if (inet_pton(AF_INET, host, v4) == 1) {
        if (v4->s_addr == htonl(INADDR_ANY))
            return 0;
        *has_v4 = 1;
        return 1;
    }
    if (inet_pton(AF_INET6, host, v6) == 1) {
        if (IN6_IS_ADDR_UNSPECIFIED(v6))
            return 0;
        *has_v6 = 1;
        if (IN6_IS_ADDR_LOOPBACK(v6)) {
            v4->s_addr = htonl(INADDR_LOOPBACK);
            *has_v4 = 1;
        } else if (IN6_IS_ADDR_V4MAPPED(v6)) {
            memcpy(&v4->s_addr, &v6->s6_addr[12], 4);
            *has_v4 = 1;
            *has_v6 = 0; /* a v4-mapped host is its IPv4 address */
        }
        return 1;
    }
    return 0;
}

static int is_stream(int fd) {
    int type = 0;
    socklen_t size = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 && type == SOCK_STREAM;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    struct in_addr v4;
    struct in6_addr v6;
    int has_v4, has_v6;
    if (addr == NULL || !target(&v4, &has_v4, &v6, &has_v6) || !is_stream(fd))
        return real_bind(fd, addr, len);

    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if (in->sin_addr.s_addr != htonl(INADDR_ANY) || !has_v4)
            return real_bind(fd, addr, len);
        struct sockaddr_in copy = *in;
        copy.sin_addr = v4;
        return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
    }
    if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        if (!IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            return real_bind(fd, addr, len);
        struct sockaddr_in6 copy = *in6;
        if (has_v6) {
            copy.sin6_addr = v6;
        } else {
            int v6only = 0;
            socklen_t size = sizeof v6only;
            if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &size) != 0)
                v6only = 0;
            if (!v6only) { /* dual-stack: ::ffff:a.b.c.d */
                memset(&copy.sin6_addr, 0, sizeof copy.sin6_addr);
                copy.sin6_addr.s6_addr[10] = 0xff;
                copy.sin6_addr.s6_addr[11] = 0xff;
                memcpy(&copy.sin6_addr.s6_addr[12], &v4.s_addr, 4);
            } else if ((ntohl(v4.s_addr) >> 24) == 127) {
                copy.sin6_addr = in6addr_loopback;
            } else {
                return real_bind(fd, addr, len);
            }
        }
        copy.sin6_scope_id = 0;
        return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
    }
    return real_bind(fd, addr, len);
}
