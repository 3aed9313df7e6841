//! Stage progress of one compress request, as data: the one event stream every shell turns
//! into its own protocol (the CLI's stderr line, the LSP's `$/progress`, MCP's
//! `notifications/progress`).
//!
//! The pipeline reports its own stages ([`Stage::Candidates`], [`Stage::Scoring`],
//! [`Stage::Fine`], [`Stage::Assembly`]) through the sink given to
//! [`super::compress_with_progress`]; the stages before it (the walk, the model load) are the
//! shell's, reported with the same type so that a listener sees one stream. Nothing is
//! computed for a call that has no sink.

use std::time::Duration;

use serde::Serialize;

/// Where a request is, in the order a first query passes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Walking and chunking the workspace (`done`/`total` files when known).
    Walk,
    /// Loading the model (a first request waits for it).
    Load,
    /// Counting tokens and ranking every chunk by BM25 to pick the model's candidates.
    Candidates,
    /// The model scores the candidates (`done`/`total` candidates).
    Scoring,
    /// The model reads the kept functions to prune them to blocks (`done`/`total` passes).
    Fine,
    /// Fitting the budget exactly and rendering the output.
    Assembly,
}

impl Stage {
    /// The stage's share of a whole request, as the start and end of its span in percent.
    /// Model work (scoring, then the fine stage's two passes) is what a first query waits
    /// for, one to three minutes on a CPU, so it gets most of the bar.
    fn span(self) -> (f64, f64) {
        match self {
            Stage::Walk => (0.0, 5.0),
            Stage::Load => (5.0, 10.0),
            Stage::Candidates => (10.0, 15.0),
            Stage::Scoring => (15.0, 75.0),
            Stage::Fine => (75.0, 95.0),
            Stage::Assembly => (95.0, 100.0),
        }
    }

    /// What the stage does, in words, as every surface prints it.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Walk => "reading the workspace",
            Stage::Load => "loading the model",
            Stage::Candidates => "ranking chunks by keywords",
            Stage::Scoring => "scoring candidates with the model",
            Stage::Fine => "pruning kept functions",
            Stage::Assembly => "assembling the context",
        }
    }

    /// What `done` and `total` count in this stage.
    fn unit(self) -> &'static str {
        match self {
            Stage::Walk => "files",
            Stage::Load | Stage::Candidates | Stage::Assembly => "",
            Stage::Scoring => "candidates",
            Stage::Fine => "passes",
        }
    }
}

/// One progress event: a stage and how far it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Progress {
    pub stage: Stage,
    /// Items of the stage done so far (see [`Stage`] for what an item is); 0 at its start.
    pub done: usize,
    /// Items of the stage in all; 0 when the stage does not count items.
    pub total: usize,
    /// Tokens the model decoded for this request so far (cached results cost none).
    pub model_tokens: usize,
    /// Time the stage still needs, from the model's measured speed on this request; `None`
    /// before any speed was measured.
    #[serde(rename = "eta_ms", serialize_with = "millis")]
    pub eta: Option<Duration>,
}

fn millis<S: serde::Serializer>(eta: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match eta {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl Progress {
    /// The start of `stage`, nothing done yet.
    pub fn start(stage: Stage) -> Progress {
        Progress {
            stage,
            done: 0,
            total: 0,
            model_tokens: 0,
            eta: None,
        }
    }

    /// How far the whole request is, 0–100: the stage's span, filled by `done / total`.
    /// Never decreases along one request's events, since stages come in order.
    pub fn percentage(&self) -> u32 {
        let (from, to) = self.stage.span();
        let within = if self.total == 0 {
            0.0
        } else {
            (self.done as f64 / self.total as f64).min(1.0)
        };
        (from + (to - from) * within).floor() as u32
    }

    /// The event in words, e.g. `scoring candidates with the model: 8/24 candidates, 2048
    /// model tokens, about 40 s left`.
    pub fn message(&self) -> String {
        let mut message = self.stage.describe().to_string();
        let mut parts = Vec::new();
        if self.total > 0 {
            let unit = self.stage.unit();
            parts.push(if unit.is_empty() {
                format!("{}/{}", self.done, self.total)
            } else {
                format!("{}/{} {unit}", self.done, self.total)
            });
        }
        if self.model_tokens > 0 {
            parts.push(format!("{} model tokens", self.model_tokens));
        }
        if let Some(eta) = self.eta {
            parts.push(format!("about {} s left", eta.as_secs_f64().ceil() as u64));
        }
        if !parts.is_empty() {
            message.push_str(": ");
            message.push_str(&parts.join(", "));
        }
        message
    }
}

/// Where a request's events go: called on the thread that runs the request, so it should
/// only hand the event on (a channel, a terminal line).
pub type ProgressSink<'a> = &'a (dyn Fn(&Progress) + Sync);

/// The time `remaining_tokens` still take at the speed measured so far (`decoded_tokens` in
/// `elapsed`); `None` until the model has decoded something, and when nothing is left.
pub fn eta(decoded_tokens: usize, elapsed: Duration, remaining_tokens: usize) -> Option<Duration> {
    if decoded_tokens == 0 || elapsed.is_zero() || remaining_tokens == 0 {
        return None;
    }
    let tokens_per_s = decoded_tokens as f64 / elapsed.as_secs_f64();
    Some(Duration::from_secs_f64(
        remaining_tokens as f64 / tokens_per_s,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_fills_each_stage_span_in_order() {
        let stages = [
            Stage::Walk,
            Stage::Load,
            Stage::Candidates,
            Stage::Scoring,
            Stage::Fine,
            Stage::Assembly,
        ];
        let mut last = 0;
        for stage in stages {
            for done in 0..=4 {
                let p = Progress {
                    done,
                    total: 4,
                    ..Progress::start(stage)
                };
                assert!(p.percentage() >= last, "{p:?} went back from {last}");
                last = p.percentage();
            }
        }
        assert_eq!(last, 100);
        let half = Progress {
            done: 12,
            total: 24,
            ..Progress::start(Stage::Scoring)
        };
        assert_eq!(half.percentage(), 45);
    }

    #[test]
    fn message_names_the_stage_counts_tokens_and_time_left() {
        let p = Progress {
            stage: Stage::Scoring,
            done: 8,
            total: 24,
            model_tokens: 2048,
            eta: Some(Duration::from_millis(39_200)),
        };
        assert_eq!(
            p.message(),
            "scoring candidates with the model: 8/24 candidates, 2048 model tokens, about 40 s left"
        );
        assert_eq!(
            Progress::start(Stage::Assembly).message(),
            "assembling the context"
        );
    }

    #[test]
    fn eta_divides_what_is_left_by_the_measured_speed() {
        assert_eq!(eta(0, Duration::from_secs(3), 100), None);
        assert_eq!(eta(200, Duration::from_secs(2), 0), None);
        assert_eq!(
            eta(200, Duration::from_secs(2), 300),
            Some(Duration::from_secs(3))
        );
    }
}
