//! `$/progress` of one `ctxzip/compress` request: the core's stage events
//! ([`compress::Progress`]) as begin, report (message and percentage) and end, on the
//! request's own `workDoneToken`, else on a token the server creates when the client
//! supports work-done progress, else nowhere.

use ctxzip_scoring::compress::{self, Progress};
use tower_lsp_server::Client;
use tower_lsp_server::ls_types::ProgressToken;
use tower_lsp_server::{Bounded, NotCancellable, OngoingProgress};

/// What the client shows as the progress's title; the stage is the message.
pub const TITLE: &str = "ctxzip compress";

/// One request's progress; every method is a no-op when the client gets none.
pub struct RequestProgress {
    ongoing: Option<OngoingProgress<Bounded, NotCancellable>>,
}

impl RequestProgress {
    /// Begins progress on `token`; `None`: the client gets none.
    pub async fn begin(client: &Client, token: Option<ProgressToken>) -> RequestProgress {
        let ongoing = match token {
            Some(token) => Some(
                client
                    .progress(token, TITLE)
                    .with_percentage(0)
                    .with_message(compress::Stage::Walk.describe())
                    .begin()
                    .await,
            ),
            None => None,
        };
        RequestProgress { ongoing }
    }

    /// Whether the client is told anything (the core is given no sink otherwise).
    pub fn is_on(&self) -> bool {
        self.ongoing.is_some()
    }

    pub async fn report(&self, event: &Progress) {
        if let Some(ongoing) = &self.ongoing {
            ongoing
                .report_with_message(event.message(), event.percentage())
                .await;
        }
    }

    /// Ends the progress with `message` (the outcome: what was kept, or why it failed).
    pub async fn end(self, message: String) {
        if let Some(ongoing) = self.ongoing {
            ongoing.finish_with_message(message).await;
        }
    }
}
