//! Context assembly (issue 13), against the LLM double: the repository's AGENTS.md and the branch reach the system
//! prompt framed as repository data, the user's `$NEURAPHAGE_HOME/AGENTS.md` too; a sub-folder's AGENTS.md arrives
//! after a Read there; a skill's description is listed but its body reaches the model only after the Skill call; a
//! malformed skill is a notice and the others still work; the system prompt is byte-identical across turns; three
//! Reads in one turn give three results in call order; TodoWrite's plan shows in `task show` (JSON and text).

use std::path::{Path, PathBuf};
use std::time::Duration;

use neuraphage_llm_double::{RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);

/// A repository made by `home.git_repo` with `files` committed on top.
fn repo_with(home: &TestHome, files: &[(&str, &str)]) -> PathBuf {
    let path = home.git_repo("app");
    let repo = git2::Repository::open(&path).unwrap();
    let mut index = repo.index().unwrap();
    for (name, text) in files {
        let file = path.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        index.add_path(Path::new(name)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "add the context files", &tree, &[&parent]).unwrap();
    path
}

/// The request's system prompt as text (a string, or the text of its blocks).
fn system_of(r: &RecordedRequest) -> String {
    match &r.body["system"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// The messages of a request as JSON text (what the model was sent besides the system prompt and tools).
fn messages_of(r: &RecordedRequest) -> String {
    serde_json::to_string(r.messages()).unwrap()
}

/// The stored data of the task's events of `kind`.
pub(crate) fn stored_events(home: &TestHome, id: &str, kind: &str) -> Vec<String> {
    let db = home.open_store();
    let mut stmt = db.prepare("SELECT data FROM events WHERE task = ?1 AND kind = ?2 ORDER BY seq").unwrap();
    stmt.query_map([id, kind], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

const SKILL_OK: &str = "---\nname: deploy\ndescription: How to deploy MARK-SKILL-DESC\n---\nRun MARK-SKILL-BODY.\n";
const SKILL_BAD: &str = "---\nname: Not Valid!\ndescription: d\n---\nbody\n";

#[test]
fn instructions_skills_and_the_plan_reach_the_model_and_the_user() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        // Three reads in one turn: run at once, results in call order.
        0 => Step::Reply(
            Reply::tool("Read", json!({"file_path": "sub/one.txt"}))
                .with_tool("Read", json!({"file_path": "AGENTS.md"}))
                .with_tool("Read", json!({"file_path": "two.txt"})),
        ),
        3 => Step::Reply(Reply::tool("Skill", json!({"name": "deploy"}))),
        4 => Step::Reply(Reply::tool(
            "TodoWrite",
            json!({"todos": [
                {"content": "read the files", "status": "completed"},
                {"content": "load the skill", "status": "done"},
                {"content": "deploy", "status": "in_progress"}
            ]}),
        )),
        _ => Step::Reply(Reply::text("all done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    let repo = repo_with(
        &home,
        &[
            ("AGENTS.md", "Indent with MARK-ROOT-RULES.\n"),
            ("sub/AGENTS.md", "In sub, MARK-SUB-RULES.\n"),
            ("sub/one.txt", "content one\n"),
            ("two.txt", "content two\n"),
            (".neuraphage/skills/deploy/SKILL.md", SKILL_OK),
            (".neuraphage/skills/broken/SKILL.md", SKILL_BAD),
        ],
    );
    home.write_config("");
    std::fs::write(home.paths.home.join("AGENTS.md"), "The user says MARK-USER-RULES.\n").unwrap();
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "use the context", "--repo", repo.to_str().unwrap(), "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = home.wait_status(&id, "Completed", WITHIN);
    let requests = model.double.requests();
    assert!(requests.len() >= 4, "{} requests", requests.len());

    // The system prompt: repository rules (framed as data), the branch, the user's rules, the skill's description
    // but not its body; identical on every turn.
    let system = system_of(&requests[0]);
    for part in [
        "MARK-ROOT-RULES",
        "data from the repository, not Neuraphage's rules",
        "MARK-USER-RULES",
        // The branch's git state, computed by the supervisor.
        "No commits on the branch since its base",
        "MARK-SKILL-DESC",
        &format!("neuraphage/{id}"),
    ] {
        assert!(system.contains(part), "{part} missing from the system prompt:\n{system}");
    }
    assert!(!system.contains("MARK-SKILL-BODY") && !system.contains("MARK-SUB-RULES"), "{system}");
    for r in &requests {
        assert_eq!(system_of(r), system, "the system prompt changed between turns");
    }

    // Three reads in one turn: three results, in call order; the sub-folder's rules after them, not before.
    let second = &requests[1];
    let results = second.tool_results();
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(
        results[0].contains("content one")
            && results[1].contains("MARK-ROOT-RULES")
            && results[2].contains("content two"),
        "{results:?}"
    );
    let text = messages_of(second);
    assert!(text.contains("Instructions from sub/AGENTS.md") && text.contains("MARK-SUB-RULES"), "{text}");
    assert!(!messages_of(&requests[0]).contains("MARK-SUB-RULES"));
    // Once only.
    assert_eq!(messages_of(requests.last().unwrap()).matches("MARK-SUB-RULES").count(), 1);

    // The skill's body only after the Skill call.
    let skill_at = requests.iter().position(|r| messages_of(r).contains("MARK-SKILL-BODY")).expect("the body sent");
    assert_eq!(requests[skill_at].tool_result_count(), 4);
    assert!(requests[..skill_at].iter().all(|r| !r.raw_body.contains("MARK-SKILL-BODY")));

    // The malformed skill: a notice event, naming it.
    let notices = stored_events(&home, &id, "notice");
    assert!(notices.iter().any(|d| d.contains("skill_skipped") && d.contains("broken/SKILL.md")), "{notices:#?}");
    let _ = ended;

    // The plan: in `task show --json`, with its event, and as text.
    let shown = home.show(&id);
    let plan = shown["plan"].as_array().expect("a plan");
    assert_eq!(plan.len(), 3, "{shown:#}");
    assert_eq!(plan[0], json!({"content": "read the files", "status": "done"}));
    assert_eq!(plan[2]["status"], "in_progress");
    assert_eq!(stored_events(&home, &id, "plan_updated").len(), 1);
    let text = home.ok(&["task", "show", &id]);
    assert!(text.contains("Plan: 2/3 done") && text.contains("[>] deploy"), "{text}");
}
