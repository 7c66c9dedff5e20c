//! HTTP/1.x request and response heads: finding where a head ends without
//! rescanning it, and reading the few header fields llmslo uses with
//! `httparse`.

use llmslo_schema::{Exchange, HttpExchange, Protocol, RateLimit};
use thiserror::Error;

use super::body::Framing;
use crate::llm::RequestTarget;

/// Maximum head size kept. A longer head is treated as lost framing.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header lines parsed per head before `httparse` reports too many.
const MAX_HEADERS: usize = 128;

#[derive(Debug, Error)]
pub enum HeadError {
    #[error("HTTP head longer than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid HTTP head: {0}")]
    Invalid(#[from] httparse::Error),
    #[error("HTTP head ended before its start line")]
    Incomplete,
    #[error("invalid Content-Length")]
    InvalidContentLength,
}

/// Bytes of one head collected across reads.
#[derive(Debug, Default)]
pub struct HeadBuffer {
    bytes: Vec<u8>,
}

impl HeadBuffer {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends bytes until the blank line that ends the head. Returns how
    /// many input bytes were taken and whether the head is now complete.
    ///
    /// Each byte is examined once: the end is found from the new bytes and
    /// the last two bytes already kept.
    ///
    /// # Errors
    ///
    /// Returns [`HeadError::TooLarge`] when no end is found within
    /// [`MAX_HEAD_BYTES`].
    pub fn push(&mut self, input: &[u8]) -> Result<(usize, bool), HeadError> {
        let mut previous = [
            self.bytes.len().checked_sub(2).map(|i| self.bytes[i]),
            self.bytes.last().copied(),
        ];
        let mut end = None;
        for (i, &byte) in input.iter().enumerate() {
            if byte == b'\n' {
                let blank_lf = previous[1] == Some(b'\n');
                let blank_crlf = previous[1] == Some(b'\r') && previous[0] == Some(b'\n');
                if blank_lf || blank_crlf {
                    end = Some(i + 1);
                    break;
                }
            }
            previous = [previous[1], Some(byte)];
        }

        let taken = end.unwrap_or(input.len());
        if self.bytes.len() + taken > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        self.bytes.extend_from_slice(&input[..taken]);
        Ok((taken, end.is_some()))
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// Request head fields that llmslo reads.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query_keys: Vec<String>,
    /// `Host` without the port.
    pub host: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub expect_continue: bool,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl RequestHead {
    /// Starts the record of the exchange this head opens, with the head's
    /// method, path, query keys, trace context and server name. The caller
    /// adds timing and framing.
    pub fn start_exchange(&self, protocol: Protocol) -> Exchange {
        let mut exchange = Exchange {
            protocol,
            http: Some(HttpExchange {
                method: self.method.clone(),
                path: self.path.clone(),
                query_keys: self.query_keys.clone(),
                ..HttpExchange::default()
            }),
            trace: crate::trace::parse(self.traceparent.as_deref(), self.tracestate.as_deref()),
            ..Exchange::default()
        };
        exchange.connection.server_name = self.host.clone();
        exchange
    }

    /// Returns the destination that names the request's provider and API
    /// format.
    pub fn target(&self, port: Option<u16>) -> RequestTarget<'_> {
        RequestTarget {
            host: self.host.as_deref(),
            port,
            method: &self.method,
            path: &self.path,
        }
    }

    /// Parses a complete request head.
    ///
    /// # Errors
    ///
    /// Returns [`HeadError`] when `httparse` rejects the head or a framing
    /// header is invalid.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeadError> {
        let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if request.parse(bytes)?.is_partial() {
            return Err(HeadError::Incomplete);
        }

        let target = request.path.unwrap_or("/");
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut head = RequestHead {
            method: request.method.unwrap_or_default().to_owned(),
            path: path_of_target(path).to_owned(),
            query_keys: query.map(query_keys).unwrap_or_default(),
            ..RequestHead::default()
        };
        if let Some(authority) = authority_of_target(path) {
            head.host = Some(host_without_port(authority));
        }

        for header in request.headers.iter() {
            head.apply_header(header.name, trimmed_str(header.value))?;
        }
        Ok(head)
    }

