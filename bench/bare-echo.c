/*
 * bench/bare-echo.c: the reference for the ECHO scenario.  A minimal
 * single-threaded epoll server that answers each Gearman ECHO_REQ with an
 * ECHO_RES carrying the same payload, and does nothing else: no job state,
 * no libev, no per-connection output queue (one write per read), and it
 * sleeps in epoll_wait whenever nothing is ready.  bench/compare runs the
 * ECHO scenario against it too, so the table shows what the plainest
 * server does with this load generator on this machine.
 *
 *     bare-echo PORT        (listens on 127.0.0.1; runs until killed)
 *
 * Not a server to use: partial writes are finished with a blocking loop,
 * and only ECHO_REQ is understood (anything else closes the connection).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADER 12
#define BUF_SIZE (256 * 1024)
#define ECHO_REQ 16
#define ECHO_RES 17

struct peer {
    int fd;
    size_t have;
    unsigned char buf[BUF_SIZE];
};

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int
write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Turns every complete ECHO_REQ in the buffer into an ECHO_RES in place and
   writes them back at once; returns -1 to close the connection. */
static int
serve(struct peer *c)
{
    size_t off = 0;
    while (c->have - off >= HEADER) {
        unsigned char *h = c->buf + off;
        uint32_t size = be32(h + 8);
        if (memcmp(h, "\0REQ", 4) != 0 || be32(h + 4) != ECHO_REQ || size > BUF_SIZE - HEADER)
            return -1;
        if (c->have - off < HEADER + (size_t)size)
            break;
        memcpy(h, "\0RES", 4);
        h[7] = ECHO_RES;
        off += HEADER + size;
    }
    if (off == 0)
        return 0;
    if (write_all(c->fd, c->buf, off) < 0)
        return -1;
    memmove(c->buf, c->buf + off, c->have - off);
    c->have -= off;
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bare-echo PORT\n");
        return 2;
    }
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1024) < 0) {
        perror("bare-echo: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event ready[64];
    for (;;) {
        int n = epoll_wait(ep, ready, 64, -1);
        for (int i = 0; i < n; i++) {
            struct peer *c = ready[i].data.ptr;
            if (!c) {
                int fd = accept(ls, NULL, NULL);
                if (fd < 0)
                    continue;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                c = calloc(1, sizeof *c);
                if (!c) {
                    close(fd);
                    continue;
                }
                c->fd = fd;
                struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->have, BUF_SIZE - c->have);
            if (r < 0 && errno == EINTR)
                continue;
            if (r > 0) {
                c->have += (size_t)r;
                if (serve(c) == 0)
                    continue;
            }
            close(c->fd);
            free(c);
        }
    }
}
