//! The filter, installed on a thread of its own (seccomp binds only the calling thread here), against raw calls.

use super::{CALLER_ONLY, SYSV_IPC, SeccompRules, apply, program, syscall_number};

/// Run `f` on a new thread that first installs the filter for `rules`.
fn filtered<T: Send + 'static>(rules: SeccompRules, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        apply(&rules).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A raw system call's result: `Ok(return value)` or `Err(errno)`.
fn call(nr: i64, args: [u64; 3]) -> Result<i64, i32> {
    // SAFETY: the calls the tests make take integers or null pointers, or (ioctl) a valid pointer to one byte.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(r) }
}

/// A raw system call of up to six arguments (integers or null pointers only).
fn call6(nr: i64, a: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: the tests pass integers, null pointers or pointers to live buffers of the size they say.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(r) }
}

/// `socket(family, type, 0)`; closes what it opened.
fn socket(family: i32, ty: i32) -> Result<(), i32> {
    let fd = call(libc::SYS_socket, [family as u64, ty as u64, 0])?;
    // SAFETY: closing the descriptor just opened.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fd as i32)
    };
    Ok(())
}

fn socketpair(family: i32) -> Result<(), i32> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    #[allow(unsafe_code)]
    let r = unsafe { libc::socketpair(family, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: closing the two descriptors just opened.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Ok(())
}

#[test]
fn the_deny_list_refuses_what_it_lists_and_allows_the_rest() {
    let (unshare, getpid) =
        filtered(SeccompRules::default(), || (call(libc::SYS_unshare, [0; 3]), call(libc::SYS_getpid, [0; 3])));
    assert_eq!(unshare, Err(libc::EPERM), "unshare must be refused");
    assert!(getpid.unwrap() > 0, "getpid must still work");
}

#[test]
fn without_network_every_socket_is_refused_but_unix_socketpairs() {
    let (unix, inet, inet6, netlink, packet, vsock, pair, pair_inet) = filtered(SeccompRules::default(), || {
        (
            socket(libc::AF_UNIX, libc::SOCK_STREAM),
            socket(libc::AF_INET, libc::SOCK_STREAM),
            socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
            socket(libc::AF_NETLINK, libc::SOCK_RAW),
            socket(libc::AF_PACKET, libc::SOCK_RAW),
            socket(libc::AF_VSOCK, libc::SOCK_STREAM),
            socketpair(libc::AF_UNIX),
            socketpair(libc::AF_INET),
        )
    });
    for (what, r) in [("unix", unix), ("inet", inet), ("inet6", inet6), ("netlink", netlink), ("packet", packet)] {
        assert_eq!(r, Err(libc::EAFNOSUPPORT), "socket({what})");
    }
    assert_eq!(vsock, Err(libc::EAFNOSUPPORT), "socket(vsock)");
    assert_eq!(pair, Ok(()), "socketpair(AF_UNIX) stays allowed");
    assert_eq!(pair_inet, Err(libc::EAFNOSUPPORT));
    // The control: the same sockets open on an unfiltered thread.
    assert_eq!(socket(libc::AF_UNIX, libc::SOCK_STREAM), Ok(()));
    assert_eq!(socket(libc::AF_INET, libc::SOCK_STREAM), Ok(()));
    assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_RAW), Ok(()));
}

#[test]
fn with_network_only_inet_stream_sockets_open() {
    let rules = SeccompRules { inet_stream_sockets: true, ..SeccompRules::default() };
    let (v4, v6, flags, udp, raw, unix, stray_bit) = filtered(rules, || {
        (
            socket(libc::AF_INET, libc::SOCK_STREAM),
            socket(libc::AF_INET6, libc::SOCK_STREAM),
            socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC),
            socket(libc::AF_INET, libc::SOCK_DGRAM),
            socket(libc::AF_INET, libc::SOCK_RAW),
            socket(libc::AF_UNIX, libc::SOCK_STREAM),
            // SOCK_DGRAM spelled with a high bit the kernel ignores for an `int` argument.
            call(libc::SYS_socket, [libc::AF_INET as u64, (1u64 << 32) | libc::SOCK_DGRAM as u64, 0]).map(|_| ()),
        )
    });
    assert_eq!((v4, v6, flags), (Ok(()), Ok(()), Ok(())));
    assert_eq!(udp, Err(libc::EPERM));
    assert_eq!(raw, Err(libc::EPERM));
    assert_eq!(stray_bit, Err(libc::EPERM));
    assert_eq!(unix, Err(libc::EAFNOSUPPORT));
}

