//! Conversation storage: bytes on disk of a task's conversation repository after N checkpoints of a conversation
//! that grows by one tool result at each, with the layout the supervisor uses (one blob per message,
//! `supervisor/src/conversation.rs`) against the layout it used before (the whole `messages.json` committed at every
//! checkpoint), and the time one checkpoint's commit takes. fsync is off here (it costs time, not bytes). Run with
//! `bench/run.sh` (`--quick`: 100 checkpoints instead of 500).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use neuraphage_bench::Run;
use neuraphage_ipc::llm::Message;
use neuraphage_supervisor::conversation::Conversation;

/// Bytes of one tool result added at each checkpoint.
const RESULT_BYTES: usize = 8 * 1024;

/// Text that compresses about as well as real tool output (not a repeated pattern zlib would fold away).
fn tool_output(n: usize) -> String {
    let mut state = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let words = ["fn", "let", "error:", "warning:", "src/main.rs", "=>", "Ok(())", "test", "passed", "{", "}", "0x"];
    let mut out = String::with_capacity(RESULT_BYTES + 16);
    while out.len() < RESULT_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(words[(state % words.len() as u64) as usize]);
        out.push_str(&format!("{:x}", state % 4096));
        out.push(if state.is_multiple_of(9) { '\n' } else { ' ' });
    }
    out
}

/// Bytes the files under `dir` take on disk (allocated blocks), and their apparent size.
fn disk_usage(dir: &Path) -> (u64, u64) {
    let (mut blocks, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                blocks += meta.blocks() * 512;
                bytes += meta.len();
            }
        }
    }
    (blocks, bytes)
}

/// The layout before: the whole conversation as one `messages.json` in every commit.
fn commit_whole(repo: &git2::Repository, messages: &[Message], summary: &str) {
    let json = serde_json::to_vec_pretty(messages).unwrap();
    let blob = repo.blob(&json).unwrap();
    let mut builder = repo.treebuilder(None).unwrap();
    builder.insert("messages.json", blob, 0o100644).unwrap();
    let tree = repo.find_tree(builder.write().unwrap()).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let sig = git2::Signature::now("neuraphage", "neuraphage@localhost").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, summary, &tree, &parents).unwrap();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let checkpoints = if quick { 100 } else { 500 };
    println!("{checkpoints} checkpoints, each adding one {RESULT_BYTES}-byte tool result");
    println!("{}", Run::header());
    let mut sizes = Vec::new();
    for layout in ["per-message blobs (now)", "whole messages.json (before)"] {
        let dir = tempfile::tempdir().unwrap();
        let mut messages = vec![Message::user_text("bench the conversation storage")];
        let mut latencies = Vec::with_capacity(checkpoints);
        let wall = Instant::now();
        let repo = git2::Repository::init(dir.path()).unwrap();
        for n in 0..checkpoints {
            messages.push(Message::user_text(tool_output(n)));
            let summary = format!("tool_completed #{n}");
            let t = Instant::now();
            if layout.starts_with("per-message") {
                Conversation::open(dir.path()).unwrap().commit(&messages, &summary).unwrap();
            } else {
                commit_whole(&repo, &messages, &summary);
            }
            latencies.push(t.elapsed());
        }
        let wall: Duration = wall.elapsed();
        assert_eq!(Conversation::open(dir.path()).unwrap().messages().unwrap(), messages);
        println!("{}", Run { label: format!("commit, {layout}"), clients: 1, latencies, wall }.row());
        sizes.push((layout, disk_usage(&dir.path().join(".git"))));
    }
    let added = (checkpoints * RESULT_BYTES) as f64 / 1e6;
    println!("conversation added: {added:.1} MB of tool output");
    for (layout, (blocks, bytes)) in sizes {
        println!("{layout:<30} on disk {:>9.1} MB (files {:>9.1} MB)", blocks as f64 / 1e6, bytes as f64 / 1e6);
    }
}
