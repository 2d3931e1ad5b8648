//! The seccomp layer: system calls a task never needs, refused with an errno (not killed, so tools report an
//! error), and the argument checks Landlock cannot make: socket families, types and protocols, TCP fast open,
//! `listen`, calls aimed at another process, terminal-injection ioctls, namespace flags of `clone`. Defence in depth
//! beside Landlock and the namespaces: each check here closes a hole found from inside a task on its own.
//!
//! The program has two parts. A hand-written prefix (checked by the tests, `seccomp_tests.rs`, through the kernel)
//! refuses every x32-ABI call (numbers with `__X32_SYSCALL_BIT`, which would otherwise pass the x86_64 arch check
//! under other numbers), then, for x86_64 calls only, looks at arguments:
//!
//! - `socket`: only the families the profile allows ([`SeccompRules`]); AF_INET/AF_INET6 only as `SOCK_STREAM` of
//!   protocol 0 or `IPPROTO_TCP` (an MPTCP socket, protocol 262, is a stream Landlock's TCP rules do not see);
//!   AF_UNIX only as `SOCK_STREAM` of protocol 0. `socketpair`: AF_UNIX only.
//! - `sendto`/`sendmmsg` (flags in argument 3), `sendmsg` (argument 2): no `MSG_FASTOPEN`, which connects without
//!   the hook Landlock's connect rule hangs on.
//! - `listen`: only when the profile binds TCP ports (on an unbound socket it binds an ephemeral port Landlock never
//!   saw). The filter cannot see an fd's family, so this holds for unix sockets too.
//! - [`CALLER_ONLY`] (`prlimit64`, `sched_set*`, `migrate_pages`, `move_pages`, `get_robust_list`): pid 0 only;
//!   `setpriority` only `PRIO_PROCESS` with who 0 and `ioprio_set` only `IOPRIO_WHO_PROCESS` with who 0 (who 0 with
//!   another `which` is the caller's process group or every process of its user). A task's own pid is refused too:
//!   the filter cannot know it; tools use 0.
//! - [`SYSV_IPC`]: refused with ENOSYS.
//! - `ioctl`: no TIOCSTI/TIOCLINUX. `clone`: no namespace flags. `clone3`: ENOSYS.
//!
//! Each argument read is an `int`/`unsigned int` for the kernel (or a flags word it truncates), so only its low 32
//! bits are compared: a caller setting high bits cannot slip past a comparison the kernel would not make either.
//! Then comes seccompiler's arch-checked deny list ([`DENIED`] plus the profile's [`SeccompRules::extra_denied`]),
//! refused with EPERM; an x86_64 call the prefix lets through still goes through it. Applied after Landlock
//! (no_new_privs is already set), before any thread.
//!
//! Errnos say "this does not exist here" where a kernel without the feature would, so programs take their fallback:
//! a socket family the task may not use gets EAFNOSUPPORT (as systemd's `RestrictAddressFamilies`; glibc's
//! `getaddrinfo` probes with a netlink socket and carries on without it), a protocol EPROTONOSUPPORT (Go falls back
//! from MPTCP to TCP), fast open EOPNOTSUPP (as with `net.ipv4.tcp_fastopen` off), System V IPC and `clone3` ENOSYS
//! (glibc falls back from `clone3` to `clone`, whose flags the filter reads). A socket type the family has but the
//! task may not use (a UDP socket where TCP is allowed), and everything else refused, gets EPERM.

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
    /// Whether `listen` is allowed (a profile with tcp-bind ports: Landlock then decides which ports a socket may be
    /// bound to). Without it `listen` is refused whatever the socket: on an unbound TCP socket it would bind a port
    /// Landlock never saw, and the worker's own listeners are made before the filter. The filter cannot see an fd's
    /// family, so with it a unix stream socket may listen too (Landlock decides where its name is made).
    pub listen_sockets: bool,
    /// System calls refused (EPERM) on top of [`DENIED`], by name (see [`syscall_number`]).
    pub extra_denied: Vec<String>,
}

impl SeccompRules {
    /// One line for the Sandboxed event's list of what is enforced.
    pub fn summary(&self) -> String {
        let sockets = match (self.inet_stream_sockets, self.unix_stream_sockets) {
            (true, true) => "no sockets but TCP and unix streams",
            (true, false) => "no sockets but TCP (unix socketpairs only)",
            (false, true) => "no sockets but unix streams",
            (false, false) => "no sockets (unix socketpairs only)",
        };
        let listen = if self.listen_sockets { "" } else { ", no listen" };
        let extra = if self.extra_denied.is_empty() {
            String::new()
        } else {
            format!(", also {}", self.extra_denied.join(" "))
        };
        format!(
            "seccomp: deny list, {sockets}{listen}, no TCP fast open, limits/priority/scheduling of the caller only, \
             no System V IPC{extra}"
        )
    }
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
    ("kcmp", libc::SYS_kcmp),
    ("process_madvise", libc::SYS_process_madvise),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("quotactl", libc::SYS_quotactl),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("uselib", libc::SYS_uselib),
    ("fanotify_init", libc::SYS_fanotify_init),
];