    /// Builds the head of an HTTP/2 request from its pseudo-header fields
    /// and its other fields.
    ///
    /// # Errors
    ///
    /// Returns [`HeadError::InvalidContentLength`] for an invalid
    /// `content-length` field.
    pub fn from_fields(
        method: &str,
        target: &str,
        authority: Option<&str>,
        fields: &[(String, String)],
    ) -> Result<Self, HeadError> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut head = RequestHead {
            method: method.to_owned(),
            path: path.to_owned(),
            query_keys: query.map(query_keys).unwrap_or_default(),
            host: authority.map(host_without_port),
            ..RequestHead::default()
        };
        for (name, value) in fields {
            head.apply_header(name, Some(value.trim()))?;
        }
        Ok(head)
    }

    fn apply_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case("host") {
            if self.host.is_none() {
                self.host = value.map(host_without_port);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            self.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.chunked = value.is_some_and(ends_with_chunked);
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = value.is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        } else if name.eq_ignore_ascii_case("content-type") {
            self.content_type = value.map(media_type);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            self.content_encoding = value.map(str::to_ascii_lowercase);
        } else if name.eq_ignore_ascii_case("traceparent") {
            self.traceparent = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("tracestate") {
            self.tracestate = value.map(str::to_owned);
        }
        Ok(())
    }

    /// Framing of the request body (RFC 9112, section 6.3): chunked, then
    /// `Content-Length`, otherwise no body.
    pub fn body_framing(&self) -> Framing {
        if self.chunked {
            Framing::chunked()
        } else {
            Framing::length(self.content_length.unwrap_or(0))
        }
    }
}

/// Response head fields that llmslo reads.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: Option<u64>,
    pub transfer_encoding: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Raw `Retry-After` value: delay seconds or an HTTP date.
    pub retry_after: Option<String>,
    /// Raw `Date` value, the reference for an HTTP-date `Retry-After`.
    pub date: Option<String>,
    /// Rate-limit headers as (lowercase name, value); only numeric and
    /// duration values of `x-ratelimit-*` and `anthropic-ratelimit-*`.
    pub rate_limit_headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Parses a complete response head.
    ///
    /// # Errors
    ///
    /// Returns [`HeadError`] when `httparse` rejects the head or a framing
    /// header is invalid.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeadError> {
        let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        if response.parse(bytes)?.is_partial() {
            return Err(HeadError::Incomplete);
        }

        let mut head = ResponseHead {
            status: response.code.unwrap_or_default(),
            ..ResponseHead::default()
        };
        for header in response.headers.iter() {
            head.apply_header(header.name, trimmed_str(header.value))?;
        }
        Ok(head)
    }

    /// Builds the head of an HTTP/2 response from its `:status` and its
    /// other fields.
    ///
    /// # Errors
    ///
    /// Returns [`HeadError::InvalidContentLength`] for an invalid
    /// `content-length` field.
    pub fn from_fields(status: u16, fields: &[(String, String)]) -> Result<Self, HeadError> {
        let mut head = ResponseHead {
            status,
            ..ResponseHead::default()
        };
        for (name, value) in fields {
            head.apply_header(name, Some(value.trim()))?;
        }
        Ok(head)
    }

    fn apply_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case("content-length") {
            self.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = value.map(str::to_ascii_lowercase);
        } else if name.eq_ignore_ascii_case("content-type") {
            self.content_type = value.map(media_type);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            self.content_encoding = value.map(str::to_ascii_lowercase);
        } else if name.eq_ignore_ascii_case("retry-after") {
            self.retry_after = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("date") {
            self.date = value.map(str::to_owned);
        } else if is_rate_limit_header(name)
            && let Some(value) = value
        {
            self.rate_limit_headers
                .push((name.to_ascii_lowercase(), value.to_owned()));
        }
        Ok(())
    }

    /// Returns the `Retry-After` delay in seconds. An HTTP date is measured
    /// from the response's own `Date`, because the parser has no wall
    /// clock; without `Date` such a value gives `None`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        let value = self.retry_after.as_deref()?;
        if let Ok(secs) = value.parse::<u64>() {
            return Some(secs);
        }
        let retry_at = httpdate::parse_http_date(value).ok()?;
        let sent_at = httpdate::parse_http_date(self.date.as_deref()?).ok()?;
        let delay = retry_at.duration_since(sent_at).unwrap_or_default();
        Some(delay.as_secs())
    }

    /// Collects the request and token limits of OpenAI and Azure OpenAI
    /// (`x-ratelimit-*`) and Anthropic (`anthropic-ratelimit-*`) headers.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let mut limit = RateLimit::default();
        for (name, value) in &self.rate_limit_headers {
            let Ok(number) = value.parse::<u64>() else {
                continue;
            };
            let field = match name.as_str() {
                "x-ratelimit-limit-requests" | "anthropic-ratelimit-requests-limit" => {
                    &mut limit.limit_requests
                }
                "x-ratelimit-remaining-requests" | "anthropic-ratelimit-requests-remaining" => {
                    &mut limit.remaining_requests
                }
                "x-ratelimit-limit-tokens" | "anthropic-ratelimit-tokens-limit" => {
                    &mut limit.limit_tokens
                }
                "x-ratelimit-remaining-tokens" | "anthropic-ratelimit-tokens-remaining" => {
                    &mut limit.remaining_tokens
                }
                _ => continue,
            };
            *field = Some(number);
        }
        (limit != RateLimit::default()).then_some(limit)
    }

    /// True for 1xx responses other than 101, which precede the final one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Framing of the response body (RFC 9112, section 6.3).
    /// `request_method` is the method of the request it responds to.
    pub fn body_framing(&self, request_method: &str) -> Framing {
        let no_body = request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304;
        if no_body {
            return Framing::length(0);
        }
        if let Some(coding) = &self.transfer_encoding {
            return if ends_with_chunked(coding) {
                Framing::chunked()
            } else {
                Framing::UntilClose
            };
        }
        match self.content_length {
            Some(length) => Framing::length(length),
            None => Framing::UntilClose,
        }
    }
}

