/* The attacker program of tests/suite/attacks.rs: compiled by the test outside (the control) and by the task inside
 * its sandbox, then run in both places. Each attack prints one line, `NAME=allowed ...` or `NAME=refused ...`.
 * Targets come from the environment (ATTACK_*). `attack net` runs the network attacks of attacks_net.rs instead. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <linux/netlink.h>
#include <linux/sched.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v ? v : "";
}

static void report(const char *name, int ok, const char *detail) {
    if (ok)
        printf("%s=allowed %s\n", name, detail);
    else
        printf("%s=refused errno=%d (%s) %s\n", name, errno, strerror(errno), detail);
    fflush(stdout);
}

static void connect_unix(const char *name, const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) { report(name, 0, "socket"); return; }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    report(name, connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    close(fd);
}

static void connect_tcp(const char *name, int family, const char *addr, int port) {
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) { report(name, 0, "socket"); return; }
    int r;
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, addr, &a.sin_addr);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        inet_pton(AF_INET6, addr, &a.sin6_addr);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    report(name, r == 0, "connect");
    close(fd);
}

static void open_socket(const char *name, int family, int type, int protocol) {
    int fd = socket(family, type, protocol);
    report(name, fd >= 0, "socket");
    if (fd >= 0) close(fd);
}

/* Run `f` in a forked child (namespaces, mounts: the attacker itself stays as it was); report its outcome. */
static void in_child(const char *name, int (*f)(void)) {
    int pipefd[2];
    if (pipe(pipefd) != 0) { report(name, 0, "pipe"); return; }
    pid_t pid = fork();
    if (pid == 0) {
        int e = f() == 0 ? 0 : errno;
        if (write(pipefd[1], &e, sizeof e) < 0) _exit(2);
        _exit(0);
    }
    int e = -1;
    if (read(pipefd[0], &e, sizeof e) != sizeof e) e = EIO;
    waitpid(pid, NULL, 0);
    errno = e;
    report(name, e == 0, "");
}

static int do_unshare_user(void) { return unshare(CLONE_NEWUSER); }
static int do_unshare_net(void) { return unshare(CLONE_NEWNET); }

static int do_clone_user(void) {
    long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    if (r > 0) { waitpid(r, NULL, 0); return 0; }
    return -1;
}

static int do_clone3_user(void) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    long r = syscall(SYS_clone3, &args, sizeof args);
    if (r == 0) _exit(0);
    if (r > 0) { waitpid(r, NULL, 0); return 0; }
    return -1;
}

static int do_mount(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/attack-mnt", env("TMPDIR"));
    mkdir(dir, 0700);
    if (mount("none", dir, "tmpfs", 0, "size=1m") != 0) return -1;
    umount(dir);
    return 0;
}

static int do_caps(int inheritable_too) {
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) return -1;
    d[0].effective |= 1u << CAP_SYS_ADMIN;
    d[0].permitted |= 1u << CAP_SYS_ADMIN;
    if (inheritable_too) d[0].inheritable |= 1u << CAP_SYS_ADMIN;
    return (int)syscall(SYS_capset, &h, d);
}

static void read_file(const char *name, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { report(name, 0, path); return; }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    report(name, n > 0, path);
}

static void tty_ioctl(const char *name, unsigned long cmd, int tiocsti) {
    /* A terminal of its own when it can open one (outside); else whatever fd 0 is. */
    int fd = 0;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0) {
        const char *slave = ptsname(master);
        int s = slave ? open(slave, O_RDWR | O_NOCTTY) : -1;
        if (s >= 0) fd = s;
    }
    char c = 'x';
    int sub = 6; /* TIOCL_GETSHIFTSTATE */
    long r = syscall(SYS_ioctl, fd, cmd, tiocsti ? (void *)&c : (void *)&sub);
    report(name, r == 0, "");
    if (fd != 0) close(fd);
    if (master >= 0) close(master);
}

static void caps_after_exec(const char *name) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long eff = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "CapEff: %llx", &eff) == 1) break;
    if (f) fclose(f);
    errno = EPERM;
    char detail[64];
    snprintf(detail, sizeof detail, "CapEff=%016llx euid=%d", eff, geteuid());
    report(name, eff != 0, detail);
}

/* Another process's limits, priority, CPUs and I/O priority: the bystander (a process of the test's, outside). */
static void other_process(pid_t victim) {
    struct rlimit lim = {.rlim_cur = 77, .rlim_max = 77};
    report("prlimit-other", prlimit(victim, RLIMIT_NOFILE, &lim, NULL) == 0, "RLIMIT_NOFILE 77");
    report("setpriority-other", setpriority(PRIO_PROCESS, victim, 7) == 0, "nice 7");
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(0, &cpus);
    report("sched-setaffinity-other", sched_setaffinity(victim, sizeof cpus, &cpus) == 0, "cpu 0 only");
    report("ioprio-set-other", syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, victim, (2 << 13) | 7) == 0, "");
    /* Not attacks: the same on itself must work (ulimit, nice). */
    struct rlimit core = {.rlim_cur = 0, .rlim_max = 0};
    report("prlimit-self", setrlimit(RLIMIT_CORE, &core) == 0, "(not an attack: must work)");
    report("nice-self", setpriority(PRIO_PROCESS, 0, 1) == 0, "(not an attack: must work)");
}

