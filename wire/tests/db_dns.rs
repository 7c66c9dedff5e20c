//! PostgreSQL and Redis fixtures captured from real servers and clients,
//! and DNS over UDP and TCP.

mod support;

use std::sync::Arc;

use llmslo_schema::{Direction, ErrorKind, Exchange, Protocol};
use llmslo_wire::{ConnectionInfo, Flow, ParserConfig};
use support::{Step, exchanges_of, replay};

const T0: u64 = 1_000_000_000;

fn operations(exchanges: &[Exchange]) -> Vec<&str> {
    exchanges
        .iter()
        .map(|e| e.db.as_ref().unwrap().operation.as_str())
        .collect()
}

#[test]
fn redis_resp3_pipeline() {
    let exchanges = exchanges_of("redis_resp3_pipeline");
    assert_eq!(
        operations(&exchanges),
        [
            "HELLO", "CLIENT", "CLIENT", "CLIENT", "SET", "GET", "HSET", "HGETALL", "INCRBY",
            "EXPIRE"
        ]
    );
    for exchange in &exchanges {
        assert_eq!(exchange.protocol, Protocol::Redis);
        assert_eq!(exchange.direction, Direction::Outbound);
        assert_eq!(exchange.db.as_ref().unwrap().system, "redis");
        assert_eq!(exchange.ttfb_us, Some(1_000));
        assert_eq!(exchange.e2e_us, Some(1_000));
    }

    // Redis 7.0 rejects CLIENT SETINFO, which redis-py sends after HELLO.
    let setinfo = &exchanges[1];
    assert_eq!(setinfo.error.as_ref().unwrap().kind, ErrorKind::ServerError);
    assert_eq!(
        setinfo.error.as_ref().unwrap().provider_code.as_deref(),
        Some("ERR")
    );

    let set = &exchanges[4];
    assert_eq!(set.t0_ns, T0 + 4_000_000);
    assert!(set.error.is_none());

    // The pipeline went out in one write and came back in one read.
    let pipeline = &exchanges[6..];
    assert!(pipeline.iter().all(|e| e.t0_ns == T0 + 8_000_000));
    let incr = &exchanges[8];
    let error = incr.error.as_ref().unwrap();
    assert_eq!(error.provider_code.as_deref(), Some("WRONGTYPE"));
    assert!(exchanges[9].error.is_none());

    let request_bytes: u64 = pipeline.iter().map(|e| e.request_bytes).sum();
    assert_eq!(request_bytes, 70 + 28 + 34 + 35);
}

#[test]
fn postgres_queries() {
    let exchanges = exchanges_of("postgres_queries");
    assert_eq!(
        operations(&exchanges),
        ["CREATE", "INSERT", "SELECT", "SELECT"]
    );
    for exchange in &exchanges {
        assert_eq!(exchange.protocol, Protocol::Postgres);
        assert_eq!(exchange.db.as_ref().unwrap().system, "postgresql");
        assert_eq!(exchange.ttfb_us, Some(1_000));
    }
    assert_eq!(exchanges[0].t0_ns, T0 + 4_000_000);
    assert!(exchanges[..3].iter().all(|e| e.error.is_none()));

    let missing = &exchanges[3];
    let error = missing.error.as_ref().expect("server error");
    assert_eq!(error.kind, ErrorKind::ServerError);
    assert_eq!(error.provider_code.as_deref(), Some("42P01"));
    // The error and ReadyForQuery arrived in two reads.
    assert_eq!(missing.e2e_us, Some(2_000));
}

/// Returns the `postgres_queries` steps from the client's first query on,
/// which is what a probe started after the connection's startup receives.
fn postgres_past_startup() -> (ConnectionInfo, Vec<Step>) {
    let fixture = support::load("postgres_queries");
    let first_query = fixture
        .steps
        .iter()
        .position(|step| matches!(step, Step::Data { bytes, .. } if bytes.first() == Some(&b'Q')))
        .expect("the fixture sends a simple query");
    (fixture.info, fixture.steps[first_query..].to_vec())
}

