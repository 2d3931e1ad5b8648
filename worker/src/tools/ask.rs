//! `AskUser {question, options?}`: the task asks the user and waits for the answer without holding a worker. The
//! agent loop carries it out: with no answer yet, it parks the task (a `TaskEnded NeedsUser` checkpoint whose reason
//! is [`prompt`]) and the worker exits; the supervisor stores the answer and starts a new worker, which gives the
//! call the answer as its result ([`result`]). This module describes and checks the call.

use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ToolOutcome;

/// The tool's name.
pub const NAME: &str = neuraphage_ipc::waiting::ASK_USER_TOOL;

/// Longest question accepted, in bytes.
pub const MAX_QUESTION: usize = 4 * 1024;

/// Most options offered.
pub const MAX_OPTIONS: usize = 16;

/// Longest option, in bytes.
pub const MAX_OPTION: usize = 256;

#[derive(Debug, Deserialize)]
struct Input {
    question: String,
    #[serde(default)]
    options: Option<Vec<String>>,
}

/// A checked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// What is asked.
    pub question: String,
    /// The choices offered (may be empty).
    pub options: Vec<String>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: NAME.into(),
        description: "Asks the user a question and waits for the answer, which comes back as this tool's result. \
            Use it when you cannot go on without a decision or information only the user has; the user may take \
            a long time to answer. Offer `options` when the answer is a choice."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "question": {"type": "string", "description": "The question, complete enough to answer without other context"},
                "options": {"type": "array", "items": {"type": "string"}, "description": "Choices to offer, if the answer is one of them"}
            },
            "required": ["question"]
        }),
    }
}

/// The question of a call, or what is wrong with the call.
pub fn parse(input: &Value) -> Result<Question, ToolOutcome> {
    let input: Input = super::parse(NAME, input)?;
    let question = input.question.trim().to_owned();
    if question.is_empty() {
        return Err(ToolOutcome::error("AskUser: the question is empty"));
    }
    if question.len() > MAX_QUESTION {
        return Err(ToolOutcome::error(format!(
            "AskUser: the question is {} bytes; at most {MAX_QUESTION}",
            question.len()
        )));
    }
    let options: Vec<String> = input.options.unwrap_or_default().into_iter().map(|o| o.trim().to_owned()).collect();
    if options.len() > MAX_OPTIONS {
        return Err(ToolOutcome::error(format!("AskUser: {} options; at most {MAX_OPTIONS}", options.len())));
    }
    if let Some(o) = options.iter().find(|o| o.is_empty() || o.len() > MAX_OPTION) {
        return Err(ToolOutcome::error(format!(
            "AskUser: every option must be 1 to {MAX_OPTION} bytes (one is {})",
            o.len()
        )));
    }
    if question.contains('\0') || options.iter().any(|o| o.contains('\0')) {
        return Err(ToolOutcome::error("AskUser: the question or an option contains a NUL character"));
    }
    Ok(Question { question, options })
}

/// What the user sees while the task waits (the `WaitingForUser` prompt): the question, then the options numbered.
pub fn prompt(q: &Question) -> String {
    let mut prompt = q.question.clone();
    if !q.options.is_empty() {
        prompt.push_str("\nOptions:");
        for (i, o) in q.options.iter().enumerate() {
            prompt.push_str(&format!("\n  {}. {o}", i + 1));
        }
    }
    prompt
}

/// The call's result from the user's answer. An answer that is an option's number (`2`) or, ignoring case, its text
/// names that option; the model is told which, with the user's words.
pub fn result(q: &Question, answer: &str) -> ToolOutcome {
    let typed = answer.trim();
    let chosen = typed
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=q.options.len()).contains(n))
        .or_else(|| q.options.iter().position(|o| o.eq_ignore_ascii_case(typed)).map(|i| i + 1));
    match chosen {
        Some(n) => ToolOutcome::ok(format!("The user chose option {n}: {}", q.options[n - 1])),
        None => ToolOutcome::ok(format!("The user answered: {answer}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_checked() {
        assert!(parse(&json!({"question": "  "})).unwrap_err().content.contains("empty"));
        assert!(parse(&json!({"options": ["a"]})).unwrap_err().content.contains("question"));
        let long = "x".repeat(MAX_QUESTION + 1);
        assert!(parse(&json!({"question": long})).unwrap_err().content.contains("bytes"));
        let many: Vec<String> = (0..=MAX_OPTIONS).map(|i| i.to_string()).collect();
        assert!(parse(&json!({"question": "q", "options": many})).unwrap_err().content.contains("options"));
        assert!(parse(&json!({"question": "q", "options": [""]})).unwrap_err().content.contains("option"));
        let q = parse(&json!({"question": "Which?", "options": ["red", "blue"]})).unwrap();
        assert_eq!(prompt(&q), "Which?\nOptions:\n  1. red\n  2. blue");
    }

    #[test]
    fn answers_name_options_by_number_or_text() {
        let q = Question { question: "Which?".into(), options: vec!["red".into(), "blue".into()] };
        assert_eq!(result(&q, " 2 ").content, "The user chose option 2: blue");
        assert_eq!(result(&q, "RED").content, "The user chose option 1: red");
        assert_eq!(result(&q, "3").content, "The user answered: 3");
        assert_eq!(result(&q, "green please").content, "The user answered: green please");
    }
}
