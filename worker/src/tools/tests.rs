//! Dispatch, definitions and argument parsing, for every tool.

use serde_json::json;

use super::testing::context;
use super::{TOOL_NAMES, definitions, is_idempotent, offered, persona_refusal, run};

#[test]
fn definitions_cover_every_tool_with_object_schemas() {
    let defs = definitions();
    let names: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, TOOL_NAMES);
    for def in &defs {
        assert!(!def.description.is_empty(), "{}", def.name);
        assert_eq!(def.input_schema["type"], "object", "{}", def.name);
        let required = def.input_schema["required"].as_array().unwrap();
        for field in required {
            let field = field.as_str().unwrap();
            assert!(def.input_schema["properties"].get(field).is_some(), "{}: {field}", def.name);
        }
    }
}

#[test]
fn only_the_readers_are_idempotent() {
    for name in ["Read", "Glob", "Grep"] {
        assert!(is_idempotent(name), "{name}");
    }
    for name in ["Write", "Edit", "Bash", "Nope"] {
        assert!(!is_idempotent(name), "{name}");
    }
}

#[tokio::test]
async fn unknown_tool_is_an_error_naming_the_tools() {
    let (_dir, ctx) = context();
    let out = run(&ctx, "Delete", &json!({})).await;
    assert!(out.is_error);
    assert!(out.content.contains("no tool named `Delete`") && out.content.contains("Read, Write, Edit"), "{out:?}");
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_named() {
    let (_dir, ctx) = context();
    // (Unlock has no required field: without one it releases everything.)
    for tool in TOOL_NAMES.into_iter().filter(|t| *t != "Unlock") {
        let out = run(&ctx, tool, &json!({})).await;
        assert!(out.is_error && out.content.contains("missing field"), "{tool}: {out:?}");
        assert!(out.content.starts_with(tool), "{tool}: {out:?}");
    }
    let out = run(&ctx, "Read", &json!({"file_path": 5})).await;
    assert!(out.is_error && out.content.contains("invalid field `file_path`"), "{out:?}");
    let out = run(&ctx, "Read", &json!({"file_path": "a", "offset": "ten"})).await;
    assert!(out.is_error && out.content.contains("`offset`") && out.content.contains("\"ten\""), "{out:?}");
    let out = run(&ctx, "Read", &json!({"file_path": "a", "limit": -3})).await;
    assert!(out.is_error && out.content.contains("`limit`"), "{out:?}");
    let out = run(&ctx, "Bash", &json!({"command": ["ls"]})).await;
    assert!(out.is_error && out.content.contains("`command`"), "{out:?}");
}

#[tokio::test]
async fn input_that_is_not_an_object_is_an_error() {
    let (_dir, ctx) = context();
    for (input, kind) in [(json!(null), "null"), (json!([1]), "an array"), (json!("garbage {"), "a string")] {
        let out = run(&ctx, "Glob", &input).await;
        assert!(out.is_error && out.content.contains(&format!("must be a JSON object, got {kind}")), "{out:?}");
    }
}

#[tokio::test]
async fn extra_fields_are_ignored_and_string_encoded_objects_accepted() {
    let (_dir, ctx) = context();
    std::fs::write(ctx.workdir.join("a.txt"), "x\n").unwrap();
    let out = run(&ctx, "Read", &json!({"file_path": "a.txt", "description": "why", "pages": null})).await;
    assert!(!out.is_error, "{out:?}");
    let out = run(&ctx, "Read", &json!(r#"{"file_path": "a.txt", "offset": 1.0}"#)).await;
    assert_eq!(out.content, "     1\tx\n");
}

#[test]
fn a_personas_allowed_tools_are_the_only_ones_offered_and_run() {
    let allowed = vec!["Read".to_owned(), "Bash".to_owned()];
    let names: Vec<String> = offered(Some(&allowed)).into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["Read", "Bash"]);
    assert_eq!(offered(None).len(), TOOL_NAMES.len());
    assert_eq!(persona_refusal(Some(&allowed), "Read"), None);
    assert_eq!(persona_refusal(None, "Write"), None);
    let refusal = persona_refusal(Some(&allowed), "Write\u{1b}[2J").unwrap();
    assert!(refusal.contains("does not allow") && refusal.contains("Read, Bash") && !refusal.contains('\u{1b}'));
}
