//! The seam between reassembly and the protocol parsers of `llmslo-wire`.

use llmslo_schema::Exchange;
use llmslo_wire::{ConnectionParser, Flow, StreamEnd};

/// Interface of a per-connection protocol parser, as reassembly uses it.
/// The probe uses [`ConnectionParser`] and tests use recorders.
pub trait ExchangeParser {
    fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]);
    fn on_gap(&mut self, flow: Flow, ts_ns: u64, missing_bytes: u64);
    fn on_end(&mut self, ts_ns: u64, end: StreamEnd);
    fn take_exchanges(&mut self) -> Vec<Exchange>;
    fn finish(&mut self, ts_ns: u64) -> Vec<Exchange>;
    fn unparsed_bytes(&self) -> u64;
}

impl ExchangeParser for ConnectionParser {
    fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        ConnectionParser::on_data(self, flow, ts_ns, tid, bytes);
    }

    fn on_gap(&mut self, flow: Flow, ts_ns: u64, missing_bytes: u64) {
        ConnectionParser::on_gap(self, flow, ts_ns, missing_bytes);
    }

    fn on_end(&mut self, ts_ns: u64, end: StreamEnd) {
        ConnectionParser::on_end(self, ts_ns, end);
    }

    fn take_exchanges(&mut self) -> Vec<Exchange> {
        ConnectionParser::take_exchanges(self)
    }

    fn finish(&mut self, ts_ns: u64) -> Vec<Exchange> {
        ConnectionParser::finish(self, ts_ns)
    }

    fn unparsed_bytes(&self) -> u64 {
        self.stats().unparsed_bytes
    }
}