#[test]
fn unix_stream_sockets_open_only_when_asked_and_only_as_streams() {
    let rules = SeccompRules { unix_stream_sockets: true, ..SeccompRules::default() };
    let (stream, flags, dgram, seqpacket, protocol, inet, pair) = filtered(rules, || {
        (
            socket(libc::AF_UNIX, libc::SOCK_STREAM),
            socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK),
            socket(libc::AF_UNIX, libc::SOCK_DGRAM),
            socket(libc::AF_UNIX, libc::SOCK_SEQPACKET),
            call(libc::SYS_socket, [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 1]).map(|_| ()),
            socket(libc::AF_INET, libc::SOCK_STREAM),
            socketpair(libc::AF_UNIX),
        )
    });
    assert_eq!((stream, flags, pair), (Ok(()), Ok(()), Ok(())));
    assert_eq!((dgram, seqpacket, protocol), (Err(libc::EPERM), Err(libc::EPERM), Err(libc::EPROTONOSUPPORT)));
    assert_eq!(inet, Err(libc::EAFNOSUPPORT), "unix sockets do not bring TCP with them");
    // The control: unfiltered, the refused ones open (protocol 1 is PF_UNIX, which the kernel accepts).
    assert_eq!(socket(libc::AF_UNIX, libc::SOCK_DGRAM), Ok(()));
    assert!(call(libc::SYS_socket, [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 1]).is_ok());
    // Both at once: each family keeps its own type check.
    let both = SeccompRules { unix_stream_sockets: true, inet_stream_sockets: true, ..SeccompRules::default() };
    let (unix, tcp, udp) = filtered(both, || {
        (
            socket(libc::AF_UNIX, libc::SOCK_STREAM),
            socket(libc::AF_INET, libc::SOCK_STREAM),
            socket(libc::AF_INET, libc::SOCK_DGRAM),
        )
    });
    assert_eq!((unix, tcp, udp), (Ok(()), Ok(()), Err(libc::EPERM)));
}

#[test]
fn terminal_injection_ioctls_are_refused_even_with_high_bits_set() {
    let results = filtered(SeccompRules::default(), || {
        let byte = b"x";
        let ptr = byte.as_ptr() as u64;
        [
            call(libc::SYS_ioctl, [0, libc::TIOCSTI, ptr]),
            call(libc::SYS_ioctl, [0, (1u64 << 32) | libc::TIOCSTI, ptr]),
            call(libc::SYS_ioctl, [0, libc::TIOCLINUX, ptr]),
            call(libc::SYS_ioctl, [0, (0xdead_u64 << 32) | libc::TIOCLINUX, ptr]),
        ]
    });
    for r in results {
        assert_eq!(r, Err(libc::EPERM));
    }
    // Other ioctls still reach the kernel (on a non-terminal: ENOTTY, not EPERM).
    let other = filtered(SeccompRules::default(), || {
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut size = [0u16; 4];
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file) as u64;
        call(libc::SYS_ioctl, [fd, libc::TIOCGWINSZ, size.as_mut_ptr() as u64])
    });
    assert_eq!(other, Err(libc::ENOTTY));
}