#[test]
fn postgres_met_past_startup() {
    let (mut info, steps) = postgres_past_startup();
    info.role = None;
    let exchanges = replay(&info, &steps, Arc::new(ParserConfig::default()));
    assert_eq!(
        operations(&exchanges),
        ["CREATE", "INSERT", "SELECT", "SELECT"]
    );
    for exchange in &exchanges {
        assert_eq!(exchange.protocol, Protocol::Postgres);
        assert_eq!(exchange.direction, Direction::Outbound);
        assert_eq!(exchange.ttfb_us, Some(1_000));
    }
    assert_eq!(exchanges[0].t0_ns, T0 + 4_000_000);
    let error = exchanges[3].error.as_ref().expect("server error");
    assert_eq!(error.provider_code.as_deref(), Some("42P01"));
}

#[test]
fn postgres_past_startup_server_side() {
    // The same bytes seen by the server process: the queries are read.
    let (mut info, mut steps) = postgres_past_startup();
    info.role = None;
    for step in &mut steps {
        if let Step::Data { flow, .. } = step {
            *flow = match flow {
                Flow::Egress => Flow::Ingress,
                Flow::Ingress => Flow::Egress,
            };
        }
    }
    let exchanges = replay(&info, &steps, Arc::new(ParserConfig::default()));
    assert_eq!(operations(&exchanges).len(), 4);
    assert!(exchanges.iter().all(|e| e.direction == Direction::Inbound));
}

#[test]
fn postgres_cycle_needs_unknown_start() {
    // A connection whose connect() the probe saw starts with its startup
    // message, so a query cycle first is not taken for PostgreSQL.
    let (info, steps) = postgres_past_startup();
    assert_eq!(info.role, Some(Direction::Outbound));
    let exchanges = replay(&info, &steps, Arc::new(ParserConfig::default()));
    assert!(exchanges.is_empty(), "{exchanges:?}");
}

#[test]
fn dns_udp() {
    let exchanges = exchanges_of("dns_udp");
    assert_eq!(exchanges.len(), 4);

    let aaaa = &exchanges[0];
    assert_eq!(aaaa.protocol, Protocol::Dns);
    let dns = aaaa.dns.as_ref().unwrap();
    assert_eq!(dns.name, "api.openai.com");
    assert_eq!(dns.query_type, "AAAA");
    assert_eq!(dns.response_code.as_deref(), Some("NOERROR"));
    assert_eq!(dns.answers, 0);
    assert_eq!(aaaa.e2e_us, Some(11_900));

    let a = &exchanges[1];
    let dns = a.dns.as_ref().unwrap();
    assert_eq!(dns.query_type, "A");
    assert_eq!(dns.answers, 3);
    assert_eq!(a.tid, 31);
    assert_eq!(a.e2e_us, Some(15_000));
    assert!(a.error.is_none());

    let servfail = &exchanges[2];
    assert_eq!(servfail.dns.as_ref().unwrap().name, "vector-db.internal");
    let error = servfail.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::ServerError);
    assert_eq!(error.provider_code.as_deref(), Some("SERVFAIL"));

    let nxdomain = &exchanges[3];
    assert_eq!(
        nxdomain.dns.as_ref().unwrap().response_code.as_deref(),
        Some("NXDOMAIN")
    );
    assert!(nxdomain.error.is_none());
}

#[test]
fn dns_tcp() {
    let exchanges = exchanges_of("dns_tcp");
    assert_eq!(exchanges.len(), 2);
    let names: Vec<&str> = exchanges
        .iter()
        .map(|e| e.dns.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "qdrant.default.svc.cluster.local",
            "redis.default.svc.cluster.local"
        ]
    );
    // The first query started in the first of its two writes.
    assert_eq!(exchanges[0].t0_ns, T0);
    assert_eq!(exchanges[0].ttfb_us, Some(4_000));
    assert_eq!(exchanges[0].e2e_us, Some(4_000));
    assert_eq!(exchanges[1].t0_ns, T0 + 1_000_000);
    assert_eq!(exchanges[1].e2e_us, Some(3_000));
    assert_eq!(exchanges[1].dns.as_ref().unwrap().answers, 1);
}
