//! Runtime limits (`security.runtime`): Bash calls and file writes (Write, Edit) counted per task over the last
//! minute, in the supervisor's memory. A call over a limit is not run: the task waits for the user with the reason.
//! The counts start afresh when the supervisor restarts, and when the user approves a call.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use neuraphage_ipc::TaskId;

use super::settings::Runtime;

const WINDOW: Duration = Duration::from_secs(60);

/// Which limit a tool counts against.
fn limit_of(tool: &str, runtime: &Runtime) -> Option<(&'static str, u32)> {
    match tool {
        "Bash" => runtime.max_bash_commands_per_minute.map(|n| ("max-bash-commands-per-minute", n)),
        "Write" | "Edit" => runtime.max_file_writes_per_minute.map(|n| ("max-file-writes-per-minute", n)),
        _ => None,
    }
}

#[derive(Default)]
struct Counts {
    by_limit: HashMap<&'static str, VecDeque<Instant>>,
}

static COUNTS: LazyLock<Mutex<HashMap<TaskId, Counts>>> = LazyLock::new(Default::default);

/// Count one call of `tool` by `task` if it is within its limit; otherwise say which limit it is over.
pub fn admit(task: &TaskId, tool: &str, runtime: &Runtime) -> Result<(), String> {
    admit_at(task, tool, runtime, Instant::now())
}

fn admit_at(task: &TaskId, tool: &str, runtime: &Runtime, now: Instant) -> Result<(), String> {
    let Some((key, max)) = limit_of(tool, runtime) else { return Ok(()) };
    let mut all = COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let window = all.entry(task.clone()).or_default().by_limit.entry(key).or_default();
    while window.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        window.pop_front();
    }
    if window.len() >= max as usize {
        return Err(format!(
            "runtime limit {key}: {max} (the task made {} such calls in the last minute)",
            window.len()
        ));
    }
    window.push_back(now);
    Ok(())
}

/// Start the task's counts afresh (the user approved a call).
pub fn reset(task: &TaskId) {
    COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(task);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_over_the_limit_in_a_minute_are_refused_and_the_window_slides() {
        let task = TaskId::from_bits(0xabc);
        let runtime = Runtime { max_bash_commands_per_minute: Some(2), max_file_writes_per_minute: Some(1) };
        let t0 = Instant::now();
        assert!(admit_at(&task, "Bash", &runtime, t0).is_ok());
        assert!(admit_at(&task, "Bash", &runtime, t0).is_ok());
        let err = admit_at(&task, "Bash", &runtime, t0 + Duration::from_secs(30)).unwrap_err();
        assert!(err.contains("max-bash-commands-per-minute: 2"), "{err}");
        assert!(admit_at(&task, "Read", &runtime, t0).is_ok(), "reads are not counted");
        assert!(admit_at(&task, "Write", &runtime, t0).is_ok());
        assert!(admit_at(&task, "Edit", &runtime, t0).unwrap_err().contains("max-file-writes-per-minute"));
        assert!(admit_at(&task, "Bash", &runtime, t0 + Duration::from_secs(61)).is_ok(), "the window slid");
        reset(&task);
        assert!(admit_at(&task, "Edit", &runtime, t0).is_ok());
        let unlimited = Runtime::default();
        for _ in 0..1000 {
            assert!(admit_at(&TaskId::from_bits(0xabd), "Bash", &unlimited, t0).is_ok());
        }
    }
}
