//! Detection of observed calls that an application span already covers,
//! judged from the `traceparent` headers alone.
//!
//! An instrumented client starts a span for each call and writes that
//! span's id as the `parent-id` of the `traceparent` it sends. So an
//! outbound call covered by an application span carries a `parent-id`
//! that is its own: no inbound request of the process brought it in, and
//! no other outbound call of the process sent it. A process that only
//! forwards the `traceparent` it received sends the caller's `parent-id`,
//! and one span that wraps several calls gives them all the same
//! `parent-id`: neither counts as covered.
//!
//! An inbound request counts as covered when the process sent an outbound
//! call in the same trace under a `parent-id` of its own: the process
//! creates spans in that trace, so its server instrumentation has a span
//! for the request.
//!
//! # Caveats
//!
//! A client instrumentation that creates spans but does not inject
//! `traceparent` (or a call without any instrumentation) leaves nothing
//! on the wire, so such calls count as not covered. A span that wraps
//! exactly one call and injects its own id counts as covering it, even if
//! it is not an HTTP or GenAI client span.

use std::collections::HashMap;

use llmslo_schema::Direction;

use crate::analyze::records::{CallRecord, Role};

/// Returns, for each record, whether an application span covers it.
pub fn covered_by_app_span(records: &[CallRecord]) -> Vec<bool> {
    // Keyed by node and pid: a `parent-id` is only meaningful within the
    // process that sent or received it.
    let mut inbound_parents: HashMap<(&str, u32, &str), Vec<&str>> = HashMap::new();
    let mut outbound_parent_uses: HashMap<(&str, u32, &str), usize> = HashMap::new();
    for record in records {
        let (Some(trace_id), Some(parent)) = (&record.trace_id, &record.parent_span_id) else {
            continue;
        };
        match record.direction {
            Direction::Inbound => inbound_parents
                .entry((&record.node, record.pid, trace_id.as_str()))
                .or_default()
                .push(parent),
            Direction::Outbound => {
                *outbound_parent_uses
                    .entry((&record.node, record.pid, parent.as_str()))
                    .or_default() += 1;
            }
        }
    }

    let outbound_covered: Vec<bool> = records
        .iter()
        .map(|record| {
            let (Some(trace_id), Some(parent)) = (&record.trace_id, &record.parent_span_id) else {
                return false;
            };
            if record.direction != Direction::Outbound {
                return false;
            }
            let forwarded = inbound_parents
                .get(&(record.node.as_str(), record.pid, trace_id.as_str()))
                .is_some_and(|parents| parents.contains(&parent.as_str()));
            let shared = outbound_parent_uses
                .get(&(record.node.as_str(), record.pid, parent.as_str()))
                .is_some_and(|&uses| uses > 1);
            !forwarded && !shared
        })
        .collect();

    // Trace ids in which a process sent calls under a span of its own.
    let mut own_span_traces: HashMap<(&str, u32, &str), Vec<&str>> = HashMap::new();
    for record in records {
        if let (Direction::Outbound, Some(trace_id), Some(parent)) =
            (record.direction, &record.trace_id, &record.parent_span_id)
        {
            own_span_traces
                .entry((&record.node, record.pid, trace_id.as_str()))
                .or_default()
                .push(parent);
        }
    }

    records
        .iter()
        .zip(outbound_covered)
        .map(|(record, outbound_covered)| match record.direction {
            Direction::Outbound => outbound_covered,
            Direction::Inbound => {
                let (Some(trace_id), Some(parent)) = (&record.trace_id, &record.parent_span_id)
                else {
                    return false;
                };
                record.role == Role::Request
                    && own_span_traces
                        .get(&(record.node.as_str(), record.pid, trace_id.as_str()))
                        .is_some_and(|parents| parents.iter().any(|p| *p != parent))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::record;

    fn call(id: u64, direction: Direction, trace: Option<(&str, &str)>) -> CallRecord {
        let mut call = record(id, 1000, 2000);
        call.direction = direction;
        if direction == Direction::Inbound {
            call.role = Role::Request;
        }
        if let Some((trace_id, parent)) = trace {
            call.trace_id = Some(trace_id.to_owned());
            call.parent_span_id = Some(parent.to_owned());
        }
        call
    }

    #[test]
    fn own_client_span_covers_call() {
        let records = [
            call(1, Direction::Outbound, Some(("t1", "a1"))),
            call(2, Direction::Outbound, Some(("t2", "a2"))),
            call(3, Direction::Outbound, None),
        ];
        assert_eq!(covered_by_app_span(&records), [true, true, false]);
    }

    #[test]
    fn forwarded_parent_is_not_covered() {
        let records = [
            call(1, Direction::Inbound, Some(("t1", "up"))),
            call(2, Direction::Outbound, Some(("t1", "up"))),
        ];
        assert_eq!(covered_by_app_span(&records), [false, false]);
    }

    #[test]
    fn shared_parent_is_not_covered() {
        let records = [
            call(1, Direction::Outbound, Some(("t1", "wrap"))),
            call(2, Direction::Outbound, Some(("t1", "wrap"))),
        ];
        assert_eq!(covered_by_app_span(&records), [false, false]);
    }

    #[test]
    fn instrumented_server_covers_request() {
        let records = [
            call(1, Direction::Inbound, Some(("t1", "up"))),
            call(2, Direction::Outbound, Some(("t1", "own"))),
            call(3, Direction::Inbound, Some(("t2", "up2"))),
        ];
        assert_eq!(covered_by_app_span(&records), [true, true, false]);
    }

    #[test]
    fn other_process_does_not_count() {
        let mut inbound = call(1, Direction::Inbound, Some(("t1", "up")));
        inbound.pid = 2;
        let records = [inbound, call(2, Direction::Outbound, Some(("t1", "up")))];
        assert_eq!(covered_by_app_span(&records), [false, true]);
    }
}
