/*
 * bind_localhost.c - LD_PRELOAD shim that forces every wildcard bind() onto
 * the loopback interface.
 *
 * Orthanc 1.10.1 has no option to choose the address its HTTP (CivetWeb) and
 * DICOM (DCMTK) servers listen on: both bind to 0.0.0.0.  The benchmark must
 * only ever listen on 127.0.0.1, so the runner starts Orthanc with
 *     LD_PRELOAD=/tmp/bench_work/bind_localhost.so Orthanc config.json
 * and this shim rewrites INADDR_ANY -> 127.0.0.1 and in6addr_any -> ::1.
 * Explicit addresses are left untouched.
 *
 * Build: gcc -shared -fPIC -O2 -o bind_localhost.so bind_localhost.c -ldl
 *
 * Copied from the benchmark harness (bench/bind_localhost.c of the shared
 * workspace); the test fixtures in tests/support/orthanc.py compile it once
 * per test session and start every Orthanc peer with it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static bind_fn real_bind = NULL;
    if (!real_bind)
        real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");

    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof(struct in6_addr)) == 0) {
            a.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
