//! The seccomp layer: system calls a task never needs, refused with an errno (not killed, so tools report an
//! error), and the argument checks Landlock cannot make: socket families and types, terminal-injection ioctls,
//! namespace flags of `clone`.
//!
//! The program has two parts. A hand-written prefix (checked by the tests below, instruction by instruction through
//! the kernel) refuses every x32-ABI call (numbers with `__X32_SYSCALL_BIT`, which would otherwise pass the x86_64
//! arch check under other numbers), then, for x86_64 calls only, looks at the arguments of `socket`, `socketpair`,
//! `ioctl`, `clone` and `clone3`. Then comes seccompiler's arch-checked deny list ([`DENIED`] plus the profile's
//! [`SeccompRules::extra_denied`]), refused with EPERM; an x86_64 call the prefix lets through still goes through it.
//! Applied after Landlock (no_new_privs is already set), before any thread.
//!
//! Errnos: a socket family the task may not use is refused with EAFNOSUPPORT, as systemd's `RestrictAddressFamilies`
//! does: programs read it as "this family does not exist here" and take their fallback (glibc's `getaddrinfo` probes
//! with a netlink socket and carries on without it), where EPERM would be an error to report. An AF_INET/AF_INET6
//! socket of another type than stream, where the profile allows those families, gets EPERM: the family exists, this
//! use of it is forbidden. `clone3` gets ENOSYS (its flags are behind a pointer a filter cannot read), so glibc
//! falls back to `clone`, whose flags the filter does read. Everything else refused gets EPERM.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch, sock_filter};
use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// What a profile says about system calls.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct SeccompRules {
    /// Whether `socket(AF_INET | AF_INET6, SOCK_STREAM, _)` is allowed (a profile with network: Landlock then
    /// decides which ports). Every other socket is refused whatever this says, AF_UNIX included unless
    /// [`Self::unix_stream_sockets`] (Landlock does not cover connecting to a pathname unix socket on this kernel);
    /// `socketpair(AF_UNIX)` stays allowed.
    pub inet_stream_sockets: bool,
    /// Whether `socket(AF_UNIX, SOCK_STREAM, 0)` is allowed (with `SOCK_CLOEXEC`/`SOCK_NONBLOCK`): the worker's
    /// bridge to its proxy's unix socket, inside a mount namespace where no other socket path is visible. Other
    /// unix socket types (datagram, seqpacket) stay refused.
    pub unix_stream_sockets: bool,
    /// System calls refused (EPERM) on top of [`DENIED`], by name (see [`syscall_number`]).
    pub extra_denied: Vec<String>,
}

/// The x32 ABI's syscall number bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64`: the arch seccomp_data reports for x86_64 (and x32) calls.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// Namespace flags of `clone`: with any of them a task would make a namespace (a user namespace gives it every
/// capability inside it, and with them the kernel's namespaced attack surface).
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// Calls refused to every task: debugging or reading other processes, kernel attack surface (bpf, perf,
/// io_uring, userfaultfd), the kernel keyrings, namespaces and mounts, module and kernel loading.
pub const DENIED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("acct", libc::SYS_acct),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
];

