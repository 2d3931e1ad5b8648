//! The Watcher's second stage, for flagged tasks only: the `watcher` persona on the router tier, through
//! [`Daemon::side_call`] (priced as the task's), answers one JSON object — status, confidence, diagnosis,
//! recommendation, nudge message. Its answer is as hostile as any model output: read strictly and bounded; anything
//! else is no verdict.
//!
//! [`Daemon::side_call`]: crate::requests::Daemon::side_call

use std::time::Duration;

use neuraphage_ipc::llm::{ChatRequest, Message};
use serde::Deserialize;

/// Longest answer read.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Longest diagnosis or nudge kept.
pub const MAX_TEXT_BYTES: usize = 2048;

/// What the Watcher does about a flagged task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommendation {
    /// Nothing.
    Continue,
    /// Advice in its next turn.
    Nudge,
    /// Up one tier.
    Escalate,
    /// Wait for the user.
    Pause,
    /// Fail it.
    Abort,
}

impl Recommendation {
    /// As written in events and the log.
    pub fn name(self) -> &'static str {
        match self {
            Recommendation::Continue => "continue",
            Recommendation::Nudge => "nudge",
            Recommendation::Escalate => "escalate",
            Recommendation::Pause => "pause",
            Recommendation::Abort => "abort",
        }
    }
}

/// The judge's answer, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `healthy`, `struggling`, `stuck`, `runaway`.
    pub status: String,
    /// 0.0 to 1.0.
    pub confidence: f64,
    /// Why.
    pub diagnosis: String,
    /// What to do.
    pub recommendation: Recommendation,
    /// For a nudge: the advice.
    pub nudge_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    status: String,
    confidence: f64,
    diagnosis: String,
    recommendation: String,
    #[serde(default, alias = "nudge-message")]
    nudge_message: Option<String>,
}

fn cut(text: &str, max: usize) -> String {
    let mut at = text.len().min(max);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].trim().to_owned()
}

/// Read the judge's answer: one JSON object, alone or fenced by text; `Err` says why it is no verdict.
pub fn parse(answer: &str) -> Result<Verdict, String> {
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(format!("the answer is {} bytes; at most {MAX_ANSWER_BYTES}", answer.len()));
    }
    let (Some(open), Some(close)) = (answer.find('{'), answer.rfind('}')) else {
        return Err("the answer holds no JSON object".into());
    };
    if close < open {
        return Err("the answer holds no JSON object".into());
    }
    let raw: Raw = serde_json::from_str(&answer[open..=close]).map_err(|e| format!("the answer's JSON: {e}"))?;
    if !["healthy", "struggling", "stuck", "runaway"].contains(&raw.status.as_str()) {
        return Err(format!("status {:?} is not healthy, struggling, stuck or runaway", cut(&raw.status, 40)));
    }
    if !raw.confidence.is_finite() || !(0.0..=1.0).contains(&raw.confidence) {
        return Err("confidence is not between 0 and 1".into());
    }
    let recommendation = match raw.recommendation.as_str() {
        "continue" => Recommendation::Continue,
        "nudge" => Recommendation::Nudge,
        "escalate" => Recommendation::Escalate,
        "pause" => Recommendation::Pause,
        "abort" => Recommendation::Abort,
        other => return Err(format!("recommendation {:?} is not one of the five", cut(other, 40))),
    };
    let diagnosis = cut(&raw.diagnosis.replace('\0', ""), MAX_TEXT_BYTES);
    if diagnosis.is_empty() {
        return Err("the diagnosis is empty".into());
    }
    let nudge_message = raw.nudge_message.map(|m| cut(&m.replace('\0', ""), MAX_TEXT_BYTES)).filter(|m| !m.is_empty());
    if recommendation == Recommendation::Nudge && nudge_message.is_none() {
        return Err("a nudge without a nudge_message".into());
    }
    Ok(Verdict { status: raw.status, confidence: raw.confidence, diagnosis, recommendation, nudge_message })
}

/// The request to the judge: the watcher persona's prompt, the snapshot as the one user turn, no tools, the router
/// tier.
pub fn request(system: String, snapshot_text: String) -> ChatRequest {
    ChatRequest {
        model: None,
        system,
        messages: vec![Message::user_text(snapshot_text)],
        tools: Vec::new(),
        max_tokens: 1024,
        tier: Some("router".to_owned()),
    }
}

/// How long a judgment may take before the task counts as unjudged.
pub const JUDGE_WITHIN: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_bounded() {
        let ok = r#"Here: {"status":"stuck","confidence":0.9,"diagnosis":"loops","recommendation":"nudge","nudge_message":"try X"}"#;
        let v = parse(ok).unwrap();
        assert_eq!((v.recommendation, v.nudge_message.as_deref()), (Recommendation::Nudge, Some("try X")));
        let alias = r#"{"status":"stuck","confidence":1,"diagnosis":"d","recommendation":"pause","nudge-message":""}"#;
        assert_eq!(parse(alias).unwrap().recommendation, Recommendation::Pause);
        let bad = [
            "no json at all",
            "} {",
            r#"{"status":"stuck"}"#,
            r#"{"status":"bored","confidence":0.5,"diagnosis":"d","recommendation":"pause"}"#,
            r#"{"status":"stuck","confidence":7,"diagnosis":"d","recommendation":"pause"}"#,
            r#"{"status":"stuck","confidence":0.5,"diagnosis":"d","recommendation":"rm -rf"}"#,
            r#"{"status":"stuck","confidence":0.5,"diagnosis":"d","recommendation":"nudge"}"#,
            r#"{"status":"stuck","confidence":0.5,"diagnosis":" ","recommendation":"abort"}"#,
            r#"{"status":"stuck","confidence":0.5,"diagnosis":"d","recommendation":"abort","extra":1}"#,
        ];
        for b in bad {
            assert!(parse(b).is_err(), "{b}");
        }
        assert!(parse(&format!("{{{}}}", " ".repeat(MAX_ANSWER_BYTES))).unwrap_err().contains("at most"));
        let long = format!(
            r#"{{"status":"stuck","confidence":0.5,"diagnosis":"{}","recommendation":"abort"}}"#,
            "é".repeat(5000)
        );
        assert!(parse(&long).unwrap().diagnosis.len() <= MAX_TEXT_BYTES);
    }
}
