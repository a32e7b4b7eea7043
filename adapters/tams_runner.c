/* tams-runner: the one long-lived process of a persistent TAMS container (docs/containers.md).
 *
 * Built static by the docker and apptainer launchers (`cc -static`, once per machine, cached)
 * and bound into the container read-only: it needs nothing from the image, not even a shell.
 *
 *   tams-runner SOCKET
 *
 * listens on the Unix socket SOCKET (inside a control directory the launcher binds), accepts
 * exactly one connection -- the launcher's -- and serves segments on it one at a time until
 * that connection closes; then it kills what is still running and exits.  Under Docker it is
 * the container's pid 1, so that ends the container (removed: it runs with --rm), even when
 * the driver died by SIGKILL (the kernel closes its socket).  An Apptainer instance outlives
 * its start script; the launcher stops it, and the next `tams run` stops those whose owner
 * died.
 *
 * A request is "<length>\n" and <length> bytes of NUL-terminated strings:
 *     cwd, number of environment entries, NAME=value..., argv...
 * The model runs in a new session (its own process group) in cwd, with stdout.txt and
 * stderr.txt there, stdin /dev/null, the container's environment plus the request's entries,
 * argv[0] looked up on PATH when it holds no '/'.  The reply is one line:
 *     "E <code>\n"              it ended: exit status, or 128 + signal number;
 *     "F <what> <errno>\n"      it could not start: what = chdir | open | exec.
 * When the model ends, every process left in its process group is killed.  If the connection
 * closes while a model runs (the launcher's timeout, its shutdown), the whole process group is
 * killed before the runner exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static int chld_pipe[2];
static volatile pid_t current = 0;

static void on_chld(int sig) {
    (void)sig;
    int e = errno;
    if (write(chld_pipe[1], "c", 1) < 0) { /* full: a wake-up is pending anyway */ }
    errno = e;
}

static void on_term(int sig) {
    (void)sig;
    if (current > 0) kill(-current, SIGKILL);
    _exit(0);
}

static int read_full(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static void reply(int fd, const char *text) {
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += (size_t)w;
    }
}

static int env_has(char **req, int n, const char *entry) {
    size_t len = strcspn(entry, "=");
    for (int i = 0; i < n; i++)
        if (strncmp(req[i], entry, len) == 0 && req[i][len] == '=') return 1;
    return 0;
}

/* in the child: set up and exec, or report what failed through fd and exit */
static void start(int fd, char *cwd, char **env, int nenv, char **argv) {
    int code[2] = {0, 0};
    setsid();
    if (chdir(cwd) != 0) { code[0] = 'c'; goto fail; }
    int out = open("stdout.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = open("stderr.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || err < 0) { code[0] = 'o'; goto fail; }
    if (in >= 0) dup2(in, 0); else close(0);
    dup2(out, 1);
    dup2(err, 2);
    int ntotal = 0;
    for (char **e = environ; *e; e++) ntotal++;
    char **envp = calloc((size_t)(ntotal + nenv + 1), sizeof(char *));
    int k = 0;
    const char *path = NULL;
    for (char **e = environ; *e; e++)
        if (!env_has(env, nenv, *e)) envp[k++] = *e;
    for (int i = 0; i < nenv; i++) envp[k++] = env[i];
    for (int i = 0; i < k; i++)
        if (strncmp(envp[i], "PATH=", 5) == 0) path = envp[i] + 5;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (strchr(argv[0], '/')) {
        execve(argv[0], argv, envp);
    } else {
        if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        char buf[4096];
        int saved = ENOENT;
        for (const char *p = path; ; ) {
            const char *q = strchrnul(p, ':');
            snprintf(buf, sizeof buf, "%.*s/%s", (int)(q - p), p, argv[0]);
            execve(buf, argv, envp);
            if (errno != ENOENT) saved = errno;
            if (!*q) break;
            p = q + 1;
        }
        errno = saved;
    }
    code[0] = 'x';
fail:
    code[1] = errno;
    if (write(fd, code, sizeof code) < 0) { /* the parent sees EOF and waits */ }
    _exit(127);
}

static int serve(int conn) {
    char head[32];
    size_t n = 0;
    for (;;) {  /* "<length>\n" */
        ssize_t r = read(conn, head + n, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        if (head[n] == '\n') break;
        if (++n == sizeof head - 1) return -1;
    }
    head[n] = 0;
    size_t len = strtoul(head, NULL, 10);
    char *buf = malloc(len + 1);
    if (!buf || read_full(conn, buf, len) != 0) return -1;
    buf[len] = 0;
    char **field = calloc(len + 2, sizeof(char *));
    int nf = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) field[nf++] = buf + i;
    if (nf < 3) return -1;
    int nenv = atoi(field[1]);
    if (nenv < 0 || 2 + nenv >= nf) return -1;
    char **argv = field + 2 + nenv;
    argv[nf - 2 - nenv] = NULL;

    int status_pipe[2];
    if (pipe2(status_pipe, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(status_pipe[0]);
        start(status_pipe[1], field[0], field + 2, nenv, argv);
    }
    current = pid;
    close(status_pipe[1]);
    int code[2];
    int failed = read_full(status_pipe[0], (char *)code, sizeof code) == 0;
    close(status_pipe[0]);
    char line[64];
    int st = 0;
    if (failed) {
        waitpid(pid, &st, 0);
        current = 0;
        const char *what = code[0] == 'c' ? "chdir" : code[0] == 'o' ? "open" : "exec";
        snprintf(line, sizeof line, "F %s %d\n", what, code[1]);
        reply(conn, line);
        free(field); free(buf);
        return 0;
    }
    struct pollfd fds[2] = {{conn, POLLIN, 0}, {chld_pipe[0], POLLIN, 0}};
    for (;;) {
        /* reap everything that ended: the model, and orphans reparented to us (pid 1) */
        int ended = 0, s2;
        pid_t w;
        while ((w = waitpid(-1, &s2, WNOHANG)) > 0)
            if (w == pid) { st = s2; ended = 1; }
        if (ended || (w < 0 && errno == ECHILD)) break;
        if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
        if (fds[1].revents & POLLIN) {
            char drain[64];
            while (read(chld_pipe[0], drain, sizeof drain) > 0) {}
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {  /* the launcher is gone */
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
    }
    kill(-pid, SIGKILL);  /* whatever the model left behind in its group */
    current = 0;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
    snprintf(line, sizeof line, "E %d\n", rc);
    reply(conn, line);
    free(field); free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tams-runner SOCKET\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = on_term;
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(argv[1]) >= sizeof addr.sun_path) return 1;
    strcpy(addr.sun_path, argv[1]);
    char tmp[sizeof addr.sun_path + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    struct sockaddr_un taddr = addr;
    if (strlen(tmp) >= sizeof taddr.sun_path) return 1;
    strcpy(taddr.sun_path, tmp);
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(tmp);
    /* bound under a temporary name, renamed once listening: the launcher never connects early */
    if (ls < 0 || bind(ls, (struct sockaddr *)&taddr, sizeof taddr) != 0 || listen(ls, 1) != 0 ||
        rename(tmp, argv[1]) != 0) {
        perror("tams-runner: socket");
        return 1;
    }
    struct pollfd p = {ls, POLLIN, 0};
    int r;
    do { r = poll(&p, 1, 120000); } while (r < 0 && errno == EINTR);
    if (r <= 0) return 3;  /* nobody came within 2 minutes: end the container */
    int conn = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    close(ls);
    unlink(argv[1]);
    if (conn >= 0)
        while (serve(conn) == 0) {}
    return conn >= 0 ? 0 : 1;
}
