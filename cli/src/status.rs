//! `neuraphage status` (a reader of the status socket, for shell bars and the terminal title) and
//! `neuraphage notify mute|unmute` (one control request).
//!
//! The status socket sends one JSON line ([`StatusLine`]) at once and one per change. `status` prints the first as a
//! text summary, its JSON (`--json`), a template (`--format`, for tmux and polybar), waybar's JSON (`--format
//! waybar`) or the terminal title's OSC 2 sequence (`--title`); with `--follow`, every line. Every string that came
//! from a task is printed escaped ([`crate::escape`]); lines are read bounded ([`MAX_STATUS_LINE`]).

use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::status::{MAX_STATUS_LINE, StatusLine};
use neuraphage_ipc::{ControlReply, ControlRequest};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;

use crate::cli::{NotifyCommand, StatusArgs};
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::escape::{json_safe, visible};
use crate::output;

/// The placeholders `--format` knows.
pub const PLACEHOLDERS: [&str; 14] = [
    "waiting",
    "running",
    "queued",
    "blocked",
    "paused",
    "done",
    "failed",
    "cancelled",
    "total",
    "cost",
    "tokens",
    "muted",
    "headroom",
    "glyphs",
];

/// How each line is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Style {
    /// A few lines of text.
    Text,
    /// The line as JSON.
    Json,
    /// A template's placeholders filled in.
    Template(Vec<Piece>),
    /// waybar's custom module (`return-type: json`).
    Waybar,
    /// The terminal title (OSC 2).
    Title,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text as written (`{{` and `}}` for braces).
    Literal(String),
    /// A placeholder's name.
    Field(String),
}

/// Parse a `--format` template; an unknown placeholder or a lone brace is a usage error naming it.
pub fn parse_template(template: &str) -> Result<Vec<Piece>, CliError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if name.len() < 32 => name.push(c),
                        _ => return Err(CliError::Usage(format!("--format: unclosed or too long `{{{name}`"))),
                    }
                }
                if !PLACEHOLDERS.contains(&name.as_str()) {
                    return Err(CliError::Usage(format!(
                        "--format: unknown placeholder {{{}}}; known: {}",
                        visible(&name),
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                    )));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Field(name));
            }
            '}' => return Err(CliError::Usage("--format: a lone `}` (write `}}` for a brace)".into())),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn count(line: &StatusLine, key: &str) -> u64 {
    line.counts.get(key).copied().unwrap_or(0)
}

/// Tokens as `950`, `12.3k`, `4.5M`.
pub fn tokens(n: u64) -> String {
    match n {
        n if n < 1_000 => n.to_string(),
        n if n < 1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        n => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The tightest headroom of any pool, as a whole percentage; `None` when no limit is known.
fn headroom(line: &StatusLine) -> Option<u32> {
    let min = line
        .pools
        .iter()
        .flat_map(|p| [p.requests, p.input_tokens, p.output_tokens])
        .flatten()
        .fold(None, |acc: Option<f64>, f| Some(acc.map_or(f, |a| a.min(f))));
    min.map(|f| (f.clamp(0.0, 1.0) * 100.0).round() as u32)
}

/// The short form: `⏳2 ▶5 ✓12` (and `✗1` when something failed, `🔇` when muted).
pub fn glyphs(line: &StatusLine) -> String {
    let mut text =
        format!("⏳{} ▶{} ✓{}", count(line, "waiting_for_user"), count(line, "running"), count(line, "completed"));
    let failed = count(line, "failed");
    if failed > 0 {
        text.push_str(&format!(" ✗{failed}"));
    }
    if line.muted {
        text.push_str(" 🔇");
    }
    text
}

/// One placeholder's value.
fn field(line: &StatusLine, name: &str) -> String {
    match name {
        "waiting" => count(line, "waiting_for_user").to_string(),
        "done" => count(line, "completed").to_string(),
        "total" => line.counts.values().sum::<u64>().to_string(),
        "cost" => format!("${:.2}", line.cost_today_usd),
        "tokens" => tokens(line.tokens_today),
        "muted" => if line.muted { "muted" } else { "" }.to_owned(),
        "headroom" => headroom(line).map(|h| format!("{h}%")).unwrap_or_else(|| "-".into()),
        "glyphs" => glyphs(line),
        other => count(line, other).to_string(),
    }
}

/// A template filled in.
pub fn render_template(pieces: &[Piece], line: &StatusLine) -> String {
    let text: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Literal(s) => s.clone(),
            Piece::Field(name) => field(line, name),
        })
        .collect();
    visible(&text)
}