#[test]
fn clone_with_a_namespace_flag_is_refused_and_clone3_says_enosys() {
    let (userns, netns, clone3, thread) = filtered(SeccompRules::default(), || {
        let fork_like = |flags: u64| {
            let r = call(libc::SYS_clone, [flags | libc::SIGCHLD as u64, 0, 0]);
            if r == Ok(0) {
                // SAFETY: in the child of a failed check: leave at once.
                #[allow(unsafe_code)]
                unsafe {
                    libc::_exit(0)
                };
            }
            if let Ok(pid) = r {
                // SAFETY: reaping the child just made.
                #[allow(unsafe_code)]
                unsafe {
                    libc::waitpid(pid as i32, std::ptr::null_mut(), 0)
                };
            }
            r.map(|_| ())
        };
        let userns = fork_like(libc::CLONE_NEWUSER as u64);
        let netns = fork_like((1u64 << 40) | libc::CLONE_NEWNET as u64);
        let clone3 = call(libc::SYS_clone3, [0, 0, 0]).map(|_| ());
        let thread = std::thread::spawn(|| 7).join().ok();
        (userns, netns, clone3, thread)
    });
    assert_eq!(userns, Err(libc::EPERM));
    assert_eq!(netns, Err(libc::EPERM));
    // The control: unfiltered, the same clone makes a user namespace (the child leaves at once).
    let r = call(libc::SYS_clone, [libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64, 0, 0]);
    if r == Ok(0) {
        // SAFETY: in the child: leave at once.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(0)
        };
    }
    let pid = r.unwrap();
    // SAFETY: reaping the child just made.
    #[allow(unsafe_code)]
    unsafe {
        libc::waitpid(pid as i32, std::ptr::null_mut(), 0)
    };
    assert_eq!(clone3, Err(libc::ENOSYS));
    assert_eq!(thread, Some(7), "threads (clone without namespace flags) still start");
}

#[test]
fn extra_denied_calls_are_refused_and_unknown_names_are_an_error() {
    let rules = SeccompRules { extra_denied: vec!["getppid".into(), "socketpair".into()], ..SeccompRules::default() };
    let (getppid, pair) = filtered(rules, || (call(libc::SYS_getppid, [0; 3]), socketpair(libc::AF_UNIX)));
    assert_eq!(getppid, Err(libc::EPERM));
    assert_eq!(pair, Err(libc::EPERM), "the deny list applies after the prefix lets a call through");
    let unknown = SeccompRules { extra_denied: vec!["no_such_call".into()], ..SeccompRules::default() };
    let e = program(&unknown).unwrap_err().to_string();
    assert!(e.contains("no_such_call"), "{e}");
    assert_eq!(syscall_number("keyctl"), Some(libc::SYS_keyctl));
    assert_eq!(syscall_number("ptrace"), Some(101));
    assert_eq!(syscall_number("nope"), None);
}

#[test]
fn x32_calls_are_refused() {
    let r = filtered(SeccompRules::default(), || call(0x4000_0000 | libc::SYS_getpid, [0; 3]));
    assert_eq!(r, Err(libc::EPERM));
}

