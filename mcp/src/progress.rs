//! `notifications/progress` for one tool call: sent only when the call carried a
//! `_meta.progressToken`, always increasing, out of [`TOTAL`] (the whole call in percent).
//! The stages are the core's events ([`compress::Progress`]: the walk, the model load,
//! keyword ranking, model scoring with done/total, tokens and time left, the fine stage,
//! assembly); between events, ticks say the last stage is still going on, so that clients
//! (which time out after 60 s without news by default) keep waiting.

use std::future::Future;
use std::time::{Duration, Instant};

use ctxzip_scoring::compress;
use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RequestContext};
use tokio::sync::mpsc;

/// Progress runs from 0 to this: the percentage of the whole call.
pub const TOTAL: f64 = 100.0;

/// How long a waiting call stays silent at most before it reports that it is still working.
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

    /// Whether the call asked for progress (the core is given no sink otherwise).
    pub fn is_on(&self) -> bool {
        self.token.is_some()
    }

    /// Reports a core event.
    pub async fn event(&mut self, event: &compress::Progress) {
        self.report(f64::from(event.percentage()), event.message())
            .await;
    }

    /// Reports `progress` (of [`TOTAL`]); a value not above the last one is nudged up,
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
            .with_total(TOTAL)
            .with_message(message.into());
        // A client that went away cannot be told; the call's result will not reach it either.
        let _ = self.peer.notify_progress(param).await;
    }

    /// Reports the end of the call: all of [`TOTAL`].
    pub async fn done(&mut self, message: String) {
        self.report(TOTAL, message).await;
    }

    /// Awaits `work`, a stage with no events of its own (`current`), with ticks.
    pub async fn wait<F: Future>(&mut self, current: compress::Progress, work: F) -> F::Output {
        let (_, no_events) = mpsc::unbounded_channel();
        self.follow(current, no_events, work).await
    }

    /// Awaits `work`, reporting each event that arrives on `events` as it comes and, after
    /// [`TICK`] without one, that the last one's stage is still going on (`current` until
    /// an event comes: the stage the call is in, already reported or about to be).
    pub async fn follow<F: Future>(
        &mut self,
        current: compress::Progress,
        mut events: mpsc::UnboundedReceiver<compress::Progress>,
        work: F,
    ) -> F::Output {
        let mut last = current;
        let mut since = Instant::now();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        let mut open = true;
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => {
                    // The work sent its last events before it ended: report them too.
                    while let Ok(event) = events.try_recv() {
                        self.event(&event).await;
                    }
                    return output;
                }
                event = events.recv(), if open => match event {
                    Some(event) => {
                        self.event(&event).await;
                        last = event;
                        since = Instant::now();
                        ticks.reset();
                    }
                    None => open = false,
                },
                _ = ticks.tick() => {
                    let secs = since.elapsed().as_secs_f64();
                    let message = format!("{} ({secs:.0} s)", last.message());
                    self.report(f64::from(last.percentage()), message).await;
                }
            }
        }
    }
}
