//! The Stats pane: running / waiting / queued / blocked counts, tokens and cost today, model calls per minute as
//! a braille sparkline, and each key pool's rate-limit headroom as a gauge (`—` where the supervisor offers no
//! status socket).

use neuraphage_ipc::TaskState;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::theme::Theme;

/// Draw the pane.
pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let block = super::pane(Line::styled(" Stats ", theme.accent()), theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let counts = app.tasks.counts();
    let n = |s: TaskState| counts.get(&s).copied().unwrap_or(0);
    let count = |s: TaskState, word: &str| {
        let (glyph, style) = theme.status(s);
        vec![Span::styled(format!("{glyph}{}", n(s)), style), Span::raw(format!(" {word}  "))]
    };
    let mut lines = vec![Line::from(
        [
            count(TaskState::Running, "running"),
            count(TaskState::WaitingForUser, "waiting"),
            count(TaskState::Queued, "queued"),
            count(TaskState::Blocked, "blocked"),
        ]
        .concat(),
    )];
    match &app.stats.status {
        Some(status) => lines.push(Line::from(vec![
            Span::styled("tokens ", theme.dim()),
            Span::raw(format!("{}  ", tokens(status.tokens_today))),
            Span::styled("cost ", theme.dim()),
            Span::raw(format!("${:.2}", status.cost_today_usd)),
            Span::styled(" today", theme.dim()),
        ])),
        None => lines.push(Line::from(vec![
            Span::styled("tokens ", theme.dim()),
            Span::raw("—  "),
            Span::styled("cost ", theme.dim()),
            Span::raw("—"),
            Span::styled(" (no status socket)", theme.dim()),
        ])),
    }
    let label = "req/min ";
    let rate = format!(" {}", app.stats.rate(app.now));
    let cells = (inner.width as usize).saturating_sub(label.len() + rate.len()).min(60);
    let data = app.stats.per_minute(app.now, cells * 2);
    lines.push(Line::from(vec![
        Span::styled(label, theme.dim()),
        Span::styled(braille(&data), theme.spark()),
        Span::raw(rate),
    ]));
    match &app.stats.status {
        Some(status) if !status.pools.is_empty() => {
            for pool in status.pools.iter().take(inner.height.saturating_sub(3) as usize) {
                let name = crate::text::shorten(&crate::text::one_line(&pool.pool), 10);
                let left =
                    [pool.requests, pool.input_tokens, pool.output_tokens].into_iter().flatten().reduce(f64::min);
                let mut spans = vec![Span::styled(format!("{name:<10} "), theme.dim())];
                match left {
                    Some(f) => {
                        let w = (inner.width as usize).saturating_sub(17);
                        let (full, empty) = super::bar(w, f);
                        spans.push(Span::styled(full, theme.gradient(f)));
                        spans.push(Span::styled(empty, theme.dim()));
                        spans.push(Span::raw(format!(" {:>3.0}%", f * 100.0)));
                    }
                    None => spans.push(Span::styled("no limit known", theme.dim())),
                }
                lines.push(Line::from(spans));
            }
        }
        Some(_) => lines.push(Line::styled("pools: none reported", theme.dim())),
        None => lines.push(Line::styled("pools: —", theme.dim())),
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// `45.2k`, `1.3M`.
pub fn tokens(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A braille sparkline: two values per cell, each a column of up to four dots, scaled to the largest value.
pub fn braille(values: &[u32]) -> String {
    const LEFT: [u32; 4] = [0x40, 0x04, 0x02, 0x01];
    const RIGHT: [u32; 4] = [0x80, 0x20, 0x10, 0x08];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let height = |v: u32| if v == 0 { 0 } else { ((v as u64 * 4).div_ceil(max as u64) as usize).clamp(1, 4) };
    values
        .chunks(2)
        .map(|pair| {
            let mut bits = 0u32;
            let l = height(pair[0]);
            let r = pair.get(1).map_or(0, |v| height(*v));
            bits |= LEFT[..l].iter().sum::<u32>();
            bits |= RIGHT[..r].iter().sum::<u32>();
            char::from_u32(0x2800 + bits).unwrap_or(' ')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn braille_columns_rise_with_their_values() {
        assert_eq!(braille(&[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]), "⠀⣀⣤⣶⣿");
        assert_eq!(braille(&[4, 0]), "⡇");
        assert_eq!(braille(&[]), "");
        assert_eq!(tokens(45_200), "45.2k");
    }
}
