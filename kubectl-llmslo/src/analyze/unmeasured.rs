//! Data quality notes for a run that found no request to measure: what the
//! probe did see, and what to try next.

use std::collections::BTreeMap;

use llmslo_schema::{Direction, Protocol};

use super::{
    DataQuality,
    records::{CallRecord, Role},
};

/// At most this many destinations are listed; the rest are counted.
const MAX_DESTINATIONS: usize = 5;

/// Returns the notes for a run whose scope is `None`: the traffic seen
/// (outbound calls by protocol and server, health checks, unreadable
/// connections, unparsed bytes, kernel events) and the next step to try.
pub fn explain(records: &[CallRecord], quality: &DataQuality) -> Vec<String> {
    let mut notes = Vec::new();
    let outbound: Vec<&CallRecord> = records
        .iter()
        .filter(|record| record.direction == Direction::Outbound)
        .collect();
    let excluded = records
        .iter()
        .filter(|record| record.role == Role::Excluded)
        .count();

    if records.is_empty() {
        notes.push(describe_empty_window(quality));
    }
    if !outbound.is_empty() {
        notes.push(format!(
            "no request was measured because none of the {} outbound calls the probe saw is an \
             LLM API call: {}",
            outbound.len(),
            summarize_destinations(&outbound)
        ));
    }
    if excluded > 0 {
        notes.push(format!(
            "{excluded} inbound health checks or metrics scrapes were seen; they are left out \
             of the SLIs"
        ));
    }
    notes.push(
        "next: probe the pid of the process that serves the requests (its inbound requests \
         are measured), name an LLM gateway or self-hosted model server with \
         --provider NAME=HOST, or run longer (--duration) while the process handles traffic"
            .to_owned(),
    );
    notes
}

fn describe_empty_window(quality: &DataQuality) -> String {
    let mut seen = Vec::new();
    if quality.opaque_connections > 0 {
        seen.push(format!(
            "{} connections whose traffic it could not read",
            quality.opaque_connections
        ));
    }
    if quality.drops.unparsed_bytes > 0 {
        seen.push(format!(
            "{} bytes it could not parse",
            quality.drops.unparsed_bytes
        ));
    }
    if seen.is_empty() {
        format!(
            "the probe saw no HTTP, PostgreSQL, Redis or DNS exchange of the target in the window \
             ({} kernel events read); check that the pid is the process that does the work",
            quality.events
        )
    } else {
        format!(
            "the probe saw no complete exchange of the target, only {}",
            seen.join(" and ")
        )
    }
}

/// Lists calls per protocol and server, the most frequent first, such as
/// `48 HTTP/1.1 calls to 127.0.0.1`.
fn summarize_destinations(calls: &[&CallRecord]) -> String {
    let mut counts: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    for call in calls {
        let server = call
            .endpoint
            .server
            .clone()
            .unwrap_or_else(|| "an unknown server".to_owned());
        *counts
            .entry((protocol_name(&call.protocol), server))
            .or_default() += 1;
    }
    let mut sorted: Vec<_> = counts.into_iter().collect();
    sorted.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));

    let mut parts: Vec<String> = sorted
        .iter()
        .take(MAX_DESTINATIONS)
        .map(|((protocol, server), count)| format!("{count} {protocol} calls to {server}"))
        .collect();
    if sorted.len() > MAX_DESTINATIONS {
        parts.push(format!(
            "{} more destinations",
            sorted.len() - MAX_DESTINATIONS
        ));
    }
    parts.join(", ")
}

fn protocol_name(protocol: &Protocol) -> &'static str {
    match protocol {
        Protocol::Http1 => "HTTP/1.1",
        Protocol::Http2 => "HTTP/2",
        Protocol::Postgres => "PostgreSQL",
        Protocol::Redis => "Redis",
        Protocol::Dns => "DNS",
    }
}
