//! DNS over UDP and TCP (RFC 1035): one exchange per query id, with the
//! query name and type, the response code and the answer count.

use std::collections::HashMap;

use llmslo_schema::{Direction, DnsQuery, ErrorKind, Exchange, ExchangeError, Protocol};

use crate::exchange_end::EndCause;
use crate::{Flow, StreamEnd};

/// Queries waiting for a response; beyond this the oldest is given up.
const MAX_PENDING_QUERIES: usize = 256;
/// Largest DNS message over TCP (its length prefix is 16 bits).
const MAX_TCP_MESSAGE_BYTES: usize = 65_535;

/// The header and first question of a DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub is_response: bool,
    pub response_code: u8,
    pub answers: u16,
    pub name: String,
    pub query_type: u16,
}

/// Parses a DNS message; returns `None` when it is too short or its first
/// question is malformed.
pub fn parse_message(bytes: &[u8]) -> Option<DnsMessage> {
    if bytes.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let flags = u16::from_be_bytes([bytes[2], bytes[3]]);
    let questions = u16::from_be_bytes([bytes[4], bytes[5]]);
    let answers = u16::from_be_bytes([bytes[6], bytes[7]]);
    if questions == 0 {
        return None;
    }
    let (name, end) = read_name(bytes, 12)?;
    let query_type = u16::from_be_bytes([*bytes.get(end)?, *bytes.get(end + 1)?]);
    Some(DnsMessage {
        id,
        is_response: flags & 0x8000 != 0,
        response_code: (flags & 0x000f) as u8,
        answers,
        name,
        query_type,
    })
}