/// x86_64 system calls by name: those a profile may plausibly deny, and the usual ones besides.
const SYSCALLS: &[(&str, i64)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("open", libc::SYS_open),
    ("close", libc::SYS_close),
    ("stat", libc::SYS_stat),
    ("fstat", libc::SYS_fstat),
    ("lstat", libc::SYS_lstat),
    ("poll", libc::SYS_poll),
    ("lseek", libc::SYS_lseek),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("munmap", libc::SYS_munmap),
    ("brk", libc::SYS_brk),
    ("ioctl", libc::SYS_ioctl),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("access", libc::SYS_access),
    ("pipe", libc::SYS_pipe),
    ("select", libc::SYS_select),
    ("sched_yield", libc::SYS_sched_yield),
    ("mremap", libc::SYS_mremap),
    ("msync", libc::SYS_msync),
    ("mincore", libc::SYS_mincore),
    ("madvise", libc::SYS_madvise),
    ("shmget", libc::SYS_shmget),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("pause", libc::SYS_pause),
    ("nanosleep", libc::SYS_nanosleep),
    ("getitimer", libc::SYS_getitimer),
    ("alarm", libc::SYS_alarm),
    ("setitimer", libc::SYS_setitimer),
    ("getpid", libc::SYS_getpid),
    ("sendfile", libc::SYS_sendfile),
    ("socket", libc::SYS_socket),
    ("connect", libc::SYS_connect),
    ("accept", libc::SYS_accept),
    ("sendto", libc::SYS_sendto),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("shutdown", libc::SYS_shutdown),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("socketpair", libc::SYS_socketpair),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("clone", libc::SYS_clone),
    ("fork", libc::SYS_fork),
    ("vfork", libc::SYS_vfork),
    ("execve", libc::SYS_execve),
    ("exit", libc::SYS_exit),
    ("wait4", libc::SYS_wait4),
    ("kill", libc::SYS_kill),
    ("uname", libc::SYS_uname),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semctl", libc::SYS_semctl),
    ("shmdt", libc::SYS_shmdt),
    ("msgget", libc::SYS_msgget),
    ("msgsnd", libc::SYS_msgsnd),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgctl", libc::SYS_msgctl),
    ("fcntl", libc::SYS_fcntl),
    ("flock", libc::SYS_flock),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("truncate", libc::SYS_truncate),
    ("ftruncate", libc::SYS_ftruncate),
    ("getdents", libc::SYS_getdents),
    ("getcwd", libc::SYS_getcwd),
    ("chdir", libc::SYS_chdir),
    ("fchdir", libc::SYS_fchdir),
    ("rename", libc::SYS_rename),
    ("mkdir", libc::SYS_mkdir),
    ("rmdir", libc::SYS_rmdir),
    ("creat", libc::SYS_creat),
    ("link", libc::SYS_link),
    ("unlink", libc::SYS_unlink),
    ("symlink", libc::SYS_symlink),
    ("readlink", libc::SYS_readlink),
    ("chmod", libc::SYS_chmod),
    ("fchmod", libc::SYS_fchmod),
    ("chown", libc::SYS_chown),
    ("fchown", libc::SYS_fchown),
    ("lchown", libc::SYS_lchown),
    ("umask", libc::SYS_umask),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getrlimit", libc::SYS_getrlimit),
    ("getrusage", libc::SYS_getrusage),
    ("sysinfo", libc::SYS_sysinfo),
    ("times", libc::SYS_times),
    ("ptrace", libc::SYS_ptrace),
    ("getuid", libc::SYS_getuid),
    ("syslog", libc::SYS_syslog),
    ("getgid", libc::SYS_getgid),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("geteuid", libc::SYS_geteuid),
    ("getegid", libc::SYS_getegid),
    ("setpgid", libc::SYS_setpgid),
    ("getppid", libc::SYS_getppid),
    ("getpgrp", libc::SYS_getpgrp),
    ("setsid", libc::SYS_setsid),
    ("setreuid", libc::SYS_setreuid),
    ("setregid", libc::SYS_setregid),
    ("getgroups", libc::SYS_getgroups),
    ("setgroups", libc::SYS_setgroups),
    ("setresuid", libc::SYS_setresuid),
    ("getresuid", libc::SYS_getresuid),
    ("setresgid", libc::SYS_setresgid),
    ("getresgid", libc::SYS_getresgid),
    ("getpgid", libc::SYS_getpgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setfsgid", libc::SYS_setfsgid),
    ("getsid", libc::SYS_getsid),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("utime", libc::SYS_utime),
    ("mknod", libc::SYS_mknod),
    ("uselib", libc::SYS_uselib),
    ("personality", libc::SYS_personality),
    ("ustat", libc::SYS_ustat),
    ("statfs", libc::SYS_statfs),
    ("fstatfs", libc::SYS_fstatfs),
    ("sysfs", libc::SYS_sysfs),
    ("getpriority", libc::SYS_getpriority),
    ("setpriority", libc::SYS_setpriority),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("mlock", libc::SYS_mlock),
    ("munlock", libc::SYS_munlock),
    ("mlockall", libc::SYS_mlockall),
    ("munlockall", libc::SYS_munlockall),
    ("vhangup", libc::SYS_vhangup),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("pivot_root", libc::SYS_pivot_root),
    ("prctl", libc::SYS_prctl),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("adjtimex", libc::SYS_adjtimex),
    ("setrlimit", libc::SYS_setrlimit),
    ("chroot", libc::SYS_chroot),
    ("sync", libc::SYS_sync),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("init_module", libc::SYS_init_module),
    ("delete_module", libc::SYS_delete_module),
    ("quotactl", libc::SYS_quotactl),
    ("gettid", libc::SYS_gettid),
    ("readahead", libc::SYS_readahead),
    ("setxattr", libc::SYS_setxattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("getxattr", libc::SYS_getxattr),
    ("removexattr", libc::SYS_removexattr),
    ("tkill", libc::SYS_tkill),
    ("time", libc::SYS_time),
    ("futex", libc::SYS_futex),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("io_setup", libc::SYS_io_setup),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    ("io_submit", libc::SYS_io_submit),
    ("io_cancel", libc::SYS_io_cancel),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("epoll_create", libc::SYS_epoll_create),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("timer_create", libc::SYS_timer_create),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("tgkill", libc::SYS_tgkill),
    ("utimes", libc::SYS_utimes),
    ("mbind", libc::SYS_mbind),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("mq_open", libc::SYS_mq_open),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("kexec_load", libc::SYS_kexec_load),
    ("waitid", libc::SYS_waitid),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("keyctl", libc::SYS_keyctl),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("inotify_init", libc::SYS_inotify_init),
    ("migrate_pages", libc::SYS_migrate_pages),
    ("openat", libc::SYS_openat),
    ("mkdirat", libc::SYS_mkdirat),
    ("mknodat", libc::SYS_mknodat),
    ("fchownat", libc::SYS_fchownat),
    ("unlinkat", libc::SYS_unlinkat),
    ("renameat", libc::SYS_renameat),
    ("linkat", libc::SYS_linkat),
    ("symlinkat", libc::SYS_symlinkat),
    ("fchmodat", libc::SYS_fchmodat),
    ("faccessat", libc::SYS_faccessat),
    ("unshare", libc::SYS_unshare),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("splice", libc::SYS_splice),
    ("tee", libc::SYS_tee),
    ("vmsplice", libc::SYS_vmsplice),
    ("move_pages", libc::SYS_move_pages),
    ("utimensat", libc::SYS_utimensat),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("signalfd", libc::SYS_signalfd),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("eventfd", libc::SYS_eventfd),
    ("fallocate", libc::SYS_fallocate),
    ("accept4", libc::SYS_accept4),
    ("dup3", libc::SYS_dup3),
    ("pipe2", libc::SYS_pipe2),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("prlimit64", libc::SYS_prlimit64),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("syncfs", libc::SYS_syncfs),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("setns", libc::SYS_setns),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("finit_module", libc::SYS_finit_module),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("renameat2", libc::SYS_renameat2),
    ("seccomp", libc::SYS_seccomp),
    ("getrandom", libc::SYS_getrandom),
    ("memfd_create", libc::SYS_memfd_create),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("execveat", libc::SYS_execveat),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("membarrier", libc::SYS_membarrier),
    ("mlock2", libc::SYS_mlock2),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("statx", libc::SYS_statx),
    ("rseq", libc::SYS_rseq),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("clone3", libc::SYS_clone3),
    ("close_range", libc::SYS_close_range),
    ("openat2", libc::SYS_openat2),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("faccessat2", libc::SYS_faccessat2),
    ("process_madvise", libc::SYS_process_madvise),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("futex_waitv", libc::SYS_futex_waitv),
    ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
];

/// The x86_64 number of a system call, by its name (`None` for a name this table does not know: a profile naming
/// one is refused).
pub fn syscall_number(name: &str) -> Option<i64> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Where a jump of the prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Socket,
    SocketType,
    UnixType,
    Socketpair,
    Ioctl,
    Clone,
    Eperm,
    Enosys,
    Body,
}

/// One instruction of the prefix, before its jumps are resolved.
enum Insn {
    /// Load the 32-bit word at this offset of `struct seccomp_data`.
    Load(u32),
    /// `A &= k`.
    And(u32),
    /// If `A == k`, go to the label (else the next instruction).
    IfEq(u32, Label),
    /// If `A != k`, go to the label.
    IfNe(u32, Label),
    /// If `A >= k`, go to the label.
    IfGe(u32, Label),
    /// If `A & k != 0`, go to the label.
    IfAny(u32, Label),
    /// Go to the label.
    Goto(Label),
    /// Return this action.
    Ret(u32),
    /// Where a label points.
    Here(Label),
}

const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const NR: u32 = 0;
const ARCH: u32 = 4;

/// Offset of the low 32 bits of argument `i` (x86_64 is little-endian). Each argument this filter reads is an `int`
/// or `unsigned int` for the kernel (or, for `clone`, a flags word the kernel truncates to its low 32 bits), so a
/// caller setting high bits cannot slip past a comparison the kernel would not make either.
const fn arg_low(i: u32) -> u32 {
    16 + 8 * i
}

fn errno(e: i32) -> u32 {
    SECCOMP_RET_ERRNO | (e as u32 & 0xffff)
}

/// The hand-written prefix (its last jump target, [`Label::Body`], is the instruction after it).
fn prefix(rules: &SeccompRules) -> Vec<Insn> {
    use Insn::*;
    let mut p = vec![
        Load(NR),
        IfGe(X32_SYSCALL_BIT, Label::Eperm),
        Load(ARCH),
        IfNe(AUDIT_ARCH_X86_64, Label::Body),
        Load(NR),
        IfEq(libc::SYS_socket as u32, Label::Socket),
        IfEq(libc::SYS_socketpair as u32, Label::Socketpair),
        IfEq(libc::SYS_ioctl as u32, Label::Ioctl),
        IfEq(libc::SYS_clone as u32, Label::Clone),
        IfEq(libc::SYS_clone3 as u32, Label::Enosys),
        Goto(Label::Body),
        Here(Label::Socket),
        Load(arg_low(0)),
    ];
    if rules.inet_stream_sockets {
        p.extend([IfEq(libc::AF_INET as u32, Label::SocketType), IfEq(libc::AF_INET6 as u32, Label::SocketType)]);
    }
    if rules.unix_stream_sockets {
        p.push(IfEq(libc::AF_UNIX as u32, Label::UnixType));
    }
    p.push(Ret(errno(libc::EAFNOSUPPORT)));
    if rules.inet_stream_sockets {
        p.extend([
            Here(Label::SocketType),
            Load(arg_low(1)),
            And(!((libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32)),
            IfEq(libc::SOCK_STREAM as u32, Label::Body),
            Goto(Label::Eperm),
        ]);
    }
    if rules.unix_stream_sockets {
        p.extend([
            Here(Label::UnixType),
            Load(arg_low(1)),
            And(!((libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32)),
            IfNe(libc::SOCK_STREAM as u32, Label::Eperm),
            Load(arg_low(2)),
            IfEq(0, Label::Body),
            Goto(Label::Eperm),
        ]);
    }
    p.extend([
        Here(Label::Socketpair),
        Load(arg_low(0)),
        IfEq(libc::AF_UNIX as u32, Label::Body),
        Ret(errno(libc::EAFNOSUPPORT)),
        Here(Label::Ioctl),
        Load(arg_low(1)),
        IfEq(libc::TIOCSTI as u32, Label::Eperm),
        IfEq(libc::TIOCLINUX as u32, Label::Eperm),
        Goto(Label::Body),
        Here(Label::Clone),
        Load(arg_low(0)),
        IfAny(CLONE_NAMESPACE_FLAGS, Label::Eperm),
        Goto(Label::Body),
        Here(Label::Eperm),
        Ret(errno(libc::EPERM)),
        Here(Label::Enosys),
        Ret(errno(libc::ENOSYS)),
        Here(Label::Body),
    ]);
    p
}

/// Resolve the prefix's labels into classic BPF.
fn assemble(insns: &[Insn]) -> Result<Vec<sock_filter>, SandboxError> {
    let mut at = Vec::new();
    let mut pc = 0usize;
    for i in insns {
        match i {
            Insn::Here(l) => at.push((*l, pc)),
            _ => pc += 1,
        }
    }
    let target = |l: Label, from: usize| -> Result<u8, SandboxError> {
        let to = at.iter().find(|(x, _)| *x == l).map(|(_, pc)| *pc);
        let to = to.ok_or_else(|| SandboxError::Seccomp(format!("filter label {l:?} is nowhere")))?;
        to.checked_sub(from + 1)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or_else(|| SandboxError::Seccomp(format!("filter jump to {l:?} out of range")))
    };
    let mut out = Vec::new();
    for i in insns {
        let pc = out.len();
        let (code, jt, jf, k) = match *i {
            Insn::Here(_) => continue,
            Insn::Load(off) => (0x20, 0, 0, off), // BPF_LD | BPF_W | BPF_ABS
            Insn::And(k) => (0x54, 0, 0, k),      // BPF_ALU | BPF_AND | BPF_K
            Insn::IfEq(k, l) => (0x15, target(l, pc)?, 0, k), // BPF_JMP | BPF_JEQ | BPF_K
            Insn::IfNe(k, l) => (0x15, 0, target(l, pc)?, k),
            Insn::IfGe(k, l) => (0x35, target(l, pc)?, 0, k), // BPF_JMP | BPF_JGE | BPF_K
            Insn::IfAny(k, l) => (0x45, target(l, pc)?, 0, k), // BPF_JMP | BPF_JSET | BPF_K
            Insn::Goto(l) => (0x05, 0, 0, u32::from(target(l, pc)?)), // BPF_JMP | BPF_JA
            Insn::Ret(k) => (0x06, 0, 0, k),                  // BPF_RET | BPF_K
        };
        out.push(sock_filter { code, jt, jf, k });
    }
    Ok(out)
}

/// Build the filter program for these rules: the prefix, then seccompiler's arch-checked deny list.
pub fn program(rules: &SeccompRules) -> Result<BpfProgram, SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    for name in &rules.extra_denied {
        let nr = syscall_number(name)
            .ok_or_else(|| SandboxError::Seccomp(format!("unknown system call {name:?} in the denied list")))?;
        denied.insert(nr, Vec::new());
    }
    let filter =
        SeccompFilter::new(denied, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), TargetArch::x86_64)
            .map_err(|e| err(&e))?;
    let body: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| err(&e))?;
    let mut program = assemble(&prefix(rules))?;
    program.extend(body);
    Ok(program)
}

/// Install the filter on this thread (and so on everything it starts).
pub fn apply(rules: &SeccompRules) -> Result<(), SandboxError> {
    let program = program(rules)?;
    seccompiler::apply_filter(&program).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
