//! Loads the connection fixtures of `tests/fixtures/wire` and replays them
//! through a `ConnectionParser`, whole or with reads split.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use llmslo_schema::{Direction, Exchange};
use llmslo_wire::{
    ConnectionInfo, ConnectionParser, Flow, ParserConfig, ParserStats, StreamEnd, Transport,
};

/// One call the probe makes on a parser.
#[derive(Debug, Clone)]
pub enum Step {
    Data {
        flow: Flow,
        ts_ns: u64,
        tid: u32,
        bytes: Vec<u8>,
    },
    Gap {
        flow: Flow,
        ts_ns: u64,
        missing_bytes: u64,
    },
    End {
        ts_ns: u64,
        end: StreamEnd,
    },
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub info: ConnectionInfo,
    pub steps: Vec<Step>,
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wire")
}

/// Names of every fixture file, without the `.txt` extension.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory exists")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".txt").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

pub fn load(name: &str) -> Fixture {
    let path = fixture_dir().join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    parse(name, &text)
}

fn parse(name: &str, text: &str) -> Fixture {
    let mut info = ConnectionInfo {
        transport: Transport::Tcp,
        role: None,
        local_port: None,
        peer_port: None,
        tls: false,
    };
    let mut steps = Vec::new();

    for (number, line) in text.lines().enumerate() {
        let context = || format!("{name}.txt line {}", number + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(payload) = line.strip_prefix('|') {
            let Some(Step::Data { bytes, .. }) = steps.last_mut() else {
                panic!("{}: payload outside a data step", context());
            };
            bytes.extend(unescape(payload).unwrap_or_else(|e| panic!("{}: {e}", context())));
            continue;
        }

        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["@", settings @ ..] => {
                for setting in settings {
                    let (key, value) = setting.split_once('=').expect("key=value");
                    match key {
                        "transport" => {
                            info.transport = if value == "udp" {
                                Transport::Udp
                            } else {
                                Transport::Tcp
                            }
                        }
                        "role" => {
                            info.role = Some(if value == "inbound" {
                                Direction::Inbound
                            } else {
                                Direction::Outbound
                            })
                        }
                        "local_port" => info.local_port = value.parse().ok(),
                        "peer_port" => info.peer_port = value.parse().ok(),
                        "tls" => info.tls = value == "true",
                        other => panic!("{}: unknown setting {other}", context()),
                    }
                }
            }
            [direction @ (">" | "<"), ts, rest @ ..] => steps.push(Step::Data {
                flow: flow_of(direction),
                ts_ns: ts.parse().expect("timestamp"),
                tid: rest.first().map_or(1, |tid| tid.parse().expect("tid")),
                bytes: Vec::new(),
            }),
            ["!", "gap", direction, ts, missing] => steps.push(Step::Gap {
                flow: flow_of(direction),
                ts_ns: ts.parse().expect("timestamp"),
                missing_bytes: missing.parse().expect("byte count"),
            }),
            ["!", "end", ts, kind] => steps.push(Step::End {
                ts_ns: ts.parse().expect("timestamp"),
                end: match *kind {
                    "peer_closed" => StreamEnd::PeerClosed,
                    "closed" => StreamEnd::Closed,
                    "reset" => StreamEnd::Reset,
                    other => panic!("{}: unknown end {other}", context()),
                },
            }),
            _ => panic!("{}: unreadable line", context()),
        }
    }

    Fixture {
        name: name.to_owned(),
        info,
        steps,
    }
}

fn flow_of(direction: &str) -> Flow {
    if direction == ">" {
        Flow::Egress
    } else {
        Flow::Ingress
    }
}

fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let high = bytes.next().ok_or("short \\x escape")?;
                let low = bytes.next().ok_or("short \\x escape")?;
                let hex = [high, low];
                let hex = std::str::from_utf8(&hex).map_err(|e| e.to_string())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
            }
            other => return Err(format!("unknown escape {other:?}")),
        }
    }
    Ok(out)
}

