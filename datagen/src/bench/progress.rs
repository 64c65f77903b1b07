//! A one-line progress bar on stderr, redrawn in place; silent when stderr is not a terminal
//! (a CI log or a file gets the result lines only).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const WIDTH: usize = 30;
const REDRAW_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: u64,
    started: Instant,
    drawn: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Self {
        Self {
            label,
            total: total.max(1),
            started: Instant::now(),
            drawn: None,
            shown: std::io::stderr().is_terminal(),
        }
    }

    /// Shows `done` of the total, at most every [`REDRAW_EVERY`].
    pub fn set(&mut self, done: u64) {
        if !self.shown || self.drawn.is_some_and(|at| at.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        eprint!(
            "\r{}",
            line(self.label, done, self.total, self.started.elapsed())
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown {
            eprint!("\r{:width$}\r", "", width = WIDTH + 60);
            let _ = std::io::stderr().flush();
        }
    }
}

fn line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let done = done.min(total);
    let filled = (done as usize * WIDTH) / total as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{label:<10} [{}{}] {done}/{total}  {rate:.0}/s  {:.1} s",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_share_done() {
        let half = line("produce", 50, 100, Duration::from_secs(1));
        assert!(half.contains(&format!("[{}{}]", "#".repeat(15), " ".repeat(15))));
        assert!(half.contains("50/100  50/s"));
        let over = line("wait", 120, 100, Duration::from_secs(2));
        assert!(over.contains(&"#".repeat(30)) && over.contains("100/100"));
    }
}
