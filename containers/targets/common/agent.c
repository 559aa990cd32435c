/*
 * SandTrap's in-sandbox agent, installed as /usr/sbin/sshd (issue 15).
 *
 * `/usr/sbin/sshd --sandtrap-agent` (the pool's exec) becomes the look of
 * Debian's sshd listener and serves the front over its stdin/stdout: one
 * frame per message, u32 length (of what follows) | u8 type | u32 channel |
 * payload, big-endian, at most 64 KiB.  Each channel is a fork: `sshd:
 * root@pts/0` (or `sshd: USER [priv]` above `sshd: USER@pts/N`, `@notty`
 * without a PTY) with the command below it.  Any other argv runs the real
 * OpenSSH daemon, kept as REAL_SSHD.
 *
 * The front trusts nothing this program says (root in the sandbox can kill,
 * ptrace or replace it); this program trusts the front.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define REAL_SSHD "/usr/lib/openssh/sshd-real"
#define LISTENER "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
#define MAX_FRAME 65536
#define MAX_CHANNELS 32
#define MAX_PENDING (256 * 1024)
#define DRAIN_MS 300

enum { F_HELLO = 1, F_OPEN, F_DATA, F_EOF, F_RESIZE, F_SIGNAL, F_CLOSE };
enum { A_HELLO = 0x41, A_OPENED, A_STDOUT, A_STDERR, A_EXIT, A_FAILED };

struct channel {
    uint32_t id;
    pid_t pid;       /* our child: the session process (root) or [priv] */
    pid_t shell;     /* the command's pid, for signals */
    int in, out, err;  /* a PTY uses `out` alone (in == out) */
    int tty;
    char *pending;   /* stdin not yet written */
    size_t npending;
    int eof_wanted;
    int exited, status;
    long long deadline_ms;  /* after the exit: output drained until then */
};

static struct channel chans[MAX_CHANNELS];
static char *title_start;
static size_t title_room;
static char **saved_env;
static int ctl_in = -1, ctl_out = -1;
static volatile sig_atomic_t got_child;
static sigset_t run_mask; /* SIGCHLD is taken only inside ppoll() */

static void on_child(int sig) { (void)sig; got_child = 1; }

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* setproctitle as OpenSSH does it: argv and environ are one area; the
 * environment is copied away first. */
static void title_init(int argc, char **argv)
{
    extern char **environ;
    char *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
    int n = 0, i;

    for (i = 0; environ[i]; i++)
        if (environ[i] == end)
            end += strlen(environ[i]) + 1;
    while (environ[n])
        n++;
    saved_env = calloc((size_t)n + 1, sizeof(char *));
    if (!saved_env)
        _exit(1);
    for (i = 0; i < n; i++)
        saved_env[i] = strdup(environ[i]);
    environ = saved_env;
    title_start = argv[0];
    title_room = (size_t)(end - argv[0]);
}

static void set_title(const char *title)
{
    size_t len = strlen(title);

    if (len >= title_room)
        len = title_room - 1;
    memcpy(title_start, title, len);
    memset(title_start + len, 0, title_room - len);
    prctl(PR_SET_NAME, "sshd", 0, 0, 0);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the front is gone */
        p += n;
        len -= (size_t)n;
    }
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void send_frame(int type, uint32_t chan, const void *data, size_t len)
{
    unsigned char head[9];

    put32(head, (uint32_t)(len + 5));
    head[4] = (unsigned char)type;
    put32(head + 5, chan);
    write_all(ctl_out, head, sizeof head);
    if (len)
        write_all(ctl_out, data, len);
}

