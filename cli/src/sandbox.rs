//! `neuraphage sandbox check [--profile NAME] [--json]`: what this machine enforces of a profile, layer by layer.
//!
//! It resolves the profile as the supervisor would for a task (in a throw-away folder standing for the worktree),
//! runs `neuraphage-worker --check`, which applies the plan to itself and tries what each layer should stop, and
//! prints what held. Needs no supervisor.

use std::process::Stdio;

use neuraphage_ipc::paths::Paths;
use neuraphage_sandbox_profiles::TaskFolders;
use neuraphage_sandbox_profiles::profile::{self, Context, DEFAULT_PROFILE};
use serde_json::Value;

use crate::error::CliError;

/// Run the check; the worker's findings as JSON.
pub async fn check(paths: &Paths, name: Option<&str>) -> Result<Value, CliError> {
    let name = name.unwrap_or(DEFAULT_PROFILE);
    let ctx = Context::of_this_process(&paths.home, None);
    let profile = profile::load(name, &ctx).map_err(|e| CliError::Failed(format!("--profile {name}: {e}")))?;
    let dir = tempfile::Builder::new().prefix("neuraphage-sandbox-check-").tempdir()?;
    let folders = TaskFolders {
        workdir: dir.path().join("worktree"),
        tmp: dir.path().join("tmp"),
        outputs: dir.path().join("outputs"),
        git_dir: None,
        worktree_gitfile: None,
    };
    let outside = dir.path().join("outside");
    for d in [&folders.workdir, &folders.tmp, &folders.outputs, &outside] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(outside.join("probe"), b"a file no rule opens\n")?;
    let plan = profile.plan(&folders, &ctx).map_err(|e| CliError::Failed(e.to_string()))?;
    let plan_file = dir.path().join("sandbox.json");
    plan.save(&plan_file)?;
    let worker = crate::daemon::sibling_binary("neuraphage-worker")?;
    let out = tokio::process::Command::new(&worker)
        .arg("--check")
        .arg("--sandbox")
        .arg(&plan_file)
        .arg("--workdir")
        .arg(&folders.workdir)
        .arg("--tmp")
        .arg(&outside)
        .arg("--outputs")
        .arg(&folders.outputs)
        .current_dir(&folders.workdir)
        .stdin(Stdio::null())
        .output()
        .await?;
    let mut report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        CliError::Failed(format!(
            "{} --check gave no report ({e}; {}): {}",
            worker.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    report["description"] = Value::String(profile.description.clone());
    report["file"] = Value::String(profile.file.clone());
    Ok(report)
}

/// The report as text.
pub fn render(report: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = format!(
        "profile {} ({}): {}\nkernel Landlock ABI {}\n",
        s(&report["profile"]),
        s(&report["file"]),
        s(&report["description"]),
        report["kernel_landlock_abi"]
    );
    if let Some(why) = report["refused"].as_str() {
        out.push_str(&format!("REFUSED: a task with this profile would not run here: {why}\n"));
    }
    for layer in report["layers"].as_array().into_iter().flatten() {
        let mark = if layer["enforced"].as_bool() == Some(true) { "enforced" } else { "NOT ENFORCED" };
        out.push_str(&format!("  {:<20} {:<13} {}\n", s(&layer["layer"]), mark, s(&layer["detail"])));
    }
    for missing in report["missing"].as_array().into_iter().flatten() {
        out.push_str(&format!("  missing on this kernel: {}\n", s(missing)));
    }
    crate::escape::visible_lines(&out)
}
