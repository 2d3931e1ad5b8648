//! `neuraphage-worker --check`: apply a sandbox plan to this process exactly as a task's worker does, then try, layer
//! by layer, what the sandbox should stop, and print what this machine enforces as JSON (for
//! `neuraphage sandbox check`). Every probe is a real attempt; a layer counts as enforced only if its probe fails.

use std::path::Path;

use neuraphage_sandbox_profiles::plan::SandboxPlan;
use serde_json::{Value, json};

/// Apply `plan` (whose workdir is `workdir`; `outside` is a folder the plan does not open) and probe it; `outer` is
/// where the worker stands with respect to the namespaces.
pub fn run(plan: &SandboxPlan, workdir: &Path, outside: &Path, outer: &crate::outer::Outer) -> Value {
    let started = std::time::Instant::now();
    let applied = match &outer.refused {
        Some(why) => Err(neuraphage_sandbox_profiles::SandboxError::NotFullyEnforced(why.clone())),
        None => plan.apply(),
    };
    let apply_us = started.elapsed().as_micros() as u64;
    let sandboxed_at_ns = monotonic_ns();
    let report = match applied {
        Ok(report) => report,
        Err(e) => {
            let abi = neuraphage_sandbox_profiles::kernel_landlock_abi();
            return json!({ "profile": plan.profile, "kernel_landlock_abi": abi, "refused": e.to_string(), "layers": [] });
        }
    };
    let layer =
        |name: &str, enforced: bool, detail: String| json!({ "layer": name, "enforced": enforced, "detail": detail });
    let errno = |r: std::io::Result<()>| match r {
        Ok(()) => "allowed".to_owned(),
        Err(e) => e.to_string(),
    };
    let mut layers = Vec::new();
    layers.push(crate::outer::probe(outer));

    let secret = outside.join("probe");
    let read_outside = std::fs::read(&secret).map(|_| ());
    let write_inside = std::fs::write(workdir.join(".sandbox-check"), b"x");
    layers.push(layer(
        "landlock filesystem",
        read_outside.is_err() && write_inside.is_ok(),
        format!("read outside the rules: {}; write in the worktree: {}", errno(read_outside), errno(write_inside)),
    ));

    let tcp = std::net::TcpStream::connect(("127.0.0.1", 9)).map(|_| ());
    let tcp_denied = matches!(&tcp, Err(e) if e.raw_os_error() == Some(nix::libc::EACCES) || e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT));
    layers.push(layer("network", tcp_denied, format!("TCP connect to 127.0.0.1:9: {}", errno(tcp))));

    let signal = nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), None).map_err(std::io::Error::from);
    layers.push(layer(
        "landlock scopes",
        signal.is_err(),
        format!("signal 0 to pid 1 (outside the task): {}", errno(signal)),
    ));

    let udp = std::net::UdpSocket::bind(("127.0.0.1", 0)).map(|_| ());
    #[allow(unsafe_code)]
    // SAFETY: unshare with a flag word only; it reads and writes no memory of ours.
    let userns = unsafe { nix::libc::unshare(nix::libc::CLONE_NEWUSER) };
    let userns = if userns == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    layers.push(layer(
        "seccomp",
        udp.is_err() && userns.is_err(),
        format!("UDP socket: {}; user namespace: {}", errno(udp), errno(userns)),
    ));

    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default();
    let caps_empty = ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"].iter().all(|f| field(f).chars().all(|c| c == '0'));
    layers.push(layer(
        "capabilities",
        caps_empty && field("NoNewPrivs:") == "1",
        format!(
            "effective {}, bounding {}, no_new_privs {}, seccomp mode {}",
            field("CapEff:"),
            field("CapBnd:"),
            field("NoNewPrivs:"),
            field("Seccomp:")
        ),
    ));

    let limits = [
        (nix::sys::resource::Resource::RLIMIT_NOFILE, "open files"),
        (nix::sys::resource::Resource::RLIMIT_FSIZE, "file size"),
        (nix::sys::resource::Resource::RLIMIT_DATA, "data"),
        (nix::sys::resource::Resource::RLIMIT_CPU, "cpu seconds"),
    ];
    let shown: Vec<String> = limits
        .iter()
        .map(|(r, name)| match nix::sys::resource::getrlimit(*r) {
            Ok((soft, _)) if soft == nix::libc::RLIM_INFINITY => format!("{name} unlimited"),
            Ok((soft, _)) => format!("{name} {soft}"),
            Err(e) => format!("{name} ? ({e})"),
        })
        .collect();
    let any_limit = plan.limits.open_files.is_some() || plan.limits.file_size_mb.is_some();
    layers.push(layer("rlimits", any_limit, shown.join(", ")));

    json!({
        "profile": plan.profile,
        "kernel_landlock_abi": report.kernel_abi,
        "apply_us": apply_us,
        "sandboxed_at_ns": sandboxed_at_ns,
        "refused": null,
        "reported": outer.enforced.iter().chain(&report.enforced).collect::<Vec<_>>(),
        "missing": outer.missing.iter().chain(&report.missing).collect::<Vec<_>>(),
        "layers": layers,
    })
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: one clock for every process of the machine (bubblewrap makes no time
/// namespace), so a bench can subtract the moment it spawned the worker.
fn monotonic_ns() -> u64 {
    let mut ts = nix::libc::timespec { tv_sec: 0, tv_nsec: 0 };
    #[allow(unsafe_code)]
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}