fn is_rate_limit_header(name: &str) -> bool {
    let lower_prefix = |prefix: &str| {
        name.len() > prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    lower_prefix("x-ratelimit-") || lower_prefix("anthropic-ratelimit-")
}

fn trimmed_str(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok().map(str::trim)
}

fn parse_content_length(value: Option<&str>) -> Result<u64, HeadError> {
    // Repeated identical values ("5, 5") are allowed by RFC 9110.
    let value = value.ok_or(HeadError::InvalidContentLength)?;
    let mut parsed = None;
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeadError::InvalidContentLength);
        }
        let length: u64 = part.parse().map_err(|_| HeadError::InvalidContentLength)?;
        if parsed.is_some_and(|previous| previous != length) {
            return Err(HeadError::InvalidContentLength);
        }
        parsed = Some(length);
    }
    parsed.ok_or(HeadError::InvalidContentLength)
}

fn ends_with_chunked(coding: &str) -> bool {
    coding
        .rsplit(',')
        .next()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// Media type without parameters, lowercase: `text/event-stream`.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn host_without_port(authority: &str) -> String {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep what is inside the brackets.
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host.to_ascii_lowercase()
}

/// Authority of an absolute-form request target (`http://host/path`), as
/// sent to forward proxies.
fn authority_of_target(target: &str) -> Option<&str> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

fn path_of_target(target: &str) -> &str {
    match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => target,
    }
}

