//! Personas (issue 16), across real processes against the LLM double: the selection rules pick a persona and record
//! why; its prompt reaches the system prompt, its tier the request's model, and only its tools are offered;
//! `--persona` and `--tier` win; an unknown persona is refused with the known ones; `personas.yaml` adds one, and a
//! bad file is refused on reload with its line while the set in force stays.

use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};

const WITHIN: Duration = Duration::from_secs(120);

const TIERS: &str = "model-tiers:\n  worker: { provider: anthropic, model: m-worker, pool: anthropic }\n  \
                     expert: { provider: anthropic, model: m-expert, pool: anthropic }\n";

fn done() -> Model {
    Model::start(policy(|_| Step::Reply(Reply::text("done").stop(StopReason::EndTurn))))
}

fn event<'a>(shown: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    let events = shown["events"].as_array().unwrap();
    events.iter().find(|e| e["kind"] == kind).unwrap_or_else(|| panic!("no {kind} event: {shown:#}"))
}

fn tool_names(r: &neuraphage_llm_double::RecordedRequest) -> Vec<String> {
    r.body["tools"]
        .as_array()
        .map(|t| t.iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn the_rules_pick_a_persona_whose_prompt_tier_and_tools_reach_the_model() {
    let model = done();
    let mut home = TestHome::new();
    home.write_config(TIERS);
    home.start_with_model(&model);
    let id =
        home.json(&["task", "new", "Review the parser for overflows", "--json"])["id"].as_str().unwrap().to_owned();
    let shown = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(shown["persona"], "reviewer", "{shown:#}");
    assert_eq!(shown["tier"], "expert", "the persona's tier: {shown:#}");
    let selected = event(&shown, "persona_selected");
    assert_eq!(selected["data"]["persona"], "reviewer");
    assert_eq!(selected["data"]["reason"], "keyword 'review' in the description");
    let request = model.double.requests().into_iter().next().unwrap();
    assert_eq!(request.model(), Some("m-expert"));
    let system = request.system_text();
    assert!(system.contains("specializing in code review and security"), "{system}");
    assert!(system.contains("# Your persona"), "{system}");
    let tools = tool_names(&request);
    assert!(tools.contains(&"Read".to_owned()) && !tools.contains(&"Write".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"Edit".to_owned()) && !tools.contains(&"Commit".to_owned()), "{tools:?}");

    // Without a keyword: the default, `mid`, on the worker tier, every tool.
    let id = home.json(&["task", "new", "add a button", "--json"])["id"].as_str().unwrap().to_owned();
    let shown = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(event(&shown, "persona_selected")["data"]["reason"], "default");
    let request = model.double.requests().into_iter().last().unwrap();
    assert_eq!(request.model(), Some("m-worker"));
    assert!(request.system_text().contains("mid-level software engineer"));
    assert!(tool_names(&request).contains(&"Write".to_owned()));
}

#[test]
fn persona_and_tier_flags_win_and_an_unknown_persona_is_refused() {
    let model = done();
    let mut home = TestHome::new();
    home.write_config(TIERS);
    home.start_with_model(&model);
    let args = ["task", "new", "review it", "--persona", "senior", "--tier", "worker", "--json"];
    let id = home.json(&args)["id"].as_str().unwrap().to_owned();
    let shown = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!((shown["persona"].as_str(), shown["tier"].as_str()), (Some("senior"), Some("worker")));
    assert_eq!(event(&shown, "persona_selected")["data"]["reason"], "--persona");
    let request = model.double.requests().into_iter().last().unwrap();
    assert_eq!(request.model(), Some("m-worker"), "--tier wins over the persona's tier");
    assert!(request.system_text().contains("senior software engineer"));

    let (_, err) = home.fails(&["task", "new", "x", "--persona", "wizard"]);
    assert!(err.contains("no persona \"wizard\"") && err.contains("architect, junior, mid, reviewer, senior"), "{err}");
    let (_, err) = home.fails(&["task", "new", "x", "--persona", "watcher"]);
    assert!(err.contains("internal"), "{err}");
}

#[test]
fn personas_yaml_adds_one_and_a_bad_file_keeps_the_set_in_force() {
    let model = done();
    let mut home = TestHome::new();
    home.write_config(TIERS);
    let file = home.root().join("home").join("personas.yaml");
    let good = "personas:\n  gremlin:\n    name: Gremlin\n    description: breaks things\n    model-tier: worker\n    \
                system-prompt: You are GREMLIN-PROMPT.\n    allowed-tools: [Read, Bash]\nselection:\n  - keywords: [chaos]\n    persona: gremlin\n";
    std::fs::write(&file, good).unwrap();
    home.start_with_model(&model);
    let listed = home.json(&["personas", "--json"]);
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"gremlin") && keys.contains(&"senior") && keys.contains(&"watcher"), "{keys:?}");
    assert!(home.ok(&["personas"]).contains("breaks things"));

    let id = home.json(&["task", "new", "some chaos testing", "--json"])["id"].as_str().unwrap().to_owned();
    let shown = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(event(&shown, "persona_selected")["data"]["reason"], "keyword 'chaos' in the description");
    let request = model.double.requests().into_iter().last().unwrap();
    assert!(request.system_text().contains("GREMLIN-PROMPT"));
    assert_eq!(tool_names(&request), ["Read", "Bash"]);

    std::fs::write(&file, "personas:\n  gremlin:\n    model-tier: wizard\n").unwrap();
    let (_, err) = home.fails(&["config", "reload"]);
    assert!(err.contains("personas.yaml") && err.contains("line 3") && err.contains("wizard"), "{err}");
    let listed = home.json(&["personas", "--json"]);
    assert!(listed.as_array().unwrap().iter().any(|p| p["key"] == "gremlin" && p["tier"] == "worker"), "{listed:#}");
}