/// The text summary.
pub fn summary(line: &StatusLine) -> String {
    let mut out = String::new();
    let order = ["running", "waiting_for_user", "queued", "blocked", "paused", "completed", "failed", "cancelled"];
    let counts: Vec<String> = order
        .iter()
        .filter(|k| count(line, k) > 0)
        .map(|k| format!("{} {}", count(line, k), if *k == "waiting_for_user" { "waiting" } else { k }))
        .collect();
    out.push_str(&format!("tasks: {}\n", if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }));
    out.push_str(&format!("today: {} tokens, ${:.2}\n", tokens(line.tokens_today), line.cost_today_usd));
    for p in &line.pools {
        let pct = |f: Option<f64>| f.map(|f| format!("{:.0}%", f * 100.0)).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "pool {}: requests {}, input {}, output {} left\n",
            visible(&p.pool),
            pct(p.requests),
            pct(p.input_tokens),
            pct(p.output_tokens)
        ));
    }
    if !line.waiting.is_empty() {
        out.push_str("waiting on you:\n");
        for w in &line.waiting {
            let age = output::age(w.since, line.at);
            out.push_str(&format!("  {}  {age:>4}  {}\n", w.id, visible(&w.prompt)));
        }
    }
    if line.muted {
        out.push_str("notifications: muted (neuraphage notify unmute)\n");
    }
    out
}

/// waybar's JSON: text, tooltip, class (`waiting`, `running`, `idle`; plus `muted`).
pub fn waybar(line: &StatusLine) -> String {
    let class = if count(line, "waiting_for_user") > 0 {
        "waiting"
    } else if count(line, "running") > 0 {
        "running"
    } else {
        "idle"
    };
    let classes: Vec<&str> = std::iter::once(class).chain(line.muted.then_some("muted")).collect();
    let value = serde_json::json!({
        "text": format!("np {}", glyphs(line)),
        // waybar reads its text and tooltip as Pango markup: what a task wrote is shown as text (red team).
        "tooltip": markup_text(summary(line).trim_end()),
        "class": classes,
    });
    json_safe(&value.to_string())
}

/// `text` with the characters Pango markup gives meaning to (`&`, `<`, `>`) as entities.
fn markup_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The OSC 2 sequence setting the terminal title to `np ⏳2 ▶5 ✓12`.
pub fn title(line: &StatusLine) -> String {
    format!("\x1b]2;np {}\x07", glyphs(line))
}

/// Print one line in `style`.
pub fn render(style: &Style, line: &StatusLine) -> String {
    match style {
        Style::Text => summary(line),
        Style::Json => format!("{}\n", json_safe(&serde_json::to_string(line).unwrap_or_default())),
        Style::Template(pieces) => format!("{}\n", render_template(pieces, line)),
        Style::Waybar => format!("{}\n", waybar(line)),
        Style::Title => title(line),
    }
}

/// The style the flags ask for (at most one of them).
pub fn style(args: &StatusArgs) -> Result<Style, CliError> {
    let chosen = [args.out.json, args.format.is_some(), args.json_waybar, args.title].iter().filter(|b| **b).count();
    if chosen > 1 {
        return Err(CliError::Usage("use one of --json, --format, --json-waybar, --title".into()));
    }
    Ok(match (&args.format, args.out.json, args.json_waybar, args.title) {
        (Some(f), ..) if f == "waybar" => Style::Waybar,
        (Some(f), ..) => Style::Template(parse_template(f)?),
        (_, true, ..) => Style::Json,
        (_, _, true, _) => Style::Waybar,
        (_, _, _, true) => Style::Title,
        _ => Style::Text,
    })
}

/// `neuraphage status`.
pub async fn run(paths: &Paths, args: StatusArgs) -> Result<(), CliError> {
    let style = style(&args)?;
    let socket = paths.status_socket();
    let stream = UnixStream::connect(&socket).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => CliError::NotRunning(format!(
            "the supervisor is not running (nothing answers at {}); start it with `neuraphage daemon start`",
            socket.display()
        )),
        _ => CliError::Failed(format!("cannot connect to {}: {e}", socket.display())),
    })?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut first = true;
    loop {
        let line = match read_line(&mut reader).await? {
            Some(line) => line,
            None if first => return Err(CliError::Failed("the status socket closed without a line".into())),
            None => return Err(CliError::Failed("the supervisor closed the status socket".into())),
        };
        first = false;
        output::out(&render(&style, &line))?;
        if !args.follow {
            return Ok(());
        }
    }
}

