//! The CLI's stage line: the core's progress events ([`Progress`]) as one line on stderr that
//! rewrites itself, shown only when stderr is a terminal (a pipe or a log file gets nothing
//! extra) and never with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use ctxzip_scoring::compress::Progress;

/// A terminal line that shows the latest event; a no-op when disabled.
pub struct StageLine {
    /// `None` when the line is off.
    state: Option<Mutex<LineState>>,
}

struct LineState {
    started: Instant,
    /// Something is on the line that [`StageLine::clear`] must erase.
    shown: bool,
}

impl StageLine {
    /// On when stderr is a terminal and `quiet` is not set.
    pub fn for_stderr(quiet: bool) -> StageLine {
        let on = !quiet && std::io::stderr().is_terminal();
        StageLine {
            state: on.then(|| {
                Mutex::new(LineState {
                    started: Instant::now(),
                    shown: false,
                })
            }),
        }
    }

    /// Whether events are shown at all.
    pub fn is_on(&self) -> bool {
        self.state.is_some()
    }

    /// Shows `event` in place of the previous one, e.g.
    /// `ctxzip [ 45%  12 s] scoring candidates with the model: 12/24 candidates, ...`.
    pub fn show(&self, event: &Progress) {
        let Some(state) = &self.state else { return };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let line = format!(
            "ctxzip [{:>3}% {:>3} s] {}",
            event.percentage(),
            state.started.elapsed().as_secs(),
            event.message()
        );
        // Carriage return and erase-line: the line is redrawn in place, however long the
        // previous one was. A failed write to stderr only loses the line.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        state.shown = true;
    }

    /// Erases the line, so that what is printed next starts at the left margin.
    pub fn clear(&self) {
        let Some(state) = &self.state else { return };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if state.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            state.shown = false;
        }
    }
}

impl Drop for StageLine {
    /// An error return leaves no half line before its message.
    fn drop(&mut self) {
        self.clear();
    }
}
