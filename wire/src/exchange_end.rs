//! End causes of exchanges and the errors they imply.

use llmslo_schema::{ErrorKind, Exchange, ExchangeError};

use crate::llm::LlmTracker;

/// Cause that ended an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The response ended where its framing puts the end.
    Complete,
    /// The parser lost its place in the response. Timings are unknown, but
    /// nothing shows that the exchange failed.
    Lost,
    /// The connection closed before the response ended. `by_client` is true
    /// when the requesting side closed it.
    Closed { by_client: bool },
    /// The connection was reset before the response ended.
    Reset { by_client: bool },
    /// The window ended first.
    Unanswered,
}

impl EndCause {
    pub fn error(self) -> Option<ExchangeError> {
        let kind = match self {
            EndCause::Complete | EndCause::Lost => return None,
            EndCause::Closed { by_client: true } | EndCause::Reset { by_client: true } => {
                ErrorKind::ClientAborted
            }
            EndCause::Closed { by_client: false } | EndCause::Reset { by_client: false } => {
                ErrorKind::ConnectionReset
            }
            EndCause::Unanswered => ErrorKind::Unanswered,
        };
        Some(ExchangeError {
            kind,
            provider_code: None,
        })
    }
}

/// Maps an HTTP status to its error: 429 is `RateLimited`, any other
/// status of 400 and above is `HttpStatus`.
pub fn error_for_status(
    status: Option<u16>,
    provider_code: Option<String>,
) -> Option<ExchangeError> {
    let kind = match status? {
        429 => ErrorKind::RateLimited,
        400.. => ErrorKind::HttpStatus,
        _ => return None,
    };
    Some(ExchangeError {
        kind,
        provider_code,
    })
}

/// Completes an HTTP exchange: finishes its LLM call, sets E2E from the
/// terminal event or `end_ns` (the last response byte), and sets the
/// error. A status error wins over an end cause, which wins over a stream
/// error.
pub fn complete_exchange(
    mut exchange: Exchange,
    llm: Option<LlmTracker>,
    end_ns: Option<u64>,
    cause: EndCause,
) -> Exchange {
    let status = exchange.http.as_ref().and_then(|http| http.status);
    // A stream whose terminal event arrived is complete even when the
    // connection ends before the HTTP framing does: the OpenAI Python SDK
    // closes its connection after `data: [DONE]` without reading the last
    // chunk of the body, which over TLS often arrives in a record of its own.
    // Likewise after an error event: the SDKs raise on it and close the
    // connection, and the error event is what failed the call.
    let stream_ended = llm
        .as_ref()
        .is_some_and(|llm| llm.terminal_ns().is_some() || llm.saw_error_event());
    let cause = match cause {
        EndCause::Closed { .. } | EndCause::Reset { .. } if stream_ended => EndCause::Complete,
        other => other,
    };
    let complete = cause == EndCause::Complete;

    let mut terminal_ns = None;
    let mut stream_error = None;
    let mut provider_code = None;
    if let Some(llm) = llm {
        terminal_ns = llm.terminal_ns();
        let outcome = llm.finish(complete);
        stream_error = outcome.stream_error;
        provider_code = outcome.provider_code;
        exchange.llm = Some(outcome.call);
    }

    if complete {
        let end_ns = terminal_ns.or(end_ns);
        exchange.e2e_us = end_ns.map(|end| end.saturating_sub(exchange.t0_ns) / 1000);
    }

    exchange.error = error_for_status(status, provider_code)
        .or_else(|| cause.error())
        .or(stream_error);
    exchange
}
