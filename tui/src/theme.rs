//! Colours, by what the terminal can show: 24-bit where `COLORTERM` says `truecolor`/`24bit`, the 256-colour
//! palette where `TERM` names `256color`, else the 16 ANSI colours; none at all under `NO_COLOR` (any non-empty
//! value, <https://no-color.org>) or `TERM=dumb` — then selection and emphasis are shown by reverse video and bold.
//!
//! Every colour is chosen once, as RGB, and brought down to the depth in force, so the three palettes agree.

use neuraphage_ipc::TaskState;
use ratatui::style::{Color, Modifier, Style};

/// How many colours the terminal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorDepth {
    /// None: `NO_COLOR`.
    None,
    /// The 16 ANSI colours.
    Ansi16,
    /// The xterm 256-colour palette.
    Indexed256,
    /// 24-bit RGB.
    TrueColor,
}

impl ColorDepth {
    /// The depth the environment asks for (`var` looks a variable up; unit-testable).
    pub fn detect(var: impl Fn(&str) -> Option<String>) -> ColorDepth {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        if set("NO_COLOR").is_some() {
            return ColorDepth::None;
        }
        let term = set("TERM").unwrap_or_default().to_ascii_lowercase();
        if term == "dumb" {
            return ColorDepth::None;
        }
        let colorterm = set("COLORTERM").unwrap_or_default().to_ascii_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" {
            ColorDepth::TrueColor
        } else if term.contains("256color") {
            ColorDepth::Indexed256
        } else {
            ColorDepth::Ansi16
        }
    }
}

/// The styles every pane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// The depth in force.
    pub depth: ColorDepth,
}

/// The palette, as RGB.
mod rgb {
    pub const GREEN: (u8, u8, u8) = (80, 200, 120);
    pub const YELLOW: (u8, u8, u8) = (240, 190, 60);
    pub const BLUE: (u8, u8, u8) = (90, 150, 240);
    pub const MAGENTA: (u8, u8, u8) = (200, 120, 230);
    pub const RED: (u8, u8, u8) = (235, 80, 80);
    pub const GREY: (u8, u8, u8) = (130, 130, 140);
    pub const CYAN: (u8, u8, u8) = (80, 200, 220);
    pub const ORANGE: (u8, u8, u8) = (240, 140, 50);
    pub const BORDER: (u8, u8, u8) = (90, 100, 120);
}

impl Theme {
    /// The theme for the process environment.
    pub fn from_env() -> Theme {
        Theme { depth: ColorDepth::detect(|k| std::env::var(k).ok()) }
    }

    /// A theme of a given depth.
    pub fn new(depth: ColorDepth) -> Theme {
        Theme { depth }
    }

    /// An RGB colour at this theme's depth (`None` without colour).
    pub fn color(&self, (r, g, b): (u8, u8, u8)) -> Option<Color> {
        match self.depth {
            ColorDepth::None => None,
            ColorDepth::TrueColor => Some(Color::Rgb(r, g, b)),
            ColorDepth::Indexed256 => Some(Color::Indexed(to_256(r, g, b))),
            ColorDepth::Ansi16 => Some(to_16(r, g, b)),
        }
    }

    fn fg(&self, rgb: (u8, u8, u8)) -> Style {
        match self.color(rgb) {
            Some(c) => Style::new().fg(c),
            None => Style::new(),
        }
    }

    /// A status's glyph and style.
    pub fn status(&self, state: TaskState) -> (&'static str, Style) {
        match state {
            TaskState::Running => ("●", self.fg(rgb::GREEN)),
            TaskState::WaitingForUser => ("◐", self.fg(rgb::YELLOW).add_modifier(Modifier::BOLD)),
            TaskState::Queued => ("◌", self.fg(rgb::BLUE)),
            TaskState::Blocked => ("⊘", self.fg(rgb::MAGENTA)),
            TaskState::Paused => ("⏸", self.fg(rgb::GREY)),
            TaskState::Completed => ("✓", self.fg(rgb::GREEN).add_modifier(Modifier::DIM)),
            TaskState::Failed => ("✗", self.fg(rgb::RED)),
            TaskState::Cancelled => ("⊗", self.fg(rgb::GREY).add_modifier(Modifier::DIM)),
        }
    }

    /// Pane borders.
    pub fn border(&self) -> Style {
        self.fg(rgb::BORDER)
    }

    /// A focused pane's border and titles.
    pub fn accent(&self) -> Style {
        self.fg(rgb::CYAN).add_modifier(Modifier::BOLD)
    }

    /// Less important text (times, hints).
    pub fn dim(&self) -> Style {
        match self.depth {
            ColorDepth::None => Style::new().add_modifier(Modifier::DIM),
            _ => self.fg(rgb::GREY),
        }
    }

    /// The selected row.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// The banner that says tasks wait on the user.
    pub fn banner(&self) -> Style {
        match self.color(rgb::YELLOW) {
            Some(c) => Style::new().bg(c).fg(Color::Black).add_modifier(Modifier::BOLD),
            None => Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        }
    }

    /// An error or a failure.
    pub fn error(&self) -> Style {
        self.fg(rgb::RED).add_modifier(Modifier::BOLD)
    }

    /// Good news (ok outcomes).
    pub fn ok(&self) -> Style {
        self.fg(rgb::GREEN)
    }

    /// A tool call's line.
    pub fn tool(&self) -> Style {
        self.fg(rgb::ORANGE)
    }

    /// A diff's added line.
    pub fn added(&self) -> Style {
        self.fg(rgb::GREEN)
    }

