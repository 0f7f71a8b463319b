//! Progress bars on stderr: bytes and keys, with rate and ETA. Shown only when stderr is a
//! terminal, `--quiet` was not given, and the work has already taken over a second (so quick
//! jobs and scripts never see one).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A lazily shown progress bar.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    shown: bool,
    enabled: bool,
    keys: u64,
    last_update: Instant,
    last_bytes: u64,
}

impl Progress {
    /// A bar for `total` bytes (unknown for stdin); `quiet` disables it.
    pub fn new(total: Option<u64>, label: &str, quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        let style = if total.is_some() {
            "{prefix} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}"
        } else {
            "{prefix} {bytes} ({bytes_per_sec}) {msg}"
        };
        if let Ok(s) = ProgressStyle::with_template(style) {
            bar.set_style(s.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        let now = Instant::now();
        Progress {
            bar,
            start: now,
            shown: false,
            enabled: !quiet && std::io::stderr().is_terminal(),
            keys: 0,
            last_update: now,
            last_bytes: 0,
        }
    }

    /// A bar that never shows.
    pub fn hidden() -> Progress {
        let mut p = Progress::new(None, "", true);
        p.enabled = false;
        p
    }

    /// Record progress: bytes read so far, one more key.
    pub fn tick(&mut self, bytes: u64, keys: u64) {
        self.keys += keys;
        // Look at the clock only every 64 keys or 4 MB, so the hot loop stays cheap.
        if !self.enabled || (self.keys % 64 != 0 && bytes < self.last_bytes + (4 << 20)) {
            return;
        }
        self.last_bytes = bytes;
        let now = Instant::now();
        if now.duration_since(self.last_update) < Duration::from_millis(100) {
            return;
        }
        self.last_update = now;
        if !self.shown && now.duration_since(self.start) > Duration::from_secs(1) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        self.bar.set_position(bytes);
        if self.keys == 0 {
            // Bytes only (`fetch`): no "0 keys".
            return;
        }
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{} keys ({:.0} keys/s)",
            self.keys,
            self.keys as f64 / secs
        ));
    }

    /// Remove the bar.
    pub fn finish(&self) {
        if self.shown {
            self.bar.finish_and_clear();
        }
    }
}
