//! Test-only crash points: a debug build whose `NEURAPHAGE_TEST_CRASH_AT` names a point dies there by SIGKILL, as a
//! `kill -9` at that exact step would kill it (no destructor, no flush), so a cross-process test can prove the step
//! before it is durable and the one after it is repaired at the next start. A release build never reads it.

/// The variable naming the point (one name; see the calls of [`at`]).
pub const ENV_TEST_CRASH_AT: &str = "NEURAPHAGE_TEST_CRASH_AT";

/// Die here by SIGKILL if the test asked for this point.
pub fn at(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var(ENV_TEST_CRASH_AT).is_ok_and(|p| p == point) {
        tracing::warn!(point, "test crash point reached: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
