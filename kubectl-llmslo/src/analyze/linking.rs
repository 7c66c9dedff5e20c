//! Links outbound calls to the inbound request they serve.
//!
//! The W3C `traceparent` trace id that the call shares with an inbound
//! request comes first. Otherwise the candidates are the inbound requests
//! of the same process whose window contains the call's start. Those on
//! the call's thread are preferred when there are any, because synchronous
//! servers handle one request per thread. When several requests remain, the link is ambiguous: the call
//! goes to the most recently started candidate for the point estimate,
//! and the decomposition's bounds consider every candidate.

use std::collections::HashMap;

use serde::Serialize;

use super::intervals::Interval;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMethod {
    /// Same `traceparent` trace id.
    TraceContext,
    /// Same thread, and the call started inside the request.
    Thread,
    /// Same process, and the call started inside the request.
    Process,
    /// No inbound request of the process was in flight.
    Unlinked,
}

/// Link of one outbound call to the request it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub method: LinkMethod,
    /// Id of the request the call is counted for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Requests that could have made the call; more than one means the
    /// link is ambiguous.
    pub candidates: usize,
    /// Indices of the candidate requests in the record list.
    #[serde(skip)]
    pub candidate_indices: Vec<usize>,
    #[serde(skip)]
    pub request_index: Option<usize>,
}

impl Link {
    pub fn is_ambiguous(&self) -> bool {
        self.candidates > 1
    }
}

/// An inbound request in the form the linker uses.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    pub index: usize,
    pub node: String,
    pub pid: u32,
    pub tid: u32,
    pub window: Interval,
    pub trace_id: Option<String>,
}

/// Candidate requests per process, sorted by start.
pub struct Linker {
    by_process: HashMap<(String, u32), Vec<RequestSpan>>,
}

impl Linker {
    pub fn new(mut requests: Vec<RequestSpan>) -> Self {
        requests.sort_by_key(|request| (request.window.start_ns, request.index));
        let mut by_process: HashMap<(String, u32), Vec<RequestSpan>> = HashMap::new();
        for request in requests {
            by_process
                .entry((request.node.clone(), request.pid))
                .or_default()
                .push(request);
        }
        Self { by_process }
    }

    /// Links a call that started at `start_ns` on thread `tid` of process
    /// `pid`.
    pub fn link(
        &self,
        node: &str,
        pid: u32,
        tid: u32,
        start_ns: u64,
        trace_id: Option<&str>,
        request_ids: &dyn Fn(usize) -> String,
    ) -> Link {
        let Some(requests) = self.by_process.get(&(node.to_owned(), pid)) else {
            return unlinked();
        };

        if let Some(trace_id) = trace_id {
            let same_trace: Vec<&RequestSpan> = requests
                .iter()
                .filter(|request| request.trace_id.as_deref() == Some(trace_id))
                .collect();
            if !same_trace.is_empty() {
                return choose(LinkMethod::TraceContext, &same_trace, start_ns, request_ids);
            }
        }

        // A request with another trace id did not make this call.
        let containing: Vec<&RequestSpan> = requests
            .iter()
            .filter(|request| {
                request.window.start_ns <= start_ns && start_ns <= request.window.end_ns
            })
            .filter(|request| match (trace_id, request.trace_id.as_deref()) {
                (Some(call), Some(request)) => call == request,
                _ => true,
            })
            .collect();
        if containing.is_empty() {
            return unlinked();
        }
        let same_thread: Vec<&RequestSpan> = containing
            .iter()
            .copied()
            .filter(|request| request.tid == tid)
            .collect();
        if same_thread.is_empty() {
            choose(LinkMethod::Process, &containing, start_ns, request_ids)
        } else {
            choose(LinkMethod::Thread, &same_thread, start_ns, request_ids)
        }
    }
}

fn unlinked() -> Link {
    Link {
        method: LinkMethod::Unlinked,
        request_id: None,
        candidates: 0,
        candidate_indices: Vec::new(),
        request_index: None,
    }
}

/// Picks the candidate that started last before the call: with
/// concurrent requests it is as good a guess as any, and it is the right
/// one for a request that is handled start to end before the next.
fn choose(
    method: LinkMethod,
    candidates: &[&RequestSpan],
    start_ns: u64,
    request_ids: &dyn Fn(usize) -> String,
) -> Link {
    let chosen = candidates
        .iter()
        .filter(|request| request.window.start_ns <= start_ns)
        .max_by_key(|request| (request.window.start_ns, request.index))
        .or_else(|| candidates.first())
        .map(|request| request.index);
    Link {
        method,
        request_id: chosen.map(request_ids),
        candidates: candidates.len(),
        candidate_indices: candidates.iter().map(|request| request.index).collect(),
        request_index: chosen,
    }
}