#[test]
fn rules_read_from_kebab_case_and_refuse_unknown_keys() {
    let rules: SeccompRules =
        serde_json::from_str(r#"{"inet-stream-sockets": true, "extra-denied": ["chroot"]}"#).unwrap();
    assert_eq!(
        rules,
        SeccompRules { inet_stream_sockets: true, extra_denied: vec!["chroot".into()], ..SeccompRules::default() }
    );
    assert_eq!(serde_json::from_str::<SeccompRules>("{}").unwrap(), SeccompRules::default());
    assert!(serde_json::from_str::<SeccompRules>(r#"{"inet_stream_sockets": true}"#).is_err());
}

/// `socket(AF_INET, SOCK_STREAM, protocol)`; closes what it opened.
fn tcp_socket(protocol: u64) -> Result<(), i32> {
    let fd = call(libc::SYS_socket, [libc::AF_INET as u64, libc::SOCK_STREAM as u64, protocol])?;
    // SAFETY: closing the descriptor just opened.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fd as i32)
    };
    Ok(())
}

const IPPROTO_MPTCP: u64 = 262;
const MSG_FASTOPEN: u64 = 0x2000_0000;

#[test]
fn tcp_sockets_take_protocol_zero_or_tcp_only_so_mptcp_is_refused() {
    let rules = SeccompRules { inet_stream_sockets: true, ..SeccompRules::default() };
    let (zero, tcp, mptcp, mptcp_high, mptcp6) = filtered(rules, || {
        (
            tcp_socket(0),
            tcp_socket(libc::IPPROTO_TCP as u64),
            tcp_socket(IPPROTO_MPTCP),
            tcp_socket((1 << 32) | IPPROTO_MPTCP),
            call(libc::SYS_socket, [libc::AF_INET6 as u64, libc::SOCK_STREAM as u64, IPPROTO_MPTCP]).map(|_| ()),
        )
    });
    assert_eq!((zero, tcp), (Ok(()), Ok(())));
    assert_eq!(
        (mptcp, mptcp_high, mptcp6),
        (Err(libc::EPROTONOSUPPORT), Err(libc::EPROTONOSUPPORT), Err(libc::EPROTONOSUPPORT))
    );
    // The control: this kernel makes MPTCP sockets.
    assert_eq!(tcp_socket(IPPROTO_MPTCP), Ok(()), "MPTCP is on in this kernel (net.mptcp.enabled)");
}

#[test]
fn fast_open_is_refused_on_sendto_sendmsg_and_sendmmsg() {
    // fd -1: a call the filter lets through reaches the kernel and gets EBADF.
    let probe = || {
        let bad = u64::MAX;
        [
            call6(libc::SYS_sendto, [bad, 0, 0, MSG_FASTOPEN, 0, 0]),
            call6(libc::SYS_sendto, [bad, 0, 0, (1 << 40) | MSG_FASTOPEN | libc::MSG_NOSIGNAL as u64, 0, 0]),
            call6(libc::SYS_sendmsg, [bad, 0, MSG_FASTOPEN, 0, 0, 0]),
            call6(libc::SYS_sendmmsg, [bad, 0, 0, MSG_FASTOPEN, 0, 0]),
            call6(libc::SYS_sendto, [bad, 0, 0, libc::MSG_NOSIGNAL as u64, 0, 0]),
            call6(libc::SYS_sendmsg, [bad, 0, libc::MSG_DONTWAIT as u64, 0, 0, 0]),
        ]
    };
    let rules = SeccompRules { inet_stream_sockets: true, ..SeccompRules::default() };
    let inside = filtered(rules, probe);
    let e = Err(libc::EOPNOTSUPP);
    assert_eq!(inside, [e, e, e, e, Err(libc::EBADF), Err(libc::EBADF)]);
    assert_eq!(probe(), [Err(libc::EBADF); 6], "the control: unfiltered, each reaches the kernel");
}

#[test]
fn listen_is_refused_unless_the_profile_binds_ports() {
    let listen = || {
        let fd = call(libc::SYS_socket, [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0]).unwrap();
        // An unbound socket: listen would bind it to an ephemeral port.
        let r = call(libc::SYS_listen, [fd as u64, 1, 0]);
        // SAFETY: closing the descriptor just opened.
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fd as i32)
        };
        r
    };
    let no_bind = SeccompRules { inet_stream_sockets: true, ..SeccompRules::default() };
    assert_eq!(filtered(no_bind, listen), Err(libc::EPERM));
    let bind = SeccompRules { inet_stream_sockets: true, listen_sockets: true, ..SeccompRules::default() };
    assert_eq!(filtered(bind, listen), Ok(0));
    assert_eq!(listen(), Ok(0), "the control");
}

