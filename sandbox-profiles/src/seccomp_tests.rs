//! The filter, installed on a thread of its own (seccomp binds only the calling thread here), against raw calls.

use super::{SeccompRules, apply, program, syscall_number};

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
    assert_eq!((dgram, seqpacket, protocol), (Err(libc::EPERM), Err(libc::EPERM), Err(libc::EPERM)));
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