/// Counts of how outbound calls were linked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkingSummary {
    /// Outbound calls and connection attempts considered.
    pub calls: usize,
    pub by_trace_context: usize,
    pub by_thread: usize,
    pub by_process: usize,
    /// Links with more than one candidate request.
    pub ambiguous: usize,
    pub unlinked: usize,
}

impl LinkingSummary {
    pub fn add(&mut self, link: &Link) {
        self.calls += 1;
        match link.method {
            LinkMethod::TraceContext => self.by_trace_context += 1,
            LinkMethod::Thread => self.by_thread += 1,
            LinkMethod::Process => self.by_process += 1,
            LinkMethod::Unlinked => self.unlinked += 1,
        }
        if link.is_ambiguous() {
            self.ambiguous += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        index: usize,
        tid: u32,
        start_ns: u64,
        end_ns: u64,
        trace: Option<&str>,
    ) -> RequestSpan {
        RequestSpan {
            index,
            node: "n".into(),
            pid: 10,
            tid,
            window: Interval::new(start_ns, end_ns),
            trace_id: trace.map(str::to_owned),
        }
    }

    fn ids(index: usize) -> String {
        format!("n/{index}")
    }

    #[test]
    fn trace_id_wins_over_time() {
        let linker = Linker::new(vec![
            span(0, 1, 0, 1000, Some("aaaa")),
            span(1, 1, 0, 1000, Some("bbbb")),
        ]);
        let link = linker.link("n", 10, 1, 500, Some("bbbb"), &ids);
        assert_eq!(link.method, LinkMethod::TraceContext);
        assert_eq!(link.request_index, Some(1));
        assert!(!link.is_ambiguous());
    }

    #[test]
    fn same_thread_narrows_candidates() {
        let linker = Linker::new(vec![span(0, 1, 0, 1000, None), span(1, 2, 100, 1000, None)]);
        let link = linker.link("n", 10, 2, 500, None, &ids);
        assert_eq!(link.method, LinkMethod::Thread);
        assert_eq!(link.request_index, Some(1));
        assert_eq!(link.request_id.as_deref(), Some("n/1"));
        assert_eq!(link.candidates, 1);
    }

    #[test]
    fn concurrent_requests_make_ambiguous_link() {
        let linker = Linker::new(vec![span(0, 1, 0, 1000, None), span(1, 1, 100, 1000, None)]);
        let link = linker.link("n", 10, 1, 500, None, &ids);
        assert_eq!(link.method, LinkMethod::Thread);
        assert!(link.is_ambiguous());
        assert_eq!(link.request_index, Some(1));
        assert_eq!(link.candidate_indices.len(), 2);
    }

    #[test]
    fn other_trace_ids_are_not_candidates() {
        let linker = Linker::new(vec![
            span(0, 1, 0, 1000, Some("aaaa")),
            span(1, 1, 0, 1000, None),
        ]);
        let link = linker.link("n", 10, 1, 500, Some("cccc"), &ids);
        assert_eq!(link.request_index, Some(1));
        assert_eq!(link.candidates, 1);
    }

    #[test]
    fn call_outside_every_request_is_unlinked() {
        let linker = Linker::new(vec![span(0, 1, 0, 1000, None)]);
        assert_eq!(
            linker.link("n", 10, 1, 2000, None, &ids).method,
            LinkMethod::Unlinked
        );
        assert_eq!(
            linker.link("n", 11, 1, 500, None, &ids).method,
            LinkMethod::Unlinked
        );
        assert_eq!(
            linker.link("m", 10, 1, 500, None, &ids).method,
            LinkMethod::Unlinked
        );
    }

    #[test]
    fn summary_counts_ambiguity() {
        let linker = Linker::new(vec![span(0, 1, 0, 1000, None), span(1, 1, 100, 1000, None)]);
        let mut summary = LinkingSummary::default();
        summary.add(&linker.link("n", 10, 1, 500, None, &ids));
        summary.add(&linker.link("n", 10, 1, 50, None, &ids));
        summary.add(&linker.link("n", 10, 1, 5000, None, &ids));
        assert_eq!(summary.calls, 3);
        assert_eq!(summary.ambiguous, 1);
        assert_eq!(summary.unlinked, 1);
        assert_eq!(summary.by_thread, 2);
    }
}
