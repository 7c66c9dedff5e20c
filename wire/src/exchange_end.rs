//! End causes of exchanges and the errors they imply.

use llmslo_schema::{ErrorKind, ExchangeError};

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
