/*
 * Minimal PID 1 for SandTrap target containers, installed as /sbin/init.
 *
 * It owns two jobs only: reap every child that the kernel re-parents to it
 * (orphans of the attacker's shell), and exit promptly when the container is
 * stopped from outside.  Everything else (users, exec'd shells, hardening) is
 * the runtime's business.
 *
 * `/sbin/init CMD [ARG...]` (e.g. `docker run --rm IMAGE cmd`) runs CMD as its
 * child, forwards the stop signals it gets from outside to it, keeps reaping
 * orphans, and exits with CMD's status (128 + N when CMD died of signal N;
 * 127 when CMD cannot be run, 126 when it is not executable), as tini and
 * docker-init do.  Without CMD it runs until stopped, as before.
 *
 * Signals are blocked and taken synchronously with sigwaitinfo(), so there is
 * no window between "no more children to reap" and "go to sleep".
 *
 * SIGTERM/SIGINT end the container only when they come from outside the
 * container's PID namespace (docker stop / docker kill), where the kernel
 * reports si_pid == 0.  A process inside the container, even root, sending
 * `kill -TERM 1` is ignored, as systemd and sysvinit would do, so an attacker
 * cannot end their own session's container that way.  (SIGKILL from inside
 * is already dropped by the kernel for a namespace's init.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void no_op(int sig) { (void)sig; }

static void reap_all(void)
{
    int status;

    for (;;) {
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0)
            continue;
        if (pid < 0 && errno == EINTR)
            continue;
        return; /* 0: children remain but none has exited; -1/ECHILD: none */
    }
}

/* The exit status a shell would report for a child's wait status. */
static int shell_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

/*
 * Reap every exited child; returns the wait status of `cmd` when it was among
 * them, else -1.  With no command (cmd <= 0) it only collects orphans.
 */
static int reap_all_for(pid_t cmd)
{
    int status, found = -1;

    for (;;) {
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            if (pid == cmd)
                found = status;
            continue;
        }
        if (pid < 0 && errno == EINTR)
            continue;
        return found;
    }
}

static pid_t spawn(char **argv, const sigset_t *blocked)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid; /* parent, or -1 */
    /* The child gets default dispositions and an empty mask, as any process would. */
    {
        struct sigaction dfl;
        int sig;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (sig = 1; sig < NSIG; sig++)
            (void)sigaction(sig, &dfl, NULL);
    }
    sigprocmask(SIG_UNBLOCK, blocked, NULL);
    execvp(argv[0], argv);
    {
        int err = errno;
        fprintf(stderr, "init: %s: %s\n", argv[0], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
}

int main(int argc, char **argv)
{
    static const int handled[] = {
        SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
        SIGPWR, SIGWINCH, SIGALRM, SIGTSTP, SIGTTIN, SIGTTOU,
    };
    struct sigaction sa;
    sigset_t set;
    siginfo_t info;
    size_t i;
    pid_t cmd = 0;

    /* If ever run below PID 1 (debugging), still collect orphans. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    if (chdir("/") != 0) {
        /* nothing sensible to do; keep running */
    }

    /*
     * A real handler (not SIG_DFL) plus blocking: for a namespace init the
     * kernel discards SIG_DFL signals, and blocked ones stay pending for
     * sigwaitinfo().
     */
    sigemptyset(&set);
    sa.sa_handler = no_op;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof handled / sizeof handled[0]; i++) {
        sigaddset(&set, handled[i]);
        (void)sigaction(handled[i], &sa, NULL);
    }
    sigprocmask(SIG_BLOCK, &set, NULL);

    if (argc > 1) {
        cmd = spawn(argv + 1, &set);
        if (cmd < 0) {
            perror("init: fork");
            return 1;
        }
    }

    for (;;) {
        if (cmd > 0) {
            int status = reap_all_for(cmd);
            if (status >= 0)
                _exit(shell_status(status));
        } else {
            reap_all();
        }
        if (sigwaitinfo(&set, &info) < 0)
            continue; /* EINTR */
        switch (info.si_signo) {
        case SIGTERM:
        case SIGINT:
            /* si_pid is 0 when the sender lives in an ancestor namespace. */
            if (info.si_pid != 0)
                break;
            if (cmd > 0) {
                /* Running a command: it decides how to end; we exit with it. */
                (void)kill(cmd, info.si_signo);
                break;
            }
            /*
             * Exit now: the kernel SIGKILLs everything else in the
             * namespace, and the stopped container keeps its filesystem
             * for forensics, so there is nothing to flush or wait for.
             */
            _exit(0);
        default:
            break; /* SIGCHLD and the rest: loop and reap */
        }
    }
}