/// Names of query parameters; values are dropped because they may carry
/// keys (`?key=` for Gemini, `?api-key=` for some gateways).
fn query_keys(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        for offset in 0..=head.len() {
            let mut buffer = HeadBuffer::default();
            let (first, done) = buffer.push(&head[..offset]).unwrap();
            let (taken, complete) = if done {
                (first, true)
            } else {
                let (second, complete) = buffer.push(&head[offset..]).unwrap();
                (first + second, complete)
            };
            assert!(complete, "split at {offset}");
            assert_eq!(taken, head.len() - 4, "split at {offset}");
        }
    }

    #[test]
    fn head_end_with_bare_lf() {
        let mut buffer = HeadBuffer::default();
        let (taken, complete) = buffer.push(b"HTTP/1.1 200 OK\nA: b\n\nrest").unwrap();
        assert!(complete);
        assert_eq!(taken, 22);
    }

    #[test]
    fn head_too_large() {
        let mut buffer = HeadBuffer::default();
        let line = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert!(matches!(buffer.push(&line), Err(HeadError::TooLarge)));
    }

    #[test]
    fn request_target_and_query_keys() {
        let head = RequestHead::parse(
            b"POST /v1beta/models/gemini-2.0-flash:generateContent?key=SECRET&alt=sse HTTP/1.1\r\nHost: Example.COM:443\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.path, "/v1beta/models/gemini-2.0-flash:generateContent");
        assert_eq!(head.query_keys, ["key", "alt"]);
        assert_eq!(head.host.as_deref(), Some("example.com"));
    }

    #[test]
    fn absolute_form_target() {
        let head =
            RequestHead::parse(b"GET http://proxy.test:8080/a/b?x=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(head.path, "/a/b");
        assert_eq!(head.host.as_deref(), Some("proxy.test"));
    }

    #[test]
    fn ipv6_host() {
        let head = RequestHead::parse(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").unwrap();
        assert_eq!(head.host.as_deref(), Some("::1"));
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(parse_content_length(Some("12")).unwrap(), 12);
        assert_eq!(parse_content_length(Some("7, 7")).unwrap(), 7);
        assert!(parse_content_length(Some("7, 8")).is_err());
        assert!(parse_content_length(Some("-1")).is_err());
        assert!(parse_content_length(Some("+1")).is_err());
        assert!(parse_content_length(Some("99999999999999999999999")).is_err());
    }

    #[test]
    fn response_framing_rules() {
        let parse = |bytes: &[u8]| ResponseHead::parse(bytes).unwrap();
        let chunked = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(chunked.body_framing("GET"), Framing::chunked());
        let length = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(length.body_framing("GET"), Framing::length(5));
        assert_eq!(length.body_framing("HEAD"), Framing::length(0));
        let no_content = parse(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(no_content.body_framing("GET"), Framing::length(0));
        let not_modified = parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(not_modified.body_framing("GET"), Framing::length(0));
        let until_close = parse(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(until_close.body_framing("GET"), Framing::UntilClose);
        let interim = parse(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(interim.is_interim());
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let parse = |bytes: &[u8]| ResponseHead::parse(bytes).unwrap();
        let seconds = parse(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\n\r\n");
        assert_eq!(seconds.retry_after_secs(), Some(120));
        let date = parse(
            b"HTTP/1.1 503 Service Unavailable\r\nDate: Thu, 03 Dec 2026 10:00:00 GMT\r\nRetry-After: Thu, 03 Dec 2026 10:01:30 GMT\r\n\r\n",
        );
        assert_eq!(date.retry_after_secs(), Some(90));
        let past = parse(
            b"HTTP/1.1 503 Service Unavailable\r\nDate: Thu, 03 Dec 2026 10:00:00 GMT\r\nRetry-After: Thu, 03 Dec 2026 09:00:00 GMT\r\n\r\n",
        );
        assert_eq!(past.retry_after_secs(), Some(0));
        let no_date = parse(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: Thu, 03 Dec 2026 10:01:30 GMT\r\n\r\n");
        assert_eq!(no_date.retry_after_secs(), None);
        let invalid = parse(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: soon\r\n\r\n");
        assert_eq!(invalid.retry_after_secs(), None);
    }

    #[test]
    fn rate_limits_of_openai_and_anthropic() {
        let openai = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nx-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-requests: 9999\r\nx-ratelimit-limit-tokens: 200000\r\nx-ratelimit-remaining-tokens: 199975\r\nx-ratelimit-reset-requests: 8.64s\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            openai.rate_limit(),
            Some(RateLimit {
                limit_requests: Some(10000),
                remaining_requests: Some(9999),
                limit_tokens: Some(200000),
                remaining_tokens: Some(199975),
            })
        );
        let anthropic = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nanthropic-ratelimit-requests-limit: 4000\r\nanthropic-ratelimit-tokens-remaining: 399000\r\n\r\n",
        )
        .unwrap();
        let limit = anthropic.rate_limit().unwrap();
        assert_eq!(limit.limit_requests, Some(4000));
        assert_eq!(limit.remaining_tokens, Some(399000));
        assert_eq!(limit.remaining_requests, None);
        let none = ResponseHead::parse(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(none.rate_limit(), None);
    }

    #[test]
    fn rate_limit_headers_kept_by_name() {
        let head = ResponseHead::parse(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nx-ratelimit-remaining-requests: 0\r\nauthorization: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.retry_after.as_deref(), Some("7"));
        assert_eq!(
            head.rate_limit_headers,
            [("x-ratelimit-remaining-requests".to_owned(), "0".to_owned())]
        );
    }
}
