//! The Watcher's first stage: cheap rules over a task's snapshot, pure functions (OpenHands' stuck detector and Gas
//! Town's time limit): the same action and result 4×, the same failing action 3×, the model talking to itself 3×
//! (turns with text and no tool call), an A/B alternation over 6 steps, and no progress for N minutes. Only a
//! flagged task costs a model call.

use std::time::Duration;

/// One step of a task, as the snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A tool call and its outcome (`None`: still running).
    Tool {
        /// The tool.
        tool: String,
        /// Its input (as stored: JSON text, cut).
        input: String,
        /// Its outcome: failed?, and the start of its result.
        outcome: Option<(bool, String)>,
    },
    /// A model turn with text and no tool call.
    Talk,
}

impl Step {
    fn action(&self) -> Option<(&str, &str)> {
        match self {
            Step::Tool { tool, input, .. } => Some((tool, input)),
            Step::Talk => None,
        }
    }
}

/// What the rules see of a task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// The last steps (at most [`super::snapshot::MAX_STEPS`]), oldest first.
    pub steps: Vec<Step>,
    /// Time since the last file change or new result (or the session's start).
    pub since_progress: Duration,
}

/// Why a task was flagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name.
    pub rule: &'static str,
    /// What it saw, in words.
    pub detail: String,
}

/// The rules' names, in the order they are tried.
pub const RULES: [&str; 5] = ["same_failing_action", "same_action_result", "monologue", "alternation", "no_progress"];

/// The first rule that flags `facts` (`no_progress`: 0 = off).
pub fn check(facts: &Facts, no_progress: Duration) -> Option<Finding> {
    let steps = &facts.steps;
    let last = |n: usize| (steps.len() >= n).then(|| &steps[steps.len() - n..]);
    let tool_name = |s: &Step| match s {
        Step::Tool { tool, .. } => tool.chars().take(64).collect::<String>(),
        Step::Talk => "text".into(),
    };
    if let Some(tail) = last(3) {
        let failing = |s: &Step| matches!(s, Step::Tool { outcome: Some((true, _)), .. });
        if tail.iter().all(failing) && tail.iter().all(|s| s.action() == tail[0].action()) {
            return Some(Finding {
                rule: "same_failing_action",
                detail: format!("the same failing {} call 3 times in a row", tool_name(&tail[0])),
            });
        }
    }
    if let Some(tail) = last(4) {
        let done = |s: &Step| matches!(s, Step::Tool { outcome: Some(_), .. });
        if tail.iter().all(done) && tail.iter().all(|s| s == &tail[0]) {
            return Some(Finding {
                rule: "same_action_result",
                detail: format!("the same {} call with the same result 4 times in a row", tool_name(&tail[0])),
            });
        }
    }
    if let Some(tail) = last(3)
        && tail.iter().all(|s| *s == Step::Talk)
    {
        return Some(Finding { rule: "monologue", detail: "3 model turns in a row with text and no tool call".into() });
    }
    if let Some(tail) = last(6) {
        let (a, b) = (tail[0].action(), tail[1].action());
        let alternates = a.is_some() && b.is_some() && a != b;
        if alternates && tail.iter().enumerate().all(|(n, s)| s.action() == if n % 2 == 0 { a } else { b }) {
            return Some(Finding {
                rule: "alternation",
                detail: format!(
                    "alternating between two calls ({} and {}) for 6 steps",
                    tool_name(&tail[0]),
                    tool_name(&tail[1])
                ),
            });
        }
    }
    if !no_progress.is_zero() && facts.since_progress >= no_progress {
        return Some(Finding {
            rule: "no_progress",
            detail: format!("no file changed and no new result for {} minutes", facts.since_progress.as_secs() / 60),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tool: &str, input: &str, err: bool, result: &str) -> Step {
        Step::Tool { tool: tool.into(), input: input.into(), outcome: Some((err, result.into())) }
    }

    fn facts(steps: Vec<Step>) -> Facts {
        Facts { steps, since_progress: Duration::from_secs(5) }
    }

    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn each_rule_flags_its_pattern() {
        let fail = t("Bash", "make", true, "error");
        let ok = t("Read", "a", false, "x");
        let b = t("Grep", "b", false, "y");
        let cases: Vec<(&str, Vec<Step>, Option<&str>)> = vec![
            (
                "3 same failures",
                vec![ok.clone(), fail.clone(), fail.clone(), fail.clone()],
                Some("same_failing_action"),
            ),
            ("2 same failures", vec![ok.clone(), fail.clone(), fail.clone()], None),
            ("failures of different calls", vec![fail.clone(), t("Bash", "make x", true, "e"), fail.clone()], None),
            ("4 same ok", vec![ok.clone(), ok.clone(), ok.clone(), ok.clone()], Some("same_action_result")),
            ("3 same ok", vec![b.clone(), ok.clone(), ok.clone(), ok.clone()], None),
            ("same call, new results", vec![ok.clone(), ok.clone(), ok.clone(), t("Read", "a", false, "z")], None),
            ("talk 3", vec![ok.clone(), Step::Talk, Step::Talk, Step::Talk], Some("monologue")),
            ("talk 2", vec![Step::Talk, ok.clone(), Step::Talk, Step::Talk], None),
            ("A/B 6", vec![ok.clone(), b.clone(), ok.clone(), b.clone(), ok.clone(), b.clone()], Some("alternation")),
            ("A/B 5", vec![b.clone(), ok.clone(), b.clone(), ok.clone(), b.clone()], None),
            ("A/B/C", vec![ok.clone(), b.clone(), ok.clone(), b.clone(), fail.clone(), b.clone()], None),
            ("empty", vec![], None),
        ];
        for (name, steps, rule) in cases {
            assert_eq!(check(&facts(steps), TEN_MIN).map(|f| f.rule), rule, "{name}");
        }
    }

    #[test]
    fn no_progress_is_a_time_limit() {
        let mut f = facts(vec![]);
        f.since_progress = Duration::from_secs(601);
        assert_eq!(check(&f, TEN_MIN).unwrap().rule, "no_progress");
        assert_eq!(check(&f, Duration::ZERO), None, "0: off");
        f.since_progress = Duration::from_secs(599);
        assert_eq!(check(&f, TEN_MIN), None);
    }

    #[test]
    fn a_healthy_varied_task_is_never_flagged() {
        // 100 turns of a task that reads, edits, builds and tests, with the occasional failure it then fixes.
        let mut steps = Vec::new();
        for n in 0..100 {
            let step = match n % 5 {
                0 => t("Read", &format!("src/f{n}.rs"), false, "code"),
                1 => t("Edit", &format!("src/f{n}.rs"), false, "edited"),
                2 => t("Bash", "cargo build", n % 15 == 2, &format!("build {n}")),
                3 => t("Grep", &format!("fn f{n}"), false, "hits"),
                _ => t("Bash", "cargo test", false, &format!("{n} passed")),
            };
            steps.push(step);
            let window = &steps[steps.len().saturating_sub(20)..];
            let f = Facts { steps: window.to_vec(), since_progress: Duration::from_secs(30) };
            assert_eq!(check(&f, TEN_MIN), None, "turn {n}");
        }
    }
}
