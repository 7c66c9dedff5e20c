//! Synthetic records and probe results for the analysis tests.
//!
//! A [`Scenario`] builds what a probe would report for a chat service.
//! Each inbound request checks a policy (OPA), queries PostgreSQL and
//! streams a completion from an LLM provider. Jitter is seeded, and
//! optional faults slow one component for a share of requests.

use llmslo_schema::{
    Connection, DbCall, Direction, ErrorKind, Exchange, ExchangeError, HttpExchange, LlmCall,
    Outcome, ProbeInfo, ProbeResult, Protocol, TargetProcess, TokenSource, TokenUsage, Window,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::records::{CallRecord, Endpoint, Role};
use crate::collection::{Collection, NodeCollection, WorkloadIdentity};

/// Builds a minimal outbound LLM call record.
pub fn record(id: u64, ttft_us: u64, e2e_us: u64) -> CallRecord {
    CallRecord {
        id: format!("n/{id}"),
        node: "n".into(),
        pid: 1,
        tid: 1,
        comm: None,
        workload: None,
        direction: Direction::Outbound,
        protocol: Protocol::Http1,
        role: Role::Dependency,
        component: "provider".into(),
        endpoint: Endpoint::default(),
        provider: Some("openai".into()),
        model: Some("gpt-4o".into()),
        request_model: Some("gpt-4o".into()),
        response_model: None,
        operation: Some("chat".into()),
        streaming: Some(true),
        start_unix_ns: 0,
        start_offset_ms: 0.0,
        ttfb_us: Some(ttft_us),
        ttft_us: Some(ttft_us),
        ttft_source: None,
        e2e_us: Some(e2e_us),
        itl_count: 0,
        itl_p50_us: None,
        itl_max_us: None,
        tpot_us: None,
        input_tokens: None,
        output_tokens: None,
        token_source: None,
        tokens_per_sec: None,
        status: Some(200),
        error: None,
        in_flight: false,
        unmeasured: None,
        trace_id: None,
        parent_span_id: None,
        server_port: None,
        missing_bytes: 0,
        link: None,
        decomposition: None,
        t0_ns: id * 10_000_000_000,
        itl_us: Vec::new(),
        event_stream: false,
        dns_resolved: None,
        failed_connect: None,
        socket: None,
    }
}

/// Extra latency in one component for a share of requests.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// `guardrail`, `retrieval`, `provider_ttft`, `provider_decode` (per
    /// token) or `service`.
    pub component: &'static str,
    pub extra_ms: f64,
    /// Share of requests affected, from 0 to 1.
    pub fraction: f64,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub requests: usize,
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// Requests overlap on one thread, so links by time are ambiguous.
    pub concurrent: bool,
    /// Requests and their calls carry `traceparent`.
    pub traced: bool,
    /// Share of inbound requests that fail because the provider returned
    /// HTTP 429.
    pub rate_limited_fraction: f64,
    /// Share of exchanges with bytes the probe did not see.
    pub lossy_fraction: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            requests: 200,
            seed: 1,
            faults: Vec::new(),
            concurrent: false,
            traced: false,
            rate_limited_fraction: 0.0,
            lossy_fraction: 0.0,
        }
    }
}

const MS: u64 = 1_000_000;
const PID: u32 = 4242;
const OUTPUT_TOKENS: u64 = 100;

struct Builder {
    exchanges: Vec<Exchange>,
    next_id: u64,
}

impl Builder {
    fn push(&mut self, mut exchange: Exchange) {
        exchange.id = self.next_id;
        self.next_id += 1;
        self.exchanges.push(exchange);
    }
}

fn http_exchange(
    direction: Direction,
    tid: u32,
    t0_ns: u64,
    e2e_ms: f64,
    server: &str,
    path: &str,
) -> Exchange {
    Exchange {
        pid: PID,
        tid,
        direction,
        protocol: Protocol::Http1,
        connection: Connection {
            fd: 7,
            peer: Some(format!("10.0.0.{}:{}", path.len() % 250, 8000 + path.len())),
            server_name: Some(server.to_owned()),
            ..Connection::default()
        },
        t0_ns,
        ttfb_us: Some((e2e_ms * 1000.0) as u64),
        e2e_us: Some((e2e_ms * 1000.0) as u64),
        http: Some(HttpExchange {
            method: "POST".into(),
            path: path.into(),
            status: Some(200),
            ..HttpExchange::default()
        }),
        ..Exchange::default()
    }
}