    /// A diff's removed line.
    pub fn removed(&self) -> Style {
        self.fg(rgb::RED)
    }

    /// A diff's hunk header.
    pub fn hunk(&self) -> Style {
        self.fg(rgb::CYAN)
    }

    /// A gauge's fill at `fraction` (0..=1) of its length: red → yellow → green, as btop does.
    pub fn gradient(&self, fraction: f64) -> Style {
        let f = fraction.clamp(0.0, 1.0);
        let rgb = if f < 0.5 {
            (235, (80.0 + 110.0 * f * 2.0) as u8, 60)
        } else {
            ((235.0 - 155.0 * (f - 0.5) * 2.0) as u8, (190.0 + 10.0 * (f - 0.5) * 2.0) as u8, 60)
        };
        self.fg(rgb)
    }

    /// The sparkline.
    pub fn spark(&self) -> Style {
        self.fg(rgb::CYAN)
    }
}

/// The nearest colour of xterm's 6×6×6 cube or its grey ramp.
pub fn to_256(r: u8, g: u8, b: u8) -> u8 {
    let level = |v: u8| -> u8 {
        if v < 48 {
            0
        } else if v < 115 {
            1
        } else {
            (v - 35) / 40
        }
    };
    let (cr, cg, cb) = (level(r), level(g), level(b));
    let steps = [0u8, 95, 135, 175, 215, 255];
    let cube = (steps[cr as usize], steps[cg as usize], steps[cb as usize]);
    let avg = (u16::from(r) + u16::from(g) + u16::from(b)) / 3;
    let grey_index = if avg > 238 { 23 } else { avg.saturating_sub(3) / 10 } as u8;
    let grey = 8 + 10 * grey_index;
    let dist = |(x, y, z): (u8, u8, u8)| {
        let d = |a: u8, b: u8| (i32::from(a) - i32::from(b)).pow(2);
        d(x, r) + d(y, g) + d(z, b)
    };
    if dist((grey, grey, grey)) < dist(cube) { 232 + grey_index } else { 16 + 36 * cr + 6 * cg + cb }
}

/// The 16-colour equivalent, by hue (ANSI colours are too unevenly rendered for a nearest-RGB match): greys by
/// lightness, others by the sector of their hue, bright ones as the light variant.
pub fn to_16(r: u8, g: u8, b: u8) -> Color {
    let (rf, gf, bf) = (f64::from(r) / 255.0, f64::from(g) / 255.0, f64::from(b) / 255.0);
    let max = rf.max(gf).max(bf);
    let min = rf.min(gf).min(bf);
    let chroma = max - min;
    if chroma < 0.25 {
        return match max {
            m if m < 0.25 => Color::Black,
            m if m < 0.6 => Color::DarkGray,
            m if m < 0.9 => Color::Gray,
            _ => Color::White,
        };
    }
    let hue = if max == rf {
        60.0 * ((gf - bf) / chroma).rem_euclid(6.0)
    } else if max == gf {
        60.0 * ((bf - rf) / chroma + 2.0)
    } else {
        60.0 * ((rf - gf) / chroma + 4.0)
    };
    let bright = max > 0.9 && min > 0.45;
    let pick = |dark: Color, light: Color| if bright { light } else { dark };
    match hue {
        h if !(30.0..330.0).contains(&h) => pick(Color::Red, Color::LightRed),
        h if h < 75.0 => pick(Color::Yellow, Color::LightYellow),
        h if h < 165.0 => pick(Color::Green, Color::LightGreen),
        h if h < 200.0 => pick(Color::Cyan, Color::LightCyan),
        h if h < 260.0 => pick(Color::Blue, Color::LightBlue),
        _ => pick(Color::Magenta, Color::LightMagenta),
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn depth_follows_no_color_then_colorterm_then_term() {
        assert_eq!(ColorDepth::detect(env(&[("NO_COLOR", "1"), ("COLORTERM", "truecolor")])), ColorDepth::None);
        assert_eq!(ColorDepth::detect(env(&[("NO_COLOR", ""), ("COLORTERM", "24bit")])), ColorDepth::TrueColor);
        assert_eq!(ColorDepth::detect(env(&[("TERM", "xterm-256color")])), ColorDepth::Indexed256);
        assert_eq!(ColorDepth::detect(env(&[("TERM", "xterm")])), ColorDepth::Ansi16);
        assert_eq!(ColorDepth::detect(env(&[("TERM", "dumb")])), ColorDepth::None);
        assert_eq!(ColorDepth::detect(env(&[])), ColorDepth::Ansi16);
    }

    #[test]
    fn colours_come_down_to_the_depth_in_force() {
        assert_eq!(to_256(255, 0, 0), 196);
        assert_eq!(to_256(0, 0, 0), 16);
        assert_eq!(to_256(128, 128, 128), 244);
        assert_eq!(to_16(235, 80, 80), Color::Red);
        assert_eq!(to_16(240, 190, 60), Color::Yellow);
        assert_eq!(to_16(90, 150, 240), Color::Blue);
        assert_eq!(to_16(130, 130, 140), Color::DarkGray);
        assert_eq!(to_16(80, 200, 120), Color::Green);
        assert_eq!(Theme::new(ColorDepth::None).color((1, 2, 3)), None);
        assert_eq!(Theme::new(ColorDepth::TrueColor).color((1, 2, 3)), Some(Color::Rgb(1, 2, 3)));
        let (_, style) = Theme::new(ColorDepth::None).status(TaskState::Failed);
        assert_eq!(style.fg, None, "no colour under NO_COLOR");
    }
}