static struct channel *find(uint32_t id)
{
    for (int i = 0; i < MAX_CHANNELS; i++)
        if (chans[i].pid && chans[i].id == id)
            return &chans[i];
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void finish(struct channel *c)
{
    unsigned char st[4];

    put32(st, (uint32_t)c->status);
    send_frame(A_EXIT, c->id, st, 4);
    if (c->in != c->out)
        close_fd(&c->in);
    close_fd(&c->out);
    close_fd(&c->err);
    free(c->pending);
    memset(c, 0, sizeof *c);
}

static void drop(struct channel *c)
{
    if (c->shell > 0)
        kill(-c->shell, SIGHUP);
    if (c->in != c->out)
        close_fd(&c->in);
    close_fd(&c->out);
    close_fd(&c->err);
    free(c->pending);
    if (!c->exited) {
        c->in = c->out = c->err = -1;
        c->pending = NULL;
        c->npending = 0;
        c->id = UINT32_MAX; /* still reaped, never reported */
        c->exited = -1;
        return;
    }
    memset(c, 0, sizeof *c);
}

static int wait_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/* Wait for `pid` and exit with its status (the session and [priv] processes). */
static _Noreturn void wait_and_exit(pid_t pid)
{
    int status;

    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            _exit(255);
    _exit(wait_status(status));
}

struct request {
    int tty;
    unsigned short width, height;
    const char *user, *workdir;
    char **argv, **env;
};

static int become(const struct passwd *pw)
{
    gid_t groups[64];
    int n = 0;
    struct group *gr;
    FILE *f = fopen("/etc/group", "r");

    groups[n++] = pw->pw_gid;
    if (f) {
        while ((gr = fgetgrent(f)) && n < 64)
            for (char **m = gr->gr_mem; *m; m++)
                if (!strcmp(*m, pw->pw_name) && gr->gr_gid != pw->pw_gid) {
                    groups[n++] = gr->gr_gid;
                    break;
                }
        fclose(f);
    }
    if (setgroups((size_t)n, groups) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
        return -1;
    return 0;
}

static gid_t tty_group(void)
{
    struct group *gr;
    gid_t gid = 5;
    FILE *f = fopen("/etc/group", "r");

    if (!f)
        return gid;
    while ((gr = fgetgrent(f)))
        if (!strcmp(gr->gr_name, "tty")) {
            gid = gr->gr_gid;
            break;
        }
    fclose(f);
    return gid;
}

static struct passwd *lookup(const char *user)
{
    static struct passwd found;
    struct passwd *pw;
    FILE *f = fopen("/etc/passwd", "r");

    if (!f)
        return NULL;
    while ((pw = fgetpwent(f)))
        if (!strcmp(pw->pw_name, user)) {
            found = *pw;
            found.pw_name = strdup(pw->pw_name);
            found.pw_dir = strdup(pw->pw_dir);
            fclose(f);
            return &found;
        }
    fclose(f);
    return NULL;
}

/* The command's process: a session of its own on the terminal, as the user. */
static _Noreturn void run_command(const struct request *r, const struct passwd *pw,
                                  const char *slave, int fds[3])
{
    int has_term = 0, n = 0, i;
    char **env;
    char home[4200];

    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    sigprocmask(SIG_SETMASK, &run_mask, NULL);
    setsid();
    if (r->tty) {
        int fd = open(slave, O_RDWR);
        if (fd < 0)
            _exit(1);
        ioctl(fd, TIOCSCTTY, 0);
        fds[0] = fds[1] = fds[2] = fd;
    }
    for (i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            _exit(1);
    for (i = 3; i < 1024; i++)
        close(i);
    if (getuid() != pw->pw_uid && become(pw)) {
        fprintf(stderr, "setuid %s: %s\n", pw->pw_name, strerror(errno));
        _exit(1);
    }
    for (i = 0; saved_env[i]; i++)
        n++;
    for (i = 0; r->env[i]; i++)
        n++;
    env = calloc((size_t)n + 3, sizeof(char *));
    if (!env)
        _exit(1);
    n = 0;
    /* As `docker exec` builds it: the container's environment, HOME of the user,
     * then the front's variables. */
    for (i = 0; saved_env[i]; i++)
        if (strncmp(saved_env[i], "HOME=", 5))
            env[n++] = saved_env[i];
    snprintf(home, sizeof home, "HOME=%s", pw->pw_dir);
    env[n++] = home;
    for (i = 0; r->env[i]; i++) {
        const char *eq = strchr(r->env[i], '=');
        size_t k = eq ? (size_t)(eq - r->env[i]) + 1 : strlen(r->env[i]);
        for (int j = 0; j < n; j++)
            if (!strncmp(env[j], r->env[i], k)) {
                env[j] = env[--n];
                break;
            }
        env[n++] = r->env[i];
        if (!strncmp(r->env[i], "TERM=", 5))
            has_term = 1;
    }
    if (r->tty && !has_term)
        env[n++] = "TERM=xterm";
    env[n] = NULL;
    if (chdir(r->workdir && *r->workdir ? r->workdir : pw->pw_dir) && chdir("/"))
        _exit(1);
    execve(r->argv[0], r->argv, env);
    fprintf(stderr, "%s: %s\n", r->argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}

static void open_channel(uint32_t id, const struct request *r)
{
    struct channel *c = NULL;
    struct passwd *pw;
    int master = -1, p_in[2] = {-1, -1}, p_out[2] = {-1, -1}, p_err[2] = {-1, -1};
    int report[2] = {-1, -1};
    char slave[64] = "", line[80], title[160];
    pid_t pid, shell = 0;

    for (int i = 0; i < MAX_CHANNELS && !c; i++)
        if (!chans[i].pid)
            c = &chans[i];
    pw = lookup(r->user);
    if (!c || !pw || find(id)) {
        const char *why = !c ? "too many channels" : !pw ? "no such user" : "channel in use";
        send_frame(A_FAILED, id, why, strlen(why));
        return;
    }
    if (r->tty) {
        struct winsize ws = {r->height, r->width, 0, 0};
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) || unlockpt(master) ||
            ptsname_r(master, slave, sizeof slave)) {
            close_fd(&master);
            send_frame(A_FAILED, id, "no pty", 6);
            return;
        }
        if (r->width && r->height)
            ioctl(master, TIOCSWINSZ, &ws);
        /* The user's terminal, as OpenSSH's pty_setowner() leaves it. */
        if (chown(slave, pw->pw_uid, tty_group()) || chmod(slave, 0620))
            fprintf(stderr, "chown %s failed\n", slave);
        snprintf(line, sizeof line, "%s", slave + 5); /* "/dev/pts/N" -> "pts/N" */
    } else {
        if (pipe2(p_in, O_CLOEXEC) || pipe2(p_out, O_CLOEXEC) || pipe2(p_err, O_CLOEXEC)) {
            send_frame(A_FAILED, id, "no pipes", 8);
            goto fail;
        }
        snprintf(line, sizeof line, "notty");
    }
    if (pipe2(report, O_CLOEXEC)) {
        send_frame(A_FAILED, id, "no pipes", 8);
        goto fail;
    }
    pid = fork();
    if (pid < 0) {
        send_frame(A_FAILED, id, "fork failed", 11);
        goto fail;
    }
    if (pid == 0) {
        int fds[3] = {p_in[0], p_out[1], p_err[1]};
        pid_t session, child;
        close(ctl_in);
        close(ctl_out);
        close_fd(&master);
        /* Only the agent keeps the far ends: a copy here would hold the command's stdin open. */
        close_fd(&p_in[1]);
        close_fd(&p_out[0]);
        close_fd(&p_err[0]);
        close_fd(&report[0]);
        if (pw->pw_uid != 0) {
            snprintf(title, sizeof title, "sshd: %s [priv]", pw->pw_name);
            set_title(title);
            session = fork();
            if (session < 0)
                _exit(255);
            if (session > 0) {
                for (int i = 0; i < 1024; i++)
                    close(i);
                wait_and_exit(session);
            }
            /* OpenSSH's unprivileged session child runs as the user. */
            if (become(pw))
                _exit(255);
        }
        snprintf(title, sizeof title, "sshd: %s@%s", pw->pw_name, line);
        set_title(title);
        child = fork();
        if (child == 0)
            run_command(r, pw, slave, fds);
        write_all(report[1], &child, sizeof child);
        close(report[1]);
        if (child < 0)
            _exit(255);
        for (int i = 0; i < 1024; i++)
            close(i);
        wait_and_exit(child);
    }
    close_fd(&report[1]);
    while (read(report[0], &shell, sizeof shell) < 0 && errno == EINTR)
        ;
    close_fd(&report[0]);
    memset(c, 0, sizeof *c);
    c->id = id;
    c->pid = pid;
    c->shell = shell;
    c->tty = r->tty;
    if (r->tty) {
        c->in = c->out = master;
        c->err = -1;
    } else {
        close(p_in[0]);
        close(p_out[1]);
        close(p_err[1]);
        c->in = p_in[1];
        c->out = p_out[0];
        c->err = p_err[0];
        fcntl(c->in, F_SETFL, O_NONBLOCK);
        fcntl(c->out, F_SETFL, O_NONBLOCK);
        fcntl(c->err, F_SETFL, O_NONBLOCK);
    }
    if (c->tty)
        fcntl(c->out, F_SETFL, O_NONBLOCK);
    {
        unsigned char opened[4 + 80];
        size_t len = strlen(line);
        put32(opened, (uint32_t)shell);
        memcpy(opened + 4, line, len);
        send_frame(A_OPENED, id, opened, 4 + len);
    }
    return;
fail:
    close_fd(&master);
    close_fd(&p_in[0]); close_fd(&p_in[1]);
    close_fd(&p_out[0]); close_fd(&p_out[1]);
    close_fd(&p_err[0]); close_fd(&p_err[1]);
    close_fd(&report[0]); close_fd(&report[1]);
}

/* OPEN payload: u8 tty, u16 width, u16 height, u16 argc, u16 envc, then
 * NUL-terminated user, workdir, argv..., env... */
static int parse_open(unsigned char *p, size_t len, struct request *r)
{
    unsigned argc, envc, i;
    char *s, *end = (char *)p + len;
    static char *argv[257], *env[257];

    if (len < 9)
        return -1;
    r->tty = p[0];
    r->width = (unsigned short)(p[1] << 8 | p[2]);
    r->height = (unsigned short)(p[3] << 8 | p[4]);
    argc = (unsigned)(p[5] << 8 | p[6]);
    envc = (unsigned)(p[7] << 8 | p[8]);
    if (argc < 1 || argc > 256 || envc > 256)
        return -1;
    s = (char *)p + 9;
    for (i = 0; i < 2 + argc + envc; i++) {
        char *nul = memchr(s, 0, (size_t)(end - s));
        if (!nul)
            return -1;
        if (i == 0)
            r->user = s;
        else if (i == 1)
            r->workdir = s;
        else if (i < 2 + argc)
            argv[i - 2] = s;
        else
            env[i - 2 - argc] = s;
        s = nul + 1;
    }
    argv[argc] = NULL;
    env[envc] = NULL;
    r->argv = argv;
    r->env = env;
    return 0;
}

static void handle(int type, uint32_t id, unsigned char *p, size_t len)
{
    struct channel *c = find(id);
    struct request r = {0};

    switch (type) {
    case F_HELLO:
        send_frame(A_HELLO, 0, "sandtrap-agent 1", 16);
        return;
    case F_OPEN:
        if (parse_open(p, len, &r) == 0)
            open_channel(id, &r);
        else
            send_frame(A_FAILED, id, "bad request", 11);
        return;
    }
    if (!c || c->exited < 0)
        return;
    switch (type) {
    case F_DATA:
        if (c->in < 0 || c->eof_wanted || c->npending + len > MAX_PENDING)
            return;
        c->pending = realloc(c->pending, c->npending + len);
        if (!c->pending)
            _exit(1);
        memcpy(c->pending + c->npending, p, len);
        c->npending += len;
        return;
    case F_EOF:
        c->eof_wanted = 1;
        return;
    case F_RESIZE:
        if (c->tty && len == 4) {
            struct winsize ws = {(unsigned short)(p[2] << 8 | p[3]),
                                 (unsigned short)(p[0] << 8 | p[1]), 0, 0};
            ioctl(c->out, TIOCSWINSZ, &ws);
        }
        return;
    case F_SIGNAL:
        if (len == 1 && c->shell > 0 && p[0] > 0 && p[0] < 65)
            kill(c->shell, p[0]);
        return;
    case F_CLOSE:
        drop(c);
        return;
    }
}

/* Copy what the process wrote; 0 once the output is closed. */
static int pump_out(struct channel *c, int *fd, int type)
{
    unsigned char buf[32768];
    ssize_t n = read(*fd, buf, sizeof buf);

    if (n > 0) {
        send_frame(type, c->id, buf, (size_t)n);
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 1;
    if (c->in == *fd)
        c->in = -1;
    close_fd(fd);
    return 0;
}

static void reap(void)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < MAX_CHANNELS; i++)
            if (chans[i].pid == pid) {
                if (chans[i].exited < 0) {
                    memset(&chans[i], 0, sizeof chans[i]);
                } else {
                    chans[i].exited = 1;
                    chans[i].status = wait_status(status);
                    chans[i].deadline_ms = now_ms() + DRAIN_MS;
                }
            }
}

static void serve(void)
{
    static unsigned char buf[MAX_FRAME + 4096];
    size_t have = 0;

    for (;;) {
        struct pollfd fds[1 + 3 * MAX_CHANNELS];
        struct channel *who[1 + 3 * MAX_CHANNELS];
        int kind[1 + 3 * MAX_CHANNELS], nfds = 0, full = 0, timeout = -1;
        long long now;
        struct timespec wait_ts;

        if (got_child) {
            got_child = 0;
            reap();
        }
        now = now_ms();
        for (int i = 0; i < MAX_CHANNELS; i++) {
            struct channel *c = &chans[i];
            if (!c->pid || c->exited < 0)
                continue;
            if (c->exited && (c->out < 0 && c->err < 0 ? 1 : now >= c->deadline_ms)) {
                finish(c);
                continue;
            }
            if (c->exited) {
                int left = (int)(c->deadline_ms - now);
                if (timeout < 0 || left < timeout)
                    timeout = left;
            }
            if (c->npending >= MAX_PENDING)
                full = 1;
            if (c->eof_wanted && !c->npending && c->in >= 0 && c->in != c->out)
                close_fd(&c->in);
            if (c->out >= 0) {
                fds[nfds] = (struct pollfd){c->out, POLLIN, 0};
                if (c->in == c->out && c->npending)
                    fds[nfds].events |= POLLOUT;
                who[nfds] = c; kind[nfds++] = 1;
            }
            if (c->err >= 0) {
                fds[nfds] = (struct pollfd){c->err, POLLIN, 0};
                who[nfds] = c; kind[nfds++] = 2;
            }
            if (c->in >= 0 && c->in != c->out && c->npending) {
                fds[nfds] = (struct pollfd){c->in, POLLOUT, 0};
                who[nfds] = c; kind[nfds++] = 3;
            }
        }
        fds[nfds] = (struct pollfd){full ? -1 : ctl_in, POLLIN, 0};
        who[nfds] = NULL; kind[nfds++] = 0;
        wait_ts.tv_sec = timeout / 1000;
        wait_ts.tv_nsec = (long)(timeout % 1000) * 1000000;
        if (ppoll(fds, (nfds_t)nfds, timeout < 0 ? NULL : &wait_ts, &run_mask) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        for (int i = 0; i < nfds; i++) {
            struct channel *c = who[i];
            short ev = fds[i].revents;
            if (!ev || (c && !c->pid))
                continue;
            if (kind[i] == 0) {
                ssize_t n = read(ctl_in, buf + have, sizeof buf - have);
                if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                    _exit(0); /* the front closed the link */
                if (n > 0)
                    have += (size_t)n;
                while (have >= 9) {
                    uint32_t len = get32(buf);
                    if (len < 5 || len > MAX_FRAME)
                        _exit(1);
                    if (have < 4 + (size_t)len)
                        break;
                    handle(buf[4], get32(buf + 5), buf + 9, len - 5);
                    memmove(buf, buf + 4 + len, have - 4 - len);
                    have -= 4 + len;
                }
                continue;
            }
            if ((ev & POLLOUT) && c->npending && c->in >= 0) {
                ssize_t n = write(c->in, c->pending, c->npending);
                if (n > 0) {
                    memmove(c->pending, c->pending + n, c->npending - (size_t)n);
                    c->npending -= (size_t)n;
                } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                    c->npending = 0; /* the reader is gone */
                    if (c->in != c->out)
                        close_fd(&c->in);
                }
            }
            if (ev & (POLLIN | POLLHUP | POLLERR)) {
                if (kind[i] == 1 && c->out >= 0)
                    pump_out(c, &c->out, A_STDOUT);
                else if (kind[i] == 2 && c->err >= 0)
                    pump_out(c, &c->err, A_STDERR);
                else if (kind[i] == 3 && (ev & (POLLHUP | POLLERR)))
                    close_fd(&c->in), c->npending = 0;
            }
        }
    }
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    sigset_t block;
    int null;

    if (argc != 2 || strcmp(argv[1], "--sandtrap-agent")) {
        execv(REAL_SSHD, argv);
        perror(REAL_SSHD);
        return 255;
    }
    title_init(argc, argv);
    set_title(LISTENER);
    ctl_in = fcntl(0, F_DUPFD_CLOEXEC, 3);
    ctl_out = fcntl(1, F_DUPFD_CLOEXEC, 3);
    null = open("/dev/null", O_RDWR);
    if (ctl_in < 0 || ctl_out < 0 || null < 0)
        return 1;
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2)
        close(null);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &run_mask);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    serve();
    return 0;
}
