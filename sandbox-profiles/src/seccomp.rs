//! The seccomp layer: system calls a task never needs, refused with EPERM (not killed, so tools report an error).
//!
//! Built with seccompiler (the filter checks the architecture and kills any other); before it, a short prefix
//! refuses every x32-ABI call (numbers with the `__X32_SYSCALL_BIT`), which would otherwise pass the x86_64 arch
//! check under other numbers. Applied after Landlock (no_new_privs is already set), before any thread.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch, sock_filter};

use crate::SandboxError;

/// The x32 ABI's syscall number bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

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
    ("fsmount", libc::SYS_fsmount),
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

/// What a profile changes in the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SeccompRules {
    /// Whether the task may open AF_INET/AF_INET6 stream sockets (a profile that allows network).
    pub inet_stream_sockets: bool,
    /// More system calls to refuse, by name.
    pub extra_denied: Vec<String>,
}

/// Further calls a profile may name in `[syscalls] deny`, beyond [`DENIED`].
const NAMEABLE: &[(&str, i64)] = &[
    ("personality", libc::SYS_personality),
    ("chroot", libc::SYS_chroot),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("quotactl", libc::SYS_quotactl),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("clone3", libc::SYS_clone3),
    ("memfd_create", libc::SYS_memfd_create),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
];

/// The number of system call `name` on x86_64, if a profile may name it.
pub fn syscall_number(name: &str) -> Option<i64> {
    DENIED.iter().chain(NAMEABLE).find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Build the filter program: the x32 prefix, then seccompiler's arch-checked deny list.
pub fn program(rules: &SeccompRules) -> Result<BpfProgram, SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let mut denied: Vec<i64> = DENIED.iter().map(|(_, nr)| *nr).collect();
    for name in &rules.extra_denied {
        denied.push(syscall_number(name).ok_or_else(|| err(&format!("unknown system call {name:?}")))?);
    }
    let rules: BTreeMap<i64, Vec<SeccompRule>> = denied.into_iter().map(|nr| (nr, Vec::new())).collect();
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), TargetArch::x86_64)
            .map_err(|e| err(&e))?;
    let body: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| err(&e))?;
    // Load the syscall number; if it carries the x32 bit, return EPERM; else go on to the filter proper.
    let mut program = vec![
        sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 }, // BPF_LD | BPF_W | BPF_ABS, seccomp_data.nr
        sock_filter { code: 0x35, jt: 0, jf: 1, k: X32_SYSCALL_BIT }, // BPF_JMP | BPF_JGE | BPF_K
        sock_filter { code: 0x06, jt: 0, jf: 0, k: 0x0005_0000 | libc::EPERM as u32 }, // RET ERRNO(EPERM)
    ];
    program.extend(body);
    Ok(program)
}

/// Install the filter on this thread (and so on everything it starts).
pub fn apply(rules: &SeccompRules) -> Result<(), SandboxError> {
    let program = program(rules)?;
    seccompiler::apply_filter(&program).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_refuses_what_it_lists_and_allows_the_rest() {
        // On a thread of its own: seccomp binds only the calling thread here.
        let outcome = std::thread::spawn(|| {
            super::apply(&super::SeccompRules::default()).unwrap();
            // SAFETY: raw syscalls with harmless arguments, to see whether the filter lets them through.
            #[allow(unsafe_code)]
            let (unshare, getpid) = unsafe { (libc::syscall(libc::SYS_unshare, 0), libc::syscall(libc::SYS_getpid)) };
            let unshare_errno = std::io::Error::last_os_error().raw_os_error();
            (unshare, unshare_errno, getpid)
        })
        .join()
        .unwrap();
        assert_eq!(outcome.0, -1, "unshare must be refused");
        assert_eq!(outcome.1, Some(libc::EPERM));
        assert!(outcome.2 > 0, "getpid must still work");
    }
}
