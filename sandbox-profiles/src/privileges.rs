//! Nothing of root's may remain in a task: securebits locked, every capability dropped, the inherited keyrings left,
//! the process non-dumpable.

use caps::CapSet;

use crate::SandboxError;

/// The securebits a worker locks: root gets no capabilities on execve (NOROOT), uid changes do not touch the
/// capability sets (NO_SETUID_FIXUP), capabilities are not kept across a uid change (KEEP_CAPS off), and no ambient
/// capability can be raised (NO_CAP_AMBIENT_RAISE); each with its `_LOCKED` bit, so no one can clear it again.
pub const LOCKED_SECUREBITS: u32 = (libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) as u32;

/// Lock the securebits (while CAP_SETPCAP is held), leave the inherited session keyring, drop every capability
/// (bounding set first, then ambient, inheritable, effective, permitted) and make this process non-dumpable, so
/// nothing it starts can regain root's powers or attach to it (ptrace, `pidfd_getfd`, `/proc/<pid>/mem`). Call
/// after [`crate::FsPolicy::apply`], before the seccomp filter (which refuses `keyctl`).
pub fn drop_privileges() -> Result<(), SandboxError> {
    let cap = |e: caps::errors::CapsError| SandboxError::Capabilities(e.to_string());
    let root = nix::unistd::geteuid().is_root();
    // Locking securebits and emptying the bounding set both need CAP_SETPCAP. Without it (an ordinary user), nothing
    // is left to regain: an unprivileged user's execve grants no capabilities, no_new_privs stops setuid and file
    // capabilities, and such a user has no capability to keep across a uid change or raise as ambient. Root without
    // CAP_SETPCAP could regain root's on execve, so that case fails closed.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).map_err(cap)? {
        lock_securebits()?;
        for c in caps::all() {
            caps::drop(None, CapSet::Bounding, c).map_err(cap)?;
        }
    } else if root {
        return Err(SandboxError::Capabilities(
            "running as root without CAP_SETPCAP: cannot lock securebits or empty the bounding set".into(),
        ));
    }
    leave_inherited_keyrings()?;
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(cap)?;
    }
    let checked: &[CapSet] = if root {
        &[CapSet::Bounding, CapSet::Effective, CapSet::Permitted]
    } else {
        &[CapSet::Effective, CapSet::Permitted]
    };
    for &set in checked {
        let left = caps::read(None, set).map_err(cap)?;
        if !left.is_empty() {
            return Err(SandboxError::Capabilities(format!("{set:?} still holds {left:?}")));
        }
    }
    set_dumpable_off()
}

/// Set and lock [`LOCKED_SECUREBITS`], then read them back.
fn lock_securebits() -> Result<(), SandboxError> {
    // SAFETY: prctl with integer arguments only.
    #[allow(unsafe_code)]
    let set = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, LOCKED_SECUREBITS as libc::c_ulong, 0, 0, 0) };
    if set != 0 {
        return Err(SandboxError::Capabilities(format!(
            "PR_SET_SECUREBITS {LOCKED_SECUREBITS:#x}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let now = securebits()?;
    if now & LOCKED_SECUREBITS != LOCKED_SECUREBITS || now & libc::SECBIT_KEEP_CAPS as u32 != 0 {
        return Err(SandboxError::Capabilities(format!(
            "securebits are {now:#x} after setting {LOCKED_SECUREBITS:#x}"
        )));
    }
    Ok(())
}

/// This process's securebits (PR_GET_SECUREBITS).
pub fn securebits() -> Result<u32, SandboxError> {
    // SAFETY: prctl with integer arguments only.
    #[allow(unsafe_code)]
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    u32::try_from(bits)
        .map_err(|_| SandboxError::Capabilities(format!("PR_GET_SECUREBITS: {}", std::io::Error::last_os_error())))
}

/// Join a new, empty, anonymous session keyring: the task no longer possesses the session keyring (and the keys in
/// it) that it inherited from whoever started the supervisor. (The seccomp filter then refuses every keyring call.)
fn leave_inherited_keyrings() -> Result<(), SandboxError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL): a null name makes a new anonymous keyring; no memory is passed.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<libc::c_char>()) };
    if r < 0 {
        return Err(SandboxError::Capabilities(format!(
            "keyctl(JOIN_SESSION_KEYRING): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Make this process non-dumpable: same-uid processes can no longer read its `/proc/<pid>/environ` or `mem`, or
/// attach to it, without CAP_SYS_PTRACE. (The supervisor and the broker do this too.)
pub fn set_dumpable_off() -> Result<(), SandboxError> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| SandboxError::Capabilities(format!("PR_SET_DUMPABLE: {e}")))
}