fn llm_call(ttft_ms: f64, e2e_ms: f64) -> LlmCall {
    LlmCall {
        provider: "openai".into(),
        api: "chat.completions".into(),
        operation: "chat".into(),
        request_model: Some("gpt-4o-mini".into()),
        streaming: true,
        ttft_us: Some((ttft_ms * 1000.0) as u64),
        itl_us: vec![((e2e_ms - ttft_ms) * 1000.0 / OUTPUT_TOKENS as f64) as u64; 5],
        tpot_us: Some((e2e_ms - ttft_ms) * 1000.0 / (OUTPUT_TOKENS - 1) as f64),
        content_events: OUTPUT_TOKENS as u32,
        usage: TokenUsage {
            input_tokens: Some(50),
            output_tokens: Some(OUTPUT_TOKENS),
            source: TokenSource::Provider,
            ..TokenUsage::default()
        },
        terminated: true,
        ..LlmCall::default()
    }
}

impl Scenario {
    fn extra(&self, component: &str, rng: &mut ChaCha8Rng) -> f64 {
        self.faults
            .iter()
            .filter(|fault| fault.component == component)
            .map(|fault| {
                if rng.random::<f64>() < fault.fraction {
                    fault.extra_ms
                } else {
                    0.0
                }
            })
            .sum()
    }