/// Reads a possibly compressed name at `start`; returns it and the offset
/// after it in the message.
fn read_name(bytes: &[u8], start: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut pos = start;
    let mut end = None;
    // Each pointer must go backwards, which bounds the loop and rejects
    // pointer cycles.
    let mut limit = start;
    loop {
        let length = *bytes.get(pos)?;
        match length & 0xc0 {
            0x00 if length == 0 => {
                return Some((name, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label = bytes.get(pos + 1..pos + 1 + usize::from(length))?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
                if name.len() > 255 {
                    return None;
                }
                pos += 1 + usize::from(length);
            }
            0xc0 => {
                let target =
                    usize::from(u16::from_be_bytes([length, *bytes.get(pos + 1)?]) & 0x3fff);
                if target >= limit {
                    return None;
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

fn query_type_name(query_type: u16) -> String {
    let name = match query_type {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        other => return format!("TYPE{other}"),
    };
    name.to_owned()
}

fn response_code_name(code: u8) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        other => return format!("RCODE{other}"),
    };
    name.to_owned()
}

/// Parser of one DNS socket (UDP) or connection (TCP).
#[derive(Debug)]
pub struct DnsConnection {
    tcp: bool,
    /// Partial TCP messages per flow: [egress, ingress].
    tcp_buffers: [Vec<u8>; 2],
    /// Timestamp of the first byte of the partial TCP message per flow.
    tcp_first_ts_ns: [u64; 2],
    pending: HashMap<u16, Exchange>,
    order: Vec<u16>,
    completed: Vec<Exchange>,
    pub unparsed_bytes: u64,
}

impl DnsConnection {
    pub fn new(tcp: bool) -> Self {
        Self {
            tcp,
            tcp_buffers: [Vec::new(), Vec::new()],
            tcp_first_ts_ns: [0; 2],
            pending: HashMap::new(),
            order: Vec::new(),
            completed: Vec::new(),
            unparsed_bytes: 0,
        }
    }

    pub fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        if !self.tcp {
            self.on_message(flow, ts_ns, ts_ns, tid, bytes);
            return;
        }

        // DNS over TCP: each message follows a two-byte length.
        let index = usize::from(flow == Flow::Ingress);
        let mut buffer = std::mem::take(&mut self.tcp_buffers[index]);
        if buffer.is_empty() {
            self.tcp_first_ts_ns[index] = ts_ns;
        }
        buffer.extend_from_slice(bytes);
        let mut start = 0;
        while buffer.len() - start >= 2 {
            let length = usize::from(u16::from_be_bytes([buffer[start], buffer[start + 1]]));
            if buffer.len() - start - 2 < length {
                break;
            }
            let message = buffer[start + 2..start + 2 + length].to_vec();
            let first_ts_ns = self.tcp_first_ts_ns[index];
            self.on_message(flow, first_ts_ns, ts_ns, tid, &message);
            self.tcp_first_ts_ns[index] = ts_ns;
            start += 2 + length;
        }
        buffer.drain(..start);
        if buffer.len() > MAX_TCP_MESSAGE_BYTES + 2 {
            self.unparsed_bytes += buffer.len() as u64;
            buffer.clear();
        }
        self.tcp_buffers[index] = buffer;
    }

    /// Handles one message whose first byte arrived at `first_ts_ns` and
    /// last byte at `ts_ns`.
    fn on_message(&mut self, flow: Flow, first_ts_ns: u64, ts_ns: u64, tid: u32, bytes: &[u8]) {
        let Some(message) = parse_message(bytes) else {
            self.unparsed_bytes += bytes.len() as u64;
            return;
        };

        if !message.is_response {
            if self.pending.len() >= MAX_PENDING_QUERIES && !self.order.is_empty() {
                let oldest = self.order.remove(0);
                self.complete(oldest, None, EndCause::Unanswered);
            }
            let exchange = Exchange {
                tid,
                direction: match flow {
                    Flow::Egress => Direction::Outbound,
                    Flow::Ingress => Direction::Inbound,
                },
                protocol: Protocol::Dns,
                t0_ns: first_ts_ns,
                request_bytes: bytes.len() as u64,
                dns: Some(DnsQuery {
                    name: message.name,
                    query_type: query_type_name(message.query_type),
                    response_code: None,
                    answers: 0,
                }),
                ..Exchange::default()
            };
            // A retransmitted query keeps the first one's t0.
            if let std::collections::hash_map::Entry::Vacant(entry) = self.pending.entry(message.id)
            {
                entry.insert(exchange);
                self.order.push(message.id);
            }
            return;
        }

        let Some(exchange) = self.pending.get_mut(&message.id) else {
            self.unparsed_bytes += bytes.len() as u64;
            return;
        };
        let same_question = exchange
            .dns
            .as_ref()
            .is_some_and(|dns| dns.name == message.name);
        if !same_question {
            // A response to another query with the same id (or a spoofed
            // one) does not answer this query.
            self.unparsed_bytes += bytes.len() as u64;
            return;
        }
        exchange.response_bytes += bytes.len() as u64;
        if let Some(dns) = exchange.dns.as_mut() {
            dns.response_code = Some(response_code_name(message.response_code));
            dns.answers = message.answers;
        }
        if message.response_code != 0 && message.response_code != 3 {
            // NXDOMAIN is an answer; SERVFAIL, REFUSED and the rest are
            // failures of the server.
            exchange.error = Some(ExchangeError {
                kind: ErrorKind::ServerError,
                provider_code: Some(response_code_name(message.response_code)),
            });
        }
        exchange.ttfb_us = Some(first_ts_ns.saturating_sub(exchange.t0_ns) / 1000);
        self.order.retain(|id| *id != message.id);
        self.complete(message.id, Some(ts_ns), EndCause::Complete);
    }

    fn complete(&mut self, id: u16, end_ns: Option<u64>, cause: EndCause) {
        let Some(mut exchange) = self.pending.remove(&id) else {
            return;
        };
        if let Some(end) = end_ns {
            exchange.e2e_us = Some(end.saturating_sub(exchange.t0_ns) / 1000);
        }
        if exchange.error.is_none() {
            exchange.error = cause.error();
        }
        self.completed.push(exchange);
    }

    pub fn on_gap(&mut self, flow: Flow) {
        if self.tcp {
            // The length prefixes can no longer be trusted.
            let index = usize::from(flow == Flow::Ingress);
            self.unparsed_bytes += self.tcp_buffers[index].len() as u64;
            self.tcp_buffers[index].clear();
        }
    }

    /// Ends the queries still waiting for an answer when the socket ends at
    /// `ts_ns`. The end of a TCP connection cuts them off. A UDP socket
    /// that its owner closed can receive no answer, so the resolver gave up
    /// on its queries then; other ends of a UDP socket change nothing.
    pub fn on_end(&mut self, ts_ns: u64, end: StreamEnd) {
        let (end_ns, cause) = match (self.tcp, end) {
            (true, StreamEnd::Reset) => (None, EndCause::Reset { by_client: false }),
            (true, _) => (None, EndCause::Closed { by_client: false }),
            (false, StreamEnd::Closed) => (Some(ts_ns), EndCause::Closed { by_client: true }),
            (false, _) => return,
        };
        for id in std::mem::take(&mut self.order) {
            self.complete(id, end_ns, cause);
        }
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.completed)
    }

    pub fn finish(&mut self) -> Vec<Exchange> {
        for id in std::mem::take(&mut self.order) {
            self.complete(id, None, EndCause::Unanswered);
        }
        self.take_exchanges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, query_type: u16) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&query_type.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out
    }

    #[test]
    fn closed_udp_socket_ends_its_queries() {
        let mut dns = DnsConnection::new(false);
        dns.on_data(Flow::Egress, 1_000_000, 7, &query(1, "api.openai.com", 1));
        dns.on_end(900_000, StreamEnd::PeerClosed);
        assert!(
            dns.take_exchanges().is_empty(),
            "only a close ends UDP queries"
        );

        dns.on_end(5_001_000_000, StreamEnd::Closed);
        let exchanges = dns.take_exchanges();
        assert_eq!(exchanges.len(), 1);
        assert_eq!(exchanges[0].e2e_us, Some(5_000_000));
        let error = exchanges[0].error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::ClientAborted);
        assert!(dns.finish().is_empty());
    }

    #[test]
    fn query_and_compressed_answer() {
        let request = query(0x1234, "api.OpenAI.com", 1);
        let message = parse_message(&request).unwrap();
        assert_eq!(message.name, "api.openai.com");
        assert!(!message.is_response);

        let mut response = request.clone();
        response[2] = 0x81;
        response[3] = 0x80;
        response[7] = 1;
        // Answer: pointer to the question name, A, IN, TTL, 4-byte address.
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        let message = parse_message(&response).unwrap();
        assert!(message.is_response);
        assert_eq!(message.answers, 1);
        assert_eq!(message.response_code, 0);
    }

    #[test]
    fn pointer_loops_are_rejected() {
        let mut message = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_message(&message).is_none());
    }

    #[test]
    fn truncated_messages_are_rejected() {
        let request = query(7, "example.com", 28);
        for end in 0..request.len() - 2 {
            assert!(parse_message(&request[..end]).is_none(), "length {end}");
        }
    }
}