/// Replays steps through a new parser and returns every exchange, in the
/// order they completed, after `finish` one millisecond past the last step.
pub fn replay(info: &ConnectionInfo, steps: &[Step], config: Arc<ParserConfig>) -> Vec<Exchange> {
    let mut parser = ConnectionParser::new(info.clone(), config);
    let mut exchanges = Vec::new();
    let mut last_ts_ns = 0;
    for step in steps {
        match step {
            Step::Data {
                flow,
                ts_ns,
                tid,
                bytes,
            } => {
                parser.on_data(*flow, *ts_ns, *tid, bytes);
                last_ts_ns = *ts_ns;
            }
            Step::Gap {
                flow,
                ts_ns,
                missing_bytes,
            } => {
                parser.on_gap(*flow, *ts_ns, *missing_bytes);
                last_ts_ns = *ts_ns;
            }
            Step::End { ts_ns, end } => {
                parser.on_end(*ts_ns, *end);
                last_ts_ns = *ts_ns;
            }
        }
        exchanges.extend(parser.take_exchanges());
    }
    exchanges.extend(parser.finish(last_ts_ns + 1_000_000));
    exchanges
}

/// Replays a fixture and returns the parser's counters.
pub fn stats_after(fixture: &Fixture) -> ParserStats {
    let mut parser = ConnectionParser::new(fixture.info.clone(), Arc::new(ParserConfig::default()));
    for step in &fixture.steps {
        match step {
            Step::Data {
                flow,
                ts_ns,
                tid,
                bytes,
            } => parser.on_data(*flow, *ts_ns, *tid, bytes),
            Step::Gap {
                flow,
                ts_ns,
                missing_bytes,
            } => parser.on_gap(*flow, *ts_ns, *missing_bytes),
            Step::End { ts_ns, end } => parser.on_end(*ts_ns, *end),
        }
    }
    parser.stats()
}

/// Splits data step `index` in two at byte `offset`. Both halves keep the
/// step's timestamp and thread.
pub fn split_step(steps: &[Step], index: usize, offset: usize) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len() + 1);
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Data {
                flow,
                ts_ns,
                tid,
                bytes,
            } if i == index => {
                let (first, second) = bytes.split_at(offset);
                for part in [first, second] {
                    out.push(Step::Data {
                        flow: *flow,
                        ts_ns: *ts_ns,
                        tid: *tid,
                        bytes: part.to_vec(),
                    });
                }
            }
            _ => out.push(step.clone()),
        }
    }
    out
}

/// Cuts every data step into one-byte reads.
pub fn byte_by_byte(steps: &[Step]) -> Vec<Step> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Data {
                flow,
                ts_ns,
                tid,
                bytes,
            } => out.extend(bytes.iter().map(|byte| Step::Data {
                flow: *flow,
                ts_ns: *ts_ns,
                tid: *tid,
                bytes: vec![*byte],
            })),
            _ => out.push(step.clone()),
        }
    }
    out
}

/// Concatenates every byte of every data step, for privacy checks.
pub fn all_payload(steps: &[Step]) -> Vec<u8> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Data { bytes, .. } => Some(bytes.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

/// Replays a fixture whole and returns its exchanges. For byte streams it
/// also replays every read split in two at every offset, and one byte per
/// read, and asserts that each run gives the same exchanges.
pub fn exchanges_of(name: &str) -> Vec<Exchange> {
    let fixture = load(name);
    let config = Arc::new(ParserConfig::default());
    let whole = replay(&fixture.info, &fixture.steps, config.clone());
    if fixture.info.transport == Transport::Udp {
        // Each UDP read is one datagram, so reads cannot be split.
        return whole;
    }

    for (index, step) in fixture.steps.iter().enumerate() {
        let Step::Data { bytes, .. } = step else {
            continue;
        };
        for offset in 1..bytes.len() {
            let split = split_step(&fixture.steps, index, offset);
            let exchanges = replay(&fixture.info, &split, config.clone());
            assert_eq!(exchanges, whole, "{name}: step {index} split at {offset}");
        }
    }

    let bytes = byte_by_byte(&fixture.steps);
    assert_eq!(
        replay(&fixture.info, &bytes, config),
        whole,
        "{name}: byte by byte"
    );
    whole
}
