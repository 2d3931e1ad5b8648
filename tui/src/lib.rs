//! `neuraphage tui`: one screen for every task — the dashboard of issue 15.
//!
//! Layout: [`app`] is the state and every change to it (pure, unit-tested; `commands` is what keys do); its parts are [`tasks`] (the Tasks
//! pane's model and order), [`live`] (each task's streamed text, tool calls and plan), [`notices`] (the
//! Notifications pane and terminal alerts) and [`stats`]; [`keys`] maps keys to commands; [`ui`] draws (one module
//! per pane); [`theme`] picks colours by what the terminal shows (`NO_COLOR`, 24-bit, 256, 16); [`text`] escapes
//! and wraps what tasks wrote. At run time, `client` is the control link (the event stream with deltas, one-off
//! requests for actions) and the status socket, `terminal` owns the terminal (raw mode, alternate screen, mouse,
//! title, restored on every exit and on panic), and `dashboard` is the event loop: it draws on input, on stream
//! items and on a slow tick for the ages shown, never on a busy timer, and quitting changes nothing.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
mod client;
mod commands;
mod dashboard;
mod error;
#[allow(dead_code)]
#[path = "../../cli/src/escape.rs"]
mod escape;
pub mod keys;
pub mod live;
pub mod notices;
pub mod stats;
pub mod tasks;
mod terminal;
pub mod text;
pub mod theme;
pub mod ui;

pub use dashboard::run;
pub use error::TuiError;