/// A process of the test's own to aim at, killed on drop.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Self {
        Self(std::process::Command::new("sleep").arg("60").spawn().unwrap())
    }
    fn pid(&self) -> u64 {
        u64::from(self.0.id())
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn limits_scheduling_and_memory_placement_act_on_the_caller_only() {
    let other = Bystander::start();
    let pid = other.pid();
    let probe =
        move |pid: u64| CALLER_ONLY.iter().map(|(name, nr)| (*name, call(*nr, [pid, 0, 0]))).collect::<Vec<_>>();
    let (on_other, on_other_high, on_self) =
        filtered(SeccompRules::default(), move || (probe(pid), probe((1 << 32) | pid), probe(0)));
    for (name, r) in on_other.iter().chain(&on_other_high) {
        assert_eq!(*r, Err(libc::EPERM), "{name} on another pid");
    }
    for (name, r) in on_self {
        assert_ne!(r, Err(libc::EPERM), "{name} on pid 0 reaches the kernel");
    }
    // The control: unfiltered, the kernel takes each call on the other pid (it answers, but not EPERM).
    for (name, r) in probe(pid) {
        assert_ne!(r, Err(libc::EPERM), "{name} on another pid, unfiltered");
    }
    // A real change: prlimit64 on the other pid, refused inside, done outside.
    let limit = libc::rlimit64 { rlim_cur: 77, rlim_max: 77 };
    let set = move || call6(libc::SYS_prlimit64, [pid, libc::RLIMIT_NOFILE as u64, &limit as *const _ as u64, 0, 0, 0]);
    assert_eq!(filtered(SeccompRules::default(), set), Err(libc::EPERM));
    assert_eq!(set(), Ok(0));
}

#[test]
fn setpriority_and_ioprio_set_act_on_the_calling_process_only() {
    let other = Bystander::start();
    let pid = other.pid();
    const PRIO_PGRP: u64 = 1;
    const PRIO_USER: u64 = 2;
    const IOPRIO_WHO_PROCESS: u64 = 1;
    const IOPRIO_WHO_USER: u64 = 3;
    const IOPRIO_BE_4: u64 = (2 << 13) | 4;
    let probe = move || {
        [
            call(libc::SYS_setpriority, [0, 0, 0]),
            call(libc::SYS_setpriority, [0, pid, 5]),
            call(libc::SYS_setpriority, [PRIO_PGRP, 0, 5]),
            call(libc::SYS_setpriority, [PRIO_USER, 0, 5]),
            call(libc::SYS_ioprio_set, [IOPRIO_WHO_PROCESS, 0, IOPRIO_BE_4]),
            call(libc::SYS_ioprio_set, [IOPRIO_WHO_PROCESS, pid, IOPRIO_BE_4]),
            call(libc::SYS_ioprio_set, [IOPRIO_WHO_USER, 0, IOPRIO_BE_4]),
        ]
    };
    let e = Err(libc::EPERM);
    let inside = filtered(SeccompRules::default(), probe);
    assert_eq!(inside, [Ok(0), e, e, e, Ok(0), e, e]);
    // The control, on the other process only (never the test's process group or user).
    assert_eq!(call(libc::SYS_setpriority, [0, pid, 5]), Ok(0));
    assert_eq!(call(libc::SYS_ioprio_set, [IOPRIO_WHO_PROCESS, pid, IOPRIO_BE_4]), Ok(0));
}

#[test]
fn system_v_ipc_does_not_exist_inside() {
    let shmget = || call(libc::SYS_shmget, [libc::IPC_PRIVATE as u64, 4096, (libc::IPC_CREAT | 0o600) as u64]);
    let (made, all) = filtered(SeccompRules::default(), move || {
        (shmget(), SYSV_IPC.iter().map(|(name, nr)| (*name, call(*nr, [0, 0, 0]))).collect::<Vec<_>>())
    });
    assert_eq!(made, Err(libc::ENOSYS));
    for (name, r) in all {
        assert_eq!(r, Err(libc::ENOSYS), "{name}");
    }
    // The control: outside, a segment is made (and removed).
    let id = shmget().unwrap();
    assert_eq!(call(libc::SYS_shmctl, [id as u64, libc::IPC_RMID as u64, 0]), Ok(0));
}

#[test]
fn calls_on_other_processes_and_kernel_state_are_denied() {
    let results = filtered(SeccompRules::default(), || {
        [
            ("kcmp", call(libc::SYS_kcmp, [0, 0, 0])),
            ("syslog", call(libc::SYS_syslog, [10, 0, 0])),
            ("fanotify_init", call(libc::SYS_fanotify_init, [0, 0, 0])),
            ("open_by_handle_at", call(libc::SYS_open_by_handle_at, [0, 0, 0])),
            ("process_madvise", call(libc::SYS_process_madvise, [u64::MAX, 0, 0])),
        ]
    });
    for (name, r) in results {
        assert_eq!(r, Err(libc::EPERM), "{name}");
    }
    // The control: unfiltered, syslog's buffer size is answered.
    assert!(call(libc::SYS_syslog, [10, 0, 0]).is_ok());
}
