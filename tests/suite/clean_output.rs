//! Everything printed is clean (issue 11 class 7), across processes: a scripted model names a tool and itself with
//! terminal escapes and a bidi override, and writes escapes in its text; `task show`, `task log` and `cost` print
//! them as visible escapes, never raw, and `--json` keeps the values (as JSON escapes). The control is the model's
//! own record of what it sent: the raw characters did leave the model and reach the store.

use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);
const TOOL: &str = "Bash\u{1b}]0;pwned\u{7}";
const MODEL: &str = "m\u{1b}[2J\u{9b}31m\u{202e}x";

/// Whether a terminal would act on a character of `text`.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| {
            (c.is_control() && *c != '\n' && *c != '\t')
                || ('\u{200b}'..='\u{200f}').contains(c)
                || ('\u{202a}'..='\u{202e}').contains(c)
        })
        .collect()
}

#[test]
fn tool_and_model_names_with_escapes_are_printed_escaped_by_task_show_log_and_cost() {
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool(TOOL, json!({ "command": "true" })).model(MODEL)),
        _ => Step::Reply(Reply::text("done \u{1b}[31mred\u{85}").model(MODEL).stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "hostile names", "--json"])["id"].as_str().unwrap().to_owned();
    home.wait_ended(&[&id], WITHIN);

    // The control: the raw names are in what the task recorded (read as JSON values).
    let log = home.json(&["task", "log", &id, "--json"]);
    let names: Vec<String> = log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec![TOOL.to_owned()]);
    let by_model = home.json(&["cost", "--by", "model", "--json"]);
    assert_eq!(by_model["lines"][0]["key"], MODEL, "{by_model:#}");
    // The JSON texts themselves carry no raw control either.
    for args in
        [&["task", "log", &id, "--json"][..], &["cost", "--by", "model", "--json"], &["task", "show", &id, "--json"]]
    {
        let text = home.ok(args);
        assert_eq!(raw_controls(&text), Vec::<char>::new(), "{args:?}: {text}");
    }

    // The text outputs: escaped.
    let shown_tool = "Bash\\u{1b}]0;pwned\\u{7}";
    let shown_model = "m\\u{1b}[2J\\u{9b}31m\\u{202e}x";
    let log = home.ok(&["task", "log", &id]);
    assert_eq!(raw_controls(&log), Vec::<char>::new(), "{log}");
    assert!(log.contains(&format!("→ {shown_tool} ")), "{log}");
    assert!(log.contains("done \\u{1b}[31mred\\u{85}"), "{log}");
    let cost = home.ok(&["cost", "--by", "model"]);
    assert_eq!(raw_controls(&cost), Vec::<char>::new(), "{cost}");
    assert!(cost.contains(shown_model), "{cost}");
    let show = home.ok(&["task", "show", &id]);
    assert_eq!(raw_controls(&show), Vec::<char>::new(), "{show}");
    let list = home.ok(&["task", "list"]);
    assert_eq!(raw_controls(&list), Vec::<char>::new(), "{list}");
}