/// The next line, bounded; a refusal (`{"error": …}`) is an error.
async fn read_line(reader: &mut tokio::io::BufReader<UnixStream>) -> Result<Option<StatusLine>, CliError> {
    let mut buf = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(None);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > MAX_STATUS_LINE {
            return Err(CliError::Failed(format!("a status line is over {MAX_STATUS_LINE} bytes")));
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            break;
        }
    }
    if let Ok(refusal) = serde_json::from_slice::<serde_json::Value>(&buf)
        && let Some(reason) = refusal.get("error").and_then(|e| e.as_str())
    {
        return Err(CliError::Failed(format!("status socket: {}", visible(reason))));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| CliError::Failed(format!("the status socket sent a line this client cannot read: {e}")))
}

/// `neuraphage notify mute|unmute`.
pub async fn notify(paths: &Paths, command: NotifyCommand) -> Result<(), CliError> {
    let (muted, out) = match command {
        NotifyCommand::Mute(out) => (true, out),
        NotifyCommand::Unmute(out) => (false, out),
    };
    let reply = Client::connect(paths).await?.call(ControlRequest::SetMuted { muted }).await?;
    let ControlReply::Muted { muted } = reply else { return Err(unexpected(reply)) };
    if out.json {
        output::json(&serde_json::json!({ "muted": muted }))
    } else if muted {
        output::out("notifications muted (neuraphage notify unmute to hear them again)\n")
    } else {
        output::out("notifications on\n")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use neuraphage_ipc::status::{PoolHeadroom, StatusWaiting};

    use super::*;

    fn line() -> StatusLine {
        StatusLine {
            at: chrono::DateTime::from_timestamp(1_000_000, 0).unwrap_or_default(),
            counts: BTreeMap::from([
                ("waiting_for_user".to_owned(), 2),
                ("running".to_owned(), 5),
                ("completed".to_owned(), 12),
            ]),
            waiting: vec![StatusWaiting {
                id: "np-0123456789".parse().unwrap_or_else(|e| panic!("{e}")),
                prompt: "Which\u{1b}[2J branch?".into(),
                since: chrono::DateTime::from_timestamp(1_000_000 - 180, 0).unwrap_or_default(),
            }],
            tokens_today: 12_345,
            cost_today_usd: 1.234,
            pools: vec![PoolHeadroom {
                pool: "main".into(),
                requests: Some(0.8),
                input_tokens: Some(0.25),
                output_tokens: None,
            }],
            muted: false,
        }
    }

    #[test]
    fn templates_fill_placeholders_and_refuse_unknown_ones() {
        let pieces = parse_template("np {waiting}w {running}r {{{cost}}} {tokens} {headroom}").unwrap_or_default();
        assert_eq!(render_template(&pieces, &line()), "np 2w 5r {$1.23} 12.3k 25%");
        assert!(matches!(parse_template("{nope}"), Err(CliError::Usage(m)) if m.contains("{nope}")));
        assert!(matches!(parse_template("{waiting"), Err(CliError::Usage(_))));
        assert!(matches!(parse_template("a } b"), Err(CliError::Usage(_))));
    }

    #[test]
    fn title_waybar_and_summary() {
        assert_eq!(title(&line()), "\x1b]2;np ⏳2 ▶5 ✓12\x07");
        let w: serde_json::Value = serde_json::from_str(&waybar(&line())).unwrap_or_default();
        assert_eq!(w["text"], "np ⏳2 ▶5 ✓12");
        assert_eq!(w["class"][0], "waiting");
        assert!(w["tooltip"].as_str().unwrap_or_default().contains("waiting on you"));
        let s = summary(&line());
        assert!(s.contains("5 running, 2 waiting") && s.contains("$1.23") && s.contains("3m"), "{s}");
        // What a task wrote never reaches the terminal raw.
        assert!(!s.contains('\u{1b}') && s.contains("\\u{1b}[2J"), "{s}");
        assert!(!waybar(&line()).contains('\u{1b}'));
    }

    /// Red team: a task's question holding Pango markup (waybar reads its tooltip as markup) is shown as text.
    #[test]
    fn a_question_with_markup_is_text_in_waybar() {
        let mut l = line();
        l.waiting[0].prompt = "<span foreground='#0000'>hidden</span> & <big>".into();
        let w: serde_json::Value = serde_json::from_str(&waybar(&l)).unwrap_or_default();
        let tip = w["tooltip"].as_str().unwrap_or_default().to_owned();
        assert!(tip.contains("&lt;span foreground='#0000'&gt;hidden&lt;/span&gt; &amp; &lt;big&gt;"), "{tip}");
        assert!(!tip.contains('<') && !tip.contains('>'), "{tip}");
    }
}
