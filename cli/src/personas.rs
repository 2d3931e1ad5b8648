//! `neuraphage personas`: the personas a task can take, as the supervisor has them in force.

use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::personas::PersonaInfo;
use neuraphage_ipc::{ControlReply, ControlRequest};

use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::escape::visible;
use crate::output;

/// `neuraphage personas [--json]`.
pub async fn run(paths: &Paths, json: bool) -> Result<(), CliError> {
    let reply = Client::connect(paths).await?.call(ControlRequest::ListPersonas).await?;
    let ControlReply::Personas(list) = reply else { return Err(unexpected(reply)) };
    if json { output::json(&list) } else { output::out(&render(&list)) }
}

/// The listing as text, escaped (names and descriptions may come from the user's `personas.yaml`).
pub fn render(list: &[PersonaInfo]) -> String {
    let mut s = String::new();
    for p in list {
        let tools = match &p.allowed_tools {
            None => "all tools".to_owned(),
            Some(t) => format!("tools: {}", t.join(", ")),
        };
        let internal = if p.internal { ", internal" } else { "" };
        s.push_str(&format!(
            "{:<12} {:<7} {} ({}; {}{internal})\n",
            visible(&p.key),
            visible(&p.tier),
            visible(&p.description),
            visible(&tools),
            visible(&p.origin),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped() {
        let p = PersonaInfo {
            key: "x\u{1b}[2J".into(),
            name: "X".into(),
            description: "d".into(),
            tier: "worker".into(),
            allowed_tools: Some(vec!["Read".into()]),
            internal: false,
            origin: "personas.yaml".into(),
        };
        let out = render(&[p]);
        assert!(!out.contains('\u{1b}') && out.contains("tools: Read"), "{out}");
    }
}
