/*
 * The tiny children of the supervisor benchmark (benches/supervisors/run.py), and its C floor.
 *
 * run.py compiles this file at bench time into its temporary directory (`cc -O2 -static`, or
 * without -static when the static C library is missing). Nothing is installed.
 *
 *   tinychild listen PORT
 *       Listens on 127.0.0.1:PORT and accepts and closes connections until a signal ends it.
 *       SIGTERM keeps its default action (the process ends at once). Exits 1 if it cannot bind.
 *
 *   tinychild floor REPS PORT|- PROG [ARGS...]
 *       REPS times: fork + execv(PROG, ARGS) alone, timed from just before fork() until the
 *       exec is done (a close-on-exec pipe reaches EOF), and, with a PORT, until that port
 *       accepts a TCP connection. The child is then SIGKILLed and reaped. Prints one line per
 *       rep: "<exec us> <port us or -1>".
 *
 *   tinychild batch PROG [ARGS...]
 *       Reads port numbers (or "-" for none), one a line, from standard input: one copy per
 *       line, started back to back (fork + execv each). "{port}" in ARGS is replaced by the
 *       line's port. Prints "<all exec'd us> <all ports accepting us or -1>", then SIGKILLs and
 *       reaps every copy.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int listen_main(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return 1;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 128) < 0) {
        perror("tinychild listen");
        return 1;
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c >= 0) close(c);
        else if (errno != EINTR && errno != ECONNABORTED) usleep(1000);
    }
}

/* 1 when 127.0.0.1:port accepts a connection now (closed with RST, no TIME_WAIT). */
static int accepts(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return 0;
    struct linger lg = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

/* fork + execv; returns the pid, and the read end of a close-on-exec pipe in *fd. */
static pid_t spawn(char **argv, int *fd) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        int e = errno;
        if (write(p[1], &e, sizeof e) < 0) _exit(126);
        _exit(127);
    }
    close(p[1]);
    *fd = p[0];
    return pid;
}

/* Until the exec is done: EOF on the pipe. 0 on success, -1 if the exec failed. */
static int wait_exec(int fd) {
    int e;
    ssize_t n;
    do n = read(fd, &e, sizeof e);
    while (n < 0 && errno == EINTR);
    close(fd);
    return n == 0 ? 0 : -1;
}

static char **with_port(char **args, int nargs, const char *port) {
    char **out = calloc((size_t)nargs + 1, sizeof *out);
    for (int i = 0; i < nargs; i++) out[i] = strcmp(args[i], "{port}") == 0 ? (char *)port : args[i];
    return out;
}

static int floor_main(int reps, const char *port, char **args, int nargs) {
    int p = strcmp(port, "-") == 0 ? 0 : atoi(port);
    char **argv = with_port(args, nargs, port);
    for (int r = 0; r < reps; r++) {
        int fd;
        double t0 = now_us();
        pid_t pid = spawn(argv, &fd);
        if (pid < 0 || wait_exec(fd) < 0) {
            fprintf(stderr, "tinychild floor: cannot run %s\n", argv[0]);
            return 1;
        }
        double t1 = now_us(), t2 = -1;
        if (p) {
            double deadline = t0 + 5e6;
            while (!accepts(p) && now_us() < deadline) usleep(20);
            t2 = now_us() - t0;
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        printf("%.1f %.1f\n", t1 - t0, t2);
        usleep(2000);
    }
    return 0;
}

static int batch_main(char **args, int nargs) {
    int cap = 16, n = 0;
    int *ports = malloc(cap * sizeof *ports);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (n == cap) ports = realloc(ports, (cap *= 2) * sizeof *ports);
        ports[n++] = line[0] == '-' ? 0 : atoi(line);
    }
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    int *fds = calloc((size_t)n, sizeof *fds);
    char buf[16];
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "%d", ports[i]);
        char **argv = with_port(args, nargs, buf);
        pids[i] = spawn(argv, &fds[i]);
        free(argv);
    }
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (pids[i] < 0 || wait_exec(fds[i]) < 0) failed = 1;
    double t1 = now_us() - t0, t2 = -1;
    if (!failed && n && ports[0]) {
        double deadline = t0 + 30e6;
        for (int i = 0; i < n && now_us() < deadline; i++)
            while (!accepts(ports[i]) && now_us() < deadline) usleep(20);
        t2 = now_us() - t0;
    }
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], SIGKILL);
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) waitpid(pids[i], NULL, 0);
    if (failed) {
        fprintf(stderr, "tinychild batch: a copy could not be run\n");
        return 1;
    }
    printf("%.1f %.1f\n", t1, t2);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "listen") == 0) return listen_main(atoi(argv[2]));
    if (argc >= 5 && strcmp(argv[1], "floor") == 0)
        return floor_main(atoi(argv[2]), argv[3], argv + 4, argc - 4);
    if (argc >= 3 && strcmp(argv[1], "batch") == 0) return batch_main(argv + 2, argc - 2);
    fprintf(stderr, "usage: tinychild listen PORT | floor REPS PORT|- PROG [ARGS...] | batch PROG [ARGS...]\n");
    return 2;
}
