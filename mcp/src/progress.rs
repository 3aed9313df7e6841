//! `notifications/progress` for one tool call: sent only when the call carried a
//! `_meta.progressToken`, always increasing, with ticks while long work runs so that clients
//! (which time out after 60 s without news by default) keep waiting.

use std::future::Future;
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RequestContext};

/// Stages of a compress call; progress runs from 0 to this.
pub const TOTAL_STAGES: f64 = 3.0;

/// How often a waiting call reports that it is still working.
pub const TICK: Duration = Duration::from_secs(2);

pub struct Progress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    last: f64,
}

impl Progress {
    pub fn new(ctx: &RequestContext<RoleServer>) -> Progress {
        Progress {
            peer: ctx.peer.clone(),
            token: ctx.meta.get_progress_token(),
            last: f64::NEG_INFINITY,
        }
    }

    /// Reports `progress` (of [`TOTAL_STAGES`]); a value not above the last one is nudged up,
    /// since the protocol requires progress to increase.
    pub async fn report(&mut self, progress: f64, message: impl Into<String>) {
        let Some(token) = &self.token else { return };
        let progress = if progress > self.last {
            progress
        } else {
            self.last + 1e-3
        };
        self.last = progress;
        let param = ProgressNotificationParam::new(token.clone(), progress)
            .with_total(TOTAL_STAGES)
            .with_message(message.into());
        // A client that went away cannot be told; the call's result will not reach it either.
        let _ = self.peer.notify_progress(param).await;
    }

    /// Awaits `work`, reporting every [`TICK`] between `stage` and `stage + 1` that `what` is
    /// still going on.
    pub async fn tick_while<F: Future>(&mut self, stage: f64, what: &str, work: F) -> F::Output {
        let started = Instant::now();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                _ = ticks.tick() => {
                    let secs = started.elapsed().as_secs_f64();
                    // Approaches the next stage without reaching it, however long this takes.
                    let fraction = secs / (secs + 10.0);
                    self.report(stage + fraction, format!("{what} ({secs:.0} s)")).await;
                }
            }
        }
    }
}
