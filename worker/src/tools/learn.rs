//! `Learn {title, body, tags?, files?, kind?}`: the model records a learning for later tasks (and for tasks running
//! now, through the Syncer). The agent loop sends it to the supervisor over the link (`WorkerToSupervisor::Learn`),
//! which answers once the learning's file is written; this module only describes and checks the call.

use neuraphage_ipc::knowledge::{
    MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_FILES, MAX_TAG_BYTES, MAX_TAGS, MAX_TITLE_BYTES, NewLearning,
};
use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ToolOutcome;

/// The tool's name.
pub const NAME: &str = "Learn";

#[derive(Debug, Deserialize)]
struct Input {
    title: String,
    body: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: NAME.into(),
        description: "Records something you learnt that later tasks on this code should know (a gotcha, the real \
            cause of a failure, a decision and why): a one-line title and a short body. Tasks running now on related \
            code are told too. Record facts about the code, not a diary of your steps."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "One line"},
                "body": {"type": "string", "description": "A few sentences: what is true, and why it matters"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "files": {"type": "array", "items": {"type": "string"}, "description": "Files it concerns, relative to the repository"},
                "kind": {"type": "string", "enum": ["learning", "decision"]}
            },
            "required": ["title", "body"]
        }),
    }
}

/// The learning of a call, or what is wrong with the call.
pub fn parse(input: &Value) -> Result<NewLearning, ToolOutcome> {
    let input: Input = super::parse(NAME, input)?;
    let err = |m: String| Err(ToolOutcome::error(format!("Learn: {m}")));
    let title = input.title.trim().to_owned();
    if title.is_empty() || title.len() > MAX_TITLE_BYTES || title.contains('\n') {
        return err(format!("the title is one line of 1 to {MAX_TITLE_BYTES} bytes"));
    }
    if input.body.trim().is_empty() || input.body.len() > MAX_BODY_BYTES {
        return err(format!("the body is 1 to {MAX_BODY_BYTES} bytes"));
    }
    if input.tags.len() > MAX_TAGS || input.tags.iter().any(|t| t.is_empty() || t.len() > MAX_TAG_BYTES) {
        return err(format!("at most {MAX_TAGS} tags of 1 to {MAX_TAG_BYTES} bytes"));
    }
    if input.files.len() > MAX_FILES || input.files.iter().any(|f| f.is_empty() || f.len() > MAX_FILE_BYTES) {
        return err(format!("at most {MAX_FILES} files of 1 to {MAX_FILE_BYTES} bytes"));
    }
    if let Some(kind) = &input.kind
        && kind != "learning"
        && kind != "decision"
    {
        return err("kind is learning or decision".into());
    }
    Ok(NewLearning {
        kind: input.kind,
        title,
        body: input.body,
        tags: input.tags,
        files: input.files,
        repository: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_checked() {
        assert_eq!(parse(&json!({"title": "t", "body": "b"})).unwrap().title, "t");
        assert!(parse(&json!({"title": "", "body": "b"})).is_err());
        assert!(parse(&json!({"title": "t", "body": "b", "kind": "rumour"})).is_err());
        assert!(parse(&json!({"title": "t", "body": "x".repeat(MAX_BODY_BYTES + 1)})).is_err());
    }
}