/// System V IPC: refused with ENOSYS (as a kernel built without it answers, so programs take their fallback). A
/// segment outlives its maker and is not counted in any task's memory limit, and the IPC namespace is shared
/// unless the outer boundary gives the task its own.
pub const SYSV_IPC: &[(&str, i64)] = &[
    ("shmget", libc::SYS_shmget),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("shmdt", libc::SYS_shmdt),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semtimedop", libc::SYS_semtimedop),
    ("semctl", libc::SYS_semctl),
    ("msgget", libc::SYS_msgget),
    ("msgsnd", libc::SYS_msgsnd),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgctl", libc::SYS_msgctl),
];

/// Calls that act on the process their first argument names, allowed only on the caller (pid 0): the limits,
/// scheduling and memory placement of another process (`prlimit64` on the supervisor's pid killed it with SIGXFSZ).
pub const CALLER_ONLY: &[(&str, i64)] = &[
    ("prlimit64", libc::SYS_prlimit64),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("migrate_pages", libc::SYS_migrate_pages),
    ("move_pages", libc::SYS_move_pages),
    ("get_robust_list", libc::SYS_get_robust_list),
];

/// `MSG_FASTOPEN`: connects and sends in one call, without the connect hook Landlock's TCP rules hang on.
const MSG_FASTOPEN: u32 = 0x2000_0000;

/// `IOPRIO_WHO_PROCESS` of `ioprio_set` (`PRIO_PROCESS` of `setpriority` is 0).
const IOPRIO_WHO_PROCESS: u32 = 1;

pub use crate::syscalls::syscall_number;

/// Where a jump of the prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Socket,
    SocketType,
    UnixType,
    TcpProtocol,
    FlagsArg2,
    FlagsArg3,
    CallerOnly,
    Setpriority,
    IoprioSet,
    Socketpair,
    Ioctl,
    Clone,
    Eperm,
    Enosys,
    Eprotonosupport,
    Eopnotsupp,
    WhoIsCaller,
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
        IfEq(libc::SYS_sendto as u32, Label::FlagsArg3),
        IfEq(libc::SYS_sendmmsg as u32, Label::FlagsArg3),
        IfEq(libc::SYS_sendmsg as u32, Label::FlagsArg2),
        IfEq(libc::SYS_setpriority as u32, Label::Setpriority),
        IfEq(libc::SYS_ioprio_set as u32, Label::IoprioSet),
    ];
    if !rules.listen_sockets {
        p.push(IfEq(libc::SYS_listen as u32, Label::Eperm));
    }
    p.extend(CALLER_ONLY.iter().map(|(_, nr)| IfEq(*nr as u32, Label::CallerOnly)));
    p.extend(SYSV_IPC.iter().map(|(_, nr)| IfEq(*nr as u32, Label::Enosys)));
    p.extend([Goto(Label::Body), Here(Label::Socket), Load(arg_low(0))]);
    if rules.inet_stream_sockets {
        p.extend([IfEq(libc::AF_INET as u32, Label::SocketType), IfEq(libc::AF_INET6 as u32, Label::SocketType)]);
    }
    if rules.unix_stream_sockets {
        p.push(IfEq(libc::AF_UNIX as u32, Label::UnixType));
    }
    p.push(Ret(errno(libc::EAFNOSUPPORT)));
    if rules.inet_stream_sockets {
        // A stream socket, of protocol 0 or IPPROTO_TCP only: IPPROTO_MPTCP (262) is a stream socket Landlock's TCP
        // rules do not see.
        p.extend([
            Here(Label::SocketType),
            Load(arg_low(1)),
            And(!((libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32)),
            IfNe(libc::SOCK_STREAM as u32, Label::Eperm),
            Goto(Label::TcpProtocol),
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
            Goto(Label::Eprotonosupport),
        ]);
    }
    if rules.inet_stream_sockets {
        p.extend([
            Here(Label::TcpProtocol),
            Load(arg_low(2)),
            IfEq(0, Label::Body),
            IfEq(libc::IPPROTO_TCP as u32, Label::Body),
            Goto(Label::Eprotonosupport),
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
        // sendto and sendmmsg: flags in argument 3; sendmsg: in argument 2.
        Here(Label::FlagsArg3),
        Load(arg_low(3)),
        IfAny(MSG_FASTOPEN, Label::Eopnotsupp),
        Goto(Label::Body),
        Here(Label::FlagsArg2),
        Load(arg_low(2)),
        IfAny(MSG_FASTOPEN, Label::Eopnotsupp),
        Goto(Label::Body),
        Here(Label::CallerOnly),
        Load(arg_low(0)),
        IfEq(0, Label::Body),
        Goto(Label::Eperm),
        // setpriority(PRIO_PROCESS, 0, _) and ioprio_set(IOPRIO_WHO_PROCESS, 0, _) only: who 0 with another `which`
        // is the caller's process group or every process of its user.
        Here(Label::Setpriority),
        Load(arg_low(0)),
        IfNe(libc::PRIO_PROCESS, Label::Eperm),
        Goto(Label::WhoIsCaller),
        Here(Label::IoprioSet),
        Load(arg_low(0)),
        IfNe(IOPRIO_WHO_PROCESS, Label::Eperm),
        Here(Label::WhoIsCaller),
        Load(arg_low(1)),
        IfEq(0, Label::Body),
        Here(Label::Eperm),
        Ret(errno(libc::EPERM)),
        Here(Label::Enosys),
        Ret(errno(libc::ENOSYS)),
        Here(Label::Eprotonosupport),
        Ret(errno(libc::EPROTONOSUPPORT)),
        Here(Label::Eopnotsupp),
        Ret(errno(libc::EOPNOTSUPP)),
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