    /// Builds the probe result of one node serving `requests` inbound
    /// requests.
    pub fn result(&self) -> ProbeResult {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let jitter = |rng: &mut ChaCha8Rng, base: f64| base * (0.8 + 0.4 * rng.random::<f64>());
        let mut builder = Builder {
            exchanges: Vec::new(),
            next_id: 1,
        };
        let start_ns = 1_000 * MS;
        let spacing_ns = if self.concurrent {
            200 * MS
        } else {
            4_000 * MS
        };

        for i in 0..self.requests {
            let t0 = start_ns + i as u64 * spacing_ns;
            let tid = if self.concurrent {
                100
            } else {
                100 + (i % 4) as u32
            };
            let trace_id = format!("{:032x}", i + 1);

            let mut at = t0 + (jitter(&mut rng, 5.0) * MS as f64) as u64;
            let guardrail_ms = jitter(&mut rng, 20.0) + self.extra("guardrail", &mut rng);
            let mut guardrail = http_exchange(
                Direction::Outbound,
                tid,
                at,
                guardrail_ms,
                "opa",
                "/v1/data/chat/allow",
            );
            at += (guardrail_ms * MS as f64) as u64 + MS;

            let retrieval_ms = jitter(&mut rng, 40.0) + self.extra("retrieval", &mut rng);
            let mut retrieval = Exchange {
                pid: PID,
                tid,
                direction: Direction::Outbound,
                protocol: Protocol::Postgres,
                connection: Connection {
                    fd: 8,
                    peer: Some("10.0.0.5:5432".into()),
                    ..Connection::default()
                },
                t0_ns: at,
                ttfb_us: Some((retrieval_ms * 1000.0) as u64),
                e2e_us: Some((retrieval_ms * 1000.0) as u64),
                db: Some(DbCall {
                    system: "postgresql".into(),
                    operation: "SELECT".into(),
                }),
                ..Exchange::default()
            };
            at += (retrieval_ms * MS as f64) as u64 + MS;

            let service_ms = jitter(&mut rng, 10.0) + self.extra("service", &mut rng);
            at += (service_ms * MS as f64) as u64;

            let ttft_ms = jitter(&mut rng, 300.0) + self.extra("provider_ttft", &mut rng);
            let decode_ms = OUTPUT_TOKENS as f64
                * (jitter(&mut rng, 20.0) + self.extra("provider_decode", &mut rng));
            let provider_e2e_ms = ttft_ms + decode_ms;
            let mut provider = http_exchange(
                Direction::Outbound,
                tid,
                at,
                provider_e2e_ms,
                "api.openai.com",
                "/v1/chat/completions",
            );
            provider.ttfb_us = Some((ttft_ms * 1000.0) as u64);
            provider.llm = Some(llm_call(ttft_ms, provider_e2e_ms));
            let rate_limited = rng.random::<f64>() < self.rate_limited_fraction;
            if rate_limited {
                if let Some(http) = provider.http.as_mut() {
                    http.status = Some(429);
                }
                provider.error = Some(ExchangeError {
                    kind: ErrorKind::RateLimited,
                    provider_code: Some("rate_limit_exceeded".into()),
                });
            }

            let inbound_ttft_ms = (at - t0) as f64 / MS as f64 + ttft_ms + 2.0;
            let inbound_e2e_ms = (at - t0) as f64 / MS as f64 + provider_e2e_ms + 3.0;
            let mut inbound = http_exchange(
                Direction::Inbound,
                tid,
                t0,
                inbound_e2e_ms,
                "chat-api",
                "/v1/chat/completions",
            );
            inbound.ttfb_us = Some((inbound_ttft_ms * 1000.0) as u64);
            inbound.llm = Some(llm_call(inbound_ttft_ms, inbound_e2e_ms));
            if rate_limited {
                if let Some(http) = inbound.http.as_mut() {
                    http.status = Some(502);
                }
                inbound.error = Some(ExchangeError {
                    kind: ErrorKind::HttpStatus,
                    provider_code: None,
                });
            }
            if rng.random::<f64>() < self.lossy_fraction {
                inbound.missing_bytes = 512;
            }

            if self.traced {
                for exchange in [&mut inbound, &mut guardrail, &mut retrieval, &mut provider] {
                    exchange.trace = Some(llmslo_schema::TraceContext {
                        trace_id: trace_id.clone(),
                        parent_span_id: "00f067aa0ba902b7".into(),
                        sampled: true,
                        tracestate: None,
                    });
                }
            }
            builder.push(inbound);
            builder.push(guardrail);
            builder.push(retrieval);
            builder.push(provider);
        }

        let end_ns = start_ns + self.requests as u64 * spacing_ns + 120_000 * MS;
        let mut result = ProbeResult::new(ProbeInfo {
            version: "0.1.0".into(),
            node: "worker-1".into(),
            kernel_release: "6.18.0".into(),
        });
        result.window = Window {
            requested_ms: (end_ns - start_ns) / MS,
            start_ns,
            end_ns,
            unix_offset_ns: 1_780_000_000_000_000_000,
        };
        result.processes = vec![TargetProcess {
            pid: PID,
            comm: "python3".into(),
            cgroup_id: 77,
            container_id: Some("c".repeat(64)),
            pod_uid: Some("0b1c2d3e-0000-4000-8000-000000000001".into()),
            ..TargetProcess::default()
        }];
        result.exchanges = builder.exchanges;
        result.probe_usage.events = 10_000;
        result.outcome = Outcome::default();
        result
    }

    /// Builds a one-node collection with the chat workload's identity.
    pub fn collection(&self) -> Collection {
        Collection {
            run_id: "run-test".into(),
            nodes: vec![NodeCollection {
                node: "worker-1".into(),
                result: Some(self.result()),
                failure: None,
            }],
            workloads: vec![WorkloadIdentity {
                namespace: "prod".into(),
                pod: "chat-api-7d9f-abcde".into(),
                pod_uid: "0b1c2d3e-0000-4000-8000-000000000001".into(),
                container: "api".into(),
                container_id: "c".repeat(64),
                runtime: "containerd".into(),
                node: "worker-1".into(),
                owners: vec![
                    "ReplicaSet/chat-api-7d9f".into(),
                    "Deployment/chat-api".into(),
                ],
            }],
            skipped: Vec::new(),
        }
    }
}
