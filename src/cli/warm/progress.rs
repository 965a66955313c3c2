//! What `acr warm` shows on stderr while it reads blobs: live bars on a terminal, a line per
//! finished blob otherwise, nothing with `--json`.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::human;
use super::walk::BlobTask;

/// How often the progress bars are redrawn.
const REDRAW: Duration = Duration::from_millis(100);

// ------------------------------------------------------------------------------------------
// progress on stderr

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A terminal: live bars redrawn in place.
    Bars,
    /// Not a terminal: a plain line as each blob finishes.
    Lines,
    /// `--json`: nothing.
    Quiet,
}

enum RowState {
    Waiting,
    Pulling(Instant),
    Done { cached: bool, secs: f64 },
    Failed(String),
}

struct Row {
    label: String,
    total: Option<u64>,
    done: u64,
    state: RowState,
    /// Already written above the live area (Bars), or as a line (Lines).
    printed: bool,
}

#[derive(Default)]
struct Board {
    rows: Vec<Row>,
    /// Lines of the live area on screen now.
    drawn: usize,
}

pub(super) struct Progress {
    mode: Mode,
    board: Mutex<Board>,
    width: usize,
}

const BAR: usize = 24;

impl Progress {
    pub(super) fn new(mode: Mode) -> Progress {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|w| *w >= 40)
            .unwrap_or(80);
        Progress {
            mode,
            board: Mutex::new(Board::default()),
            width,
        }
    }

    fn write(text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }

    /// A line of its own (not for `--json`).
    fn note(&self, text: &str) {
        if self.mode != Mode::Quiet {
            Self::write(&format!("{}\n", self.fit(text)));
        }
    }

    fn fit(&self, text: &str) -> String {
        if self.mode == Mode::Bars && text.chars().count() >= self.width {
            let mut t: String = text.chars().take(self.width.saturating_sub(2)).collect();
            t.push('…');
            t
        } else {
            text.to_string()
        }
    }

    /// A new image: its header and one row per blob.
    pub(super) fn begin(&self, header: &str, tasks: &[BlobTask]) {
        self.note(header);
        let Ok(mut b) = self.board.lock() else { return };
        b.drawn = 0;
        b.rows = tasks
            .iter()
            .map(|t| Row {
                label: format!("{} {:<6}", short(&t.digest), t.kind.name()),
                total: t.size,
                done: 0,
                state: RowState::Waiting,
                printed: false,
            })
            .collect();
    }

    pub(super) fn start(&self, row: usize) {
        if let Ok(mut b) = self.board.lock() {
            if let Some(r) = b.rows.get_mut(row) {
                r.state = RowState::Pulling(Instant::now());
            }
        }
    }

    pub(super) fn advance(&self, row: usize, done: u64) {
        if self.mode != Mode::Bars {
            return;
        }
        if let Ok(mut b) = self.board.lock() {
            if let Some(r) = b.rows.get_mut(row) {
                r.done = done;
            }
        }
    }

    pub(super) fn finish(&self, row: usize, bytes: u64, outcome: Result<bool, String>) {
        let Ok(mut b) = self.board.lock() else { return };
        let Some(r) = b.rows.get_mut(row) else { return };
        let secs = match r.state {
            RowState::Pulling(at) => at.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        r.done = bytes;
        r.state = match outcome {
            Ok(cached) => RowState::Done { cached, secs },
            Err(e) => RowState::Failed(e),
        };
        if self.mode == Mode::Lines {
            r.printed = true;
            let line = format!("  {}\n", finished_text(r));
            drop(b);
            Self::write(&line);
        }
    }

    /// Redraws the live area every [`REDRAW`] while blobs are read (terminals only).
    pub(super) fn ticker(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.mode != Mode::Bars {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REDRAW);
            loop {
                tick.tick().await;
                self.draw(false);
            }
        }))
    }

    /// The finished rows not yet shown go above the live area for good; the rows being read
    /// and a total line are redrawn in place.
    fn draw(&self, last: bool) {
        let Ok(mut b) = self.board.lock() else { return };
        let mut frame = String::new();
        if b.drawn > 0 {
            frame.push_str(&format!("\x1b[{}A\r\x1b[J", b.drawn));
        }
        for r in b.rows.iter_mut() {
            if !r.printed && matches!(r.state, RowState::Done { .. } | RowState::Failed(_)) {
                r.printed = true;
                frame.push_str(&self.fit(&format!("  {}", finished_text(r))));
                frame.push('\n');
            }
        }
        let mut drawn = 0;
        if !last {
            for r in b.rows.iter() {
                if let RowState::Pulling(_) = r.state {
                    frame.push_str(&self.fit(&format!("  {}", live_text(r))));
                    frame.push('\n');
                    drawn += 1;
                }
            }
            let waiting = b
                .rows
                .iter()
                .filter(|r| matches!(r.state, RowState::Waiting))
                .count();
            let done: u64 = b.rows.iter().map(|r| r.done).sum();
            let total: u64 = b.rows.iter().filter_map(|r| r.total).sum();
            let finished = b
                .rows
                .iter()
                .filter(|r| matches!(r.state, RowState::Done { .. } | RowState::Failed(_)))
                .count();
            frame.push_str(&self.fit(&format!(
                "  {finished}/{} blobs, {} of {}{}",
                b.rows.len(),
                human(done),
                human(total),
                if waiting > 0 {
                    format!(", {waiting} waiting")
                } else {
                    String::new()
                }
            )));
            frame.push('\n');
            drawn += 1;
        }
        b.drawn = drawn;
        drop(b);
        if !frame.is_empty() {
            Self::write(&frame);
        }
    }

    /// The image is done: every row stays on screen, the live area goes.
    pub(super) fn end(&self) {
        if self.mode == Mode::Bars {
            self.draw(true);
        }
        if let Ok(mut b) = self.board.lock() {
            b.rows.clear();
            b.drawn = 0;
        }
    }
}

/// `sha256:` and 12 hex digits.
pub(super) fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn live_text(r: &Row) -> String {
    match r.total {
        Some(total) if total > 0 => {
            let filled = ((r.done.min(total) as f64 / total as f64) * BAR as f64) as usize;
            format!(
                "{} [{}{}] {} / {}",
                r.label,
                "#".repeat(filled),
                "-".repeat(BAR - filled),
                human(r.done),
                human(total)
            )
        }
        _ => format!("{} {}", r.label, human(r.done)),
    }
}

fn finished_text(r: &Row) -> String {
    match &r.state {
        RowState::Done { cached: true, .. } => {
            format!("{} {:>10}  cached", r.label, human(r.done))
        }
        RowState::Done {
            cached: false,
            secs,
        } => {
            format!("{} {:>10}  pulled in {secs:.1}s", r.label, human(r.done))
        }
        RowState::Failed(e) => format!("{} FAILED: {e}", r.label),
        _ => r.label.clone(),
    }
}