/* System V IPC: a segment the test made outside (ATTACK_SHM_KEY), and new objects of each kind. */
static void sysv_ipc(void) {
    int id = shmget((key_t)atoi(env("ATTACK_SHM_KEY")), 0, 0);
    if (id < 0) report("sysv-shm-attach", 0, "shmget");
    else {
        char *p = shmat(id, NULL, 0);
        if (p == (void *)-1) report("sysv-shm-attach", 0, "shmat");
        else {
            char detail[96];
            snprintf(detail, sizeof detail, "read: %.40s", p);
            snprintf(p, 64, "overwritten-from-%s", env("ATTACK_WHERE"));
            shmdt(p);
            report("sysv-shm-attach", 1, detail);
        }
    }
    id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    report("sysv-shm-create", id >= 0, "");
    if (id >= 0) shmctl(id, IPC_RMID, NULL);
    id = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    report("sysv-sem-create", id >= 0, "");
    if (id >= 0) semctl(id, 0, IPC_RMID);
    id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    report("sysv-msg-create", id >= 0, "");
    if (id >= 0) msgctl(id, IPC_RMID, NULL);
}

/* The networked profile's ways around Landlock's TCP rules, each aimed at the test's listener (ATTACK_TCP_PORT). */
static void network(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(env("ATTACK_TCP_PORT")))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 262 /* IPPROTO_MPTCP */);
    if (fd < 0) report("mptcp-connect", 0, "socket");
    else {
        report("mptcp-connect", connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) report("tcp-fastopen", 0, "socket");
    else {
        ssize_t n = sendto(fd, "fastopen", 8, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a);
        report("tcp-fastopen", n > 0, "sendto MSG_FASTOPEN");
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) report("listen-unbound", 0, "socket");
    else {
        char detail[64] = "";
        int r = listen(fd, 1);
        if (r == 0) {
            struct sockaddr_in b;
            socklen_t len = sizeof b;
            if (getsockname(fd, (struct sockaddr *)&b, &len) == 0)
                snprintf(detail, sizeof detail, "listening on port %d", ntohs(b.sin_port));
        }
        report("listen-unbound", r == 0, detail);
        close(fd);
    }
    connect_tcp("tcp-direct", AF_INET, "127.0.0.1", atoi(env("ATTACK_TCP_PORT")));
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "caps") == 0) { caps_after_exec(argv[2]); return 0; }
    if (argc > 1 && strcmp(argv[1], "net") == 0) { network(); return 0; }

    connect_unix("unix-control-socket", env("ATTACK_CONTROL_SOCKET"));
    connect_unix("unix-other-socket", env("ATTACK_UNIX_SOCKET"));
    connect_tcp("tcp-loopback", AF_INET, "127.0.0.1", atoi(env("ATTACK_TCP_PORT")));
    connect_tcp("tcp-loopback-v6", AF_INET6, "::1", atoi(env("ATTACK_TCP6_PORT")));
    {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0) report("udp-send", 0, "socket");
        else {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(env("ATTACK_UDP_PORT")))};
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            char msg[64];
            snprintf(msg, sizeof msg, "udp-from-%s", env("ATTACK_WHERE"));
            report("udp-send", sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&a, sizeof a) > 0, "sendto");
            close(fd);
        }
    }
    open_socket("raw-socket", AF_INET, SOCK_RAW, IPPROTO_ICMP);
    open_socket("netlink-socket", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    open_socket("packet-socket", AF_PACKET, SOCK_RAW, htons(0x0003));
    open_socket("vsock-socket", AF_VSOCK, SOCK_STREAM, 0);

    pid_t victim = atoi(env("ATTACK_SLEEP_PID"));
    if (ptrace(PTRACE_ATTACH, victim, 0, 0) == 0) {
        waitpid(victim, NULL, __WALL);
        ptrace(PTRACE_DETACH, victim, 0, 0);
        report("ptrace-attach", 1, "");
    } else report("ptrace-attach", 0, "");
    report("signal-outside", kill(victim, SIGCONT) == 0, "SIGCONT");
    other_process(victim);
    sysv_ipc();

    char path[4096];
    snprintf(path, sizeof path, "/proc/%s/environ", env("ATTACK_BROKER_PID"));
    read_file("proc-environ-broker", path);
    snprintf(path, sizeof path, "/proc/%s/mem", env("ATTACK_SUPERVISOR_PID"));
    {
        int fd = open(path, O_RDONLY);
        report("proc-mem-supervisor", fd >= 0, path);
        if (fd >= 0) close(fd);
    }

    report("capset-raise", do_caps(0) == 0, "CAP_SYS_ADMIN");
    report("ambient-raise",
           do_caps(1) == 0 && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0) == 0, "CAP_SYS_ADMIN");
    {
        int bits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
        char detail[64];
        snprintf(detail, sizeof detail, "securebits-were=%#x", bits);
        report("securebits-unlock", prctl(PR_SET_SECUREBITS, 0, 0, 0, 0) == 0, detail);
    }
    {
        char buf[256] = {0};
        long n = syscall(SYS_keyctl, 11 /* KEYCTL_READ */, atoi(env("ATTACK_KEY_ID")), buf, sizeof buf - 1);
        report("keyring-read", n > 0, n > 0 ? buf : "");
    }
    tty_ioctl("tiocsti", TIOCSTI, 1);
    tty_ioctl("tiocsti-high-bits", (1UL << 32) | TIOCSTI, 1);
    tty_ioctl("tioclinux", TIOCLINUX, 0);
    {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        long fd = syscall(SYS_io_uring_setup, 4, &p);
        report("io-uring", fd >= 0, "");
        if (fd >= 0) close(fd);
    }
    in_child("userns-unshare", do_unshare_user);
    in_child("netns-unshare", do_unshare_net);
    in_child("userns-clone", do_clone_user);
    in_child("userns-clone3", do_clone3_user);
    in_child("mount-tmpfs", do_mount);
    {
        int sv[2];
        report("socketpair-unix", socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "(not an attack: must work)");
    }
    return 0;
}
