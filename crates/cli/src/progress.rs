//! Progress bars on stderr, drawn only when stderr is a terminal, so piped and `--json` output
//! stays clean and tests see nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Visible when stderr is a terminal.
    pub fn for_stderr() -> Progress {
        Progress {
            visible: std::io::stderr().is_terminal(),
        }
    }

    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    fn styled(&self, bar: ProgressBar, template: &str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A bar over `len` items.
    pub fn items(&self, len: u64, message: &'static str) -> ProgressBar {
        self.styled(
            ProgressBar::new(len).with_message(message),
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}",
        )
    }

    /// A bar over the bytes of a file.
    pub fn bytes(&self, len: u64, message: &'static str) -> ProgressBar {
        self.styled(
            ProgressBar::new(len).with_message(message),
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }

    /// A counter without a known end.
    pub fn spinner(&self, message: &'static str) -> ProgressBar {
        self.styled(
            ProgressBar::new_spinner().with_message(message),
            "{spinner} {msg} {human_pos} {per_sec}",
        )
    }
}
