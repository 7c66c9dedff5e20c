//! One direction of a connection's byte stream.

/// Counters and timestamps of one direction of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Socket calls that carried bytes.
    pub calls: u64,
    /// Bytes captured and fed to the parser.
    pub captured_bytes: u64,
    /// Bytes that crossed the socket without being captured.
    pub missing_bytes: u64,
    /// `CLOCK_MONOTONIC` of the first and the latest call.
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    /// Calls whose timestamp is earlier than the call before them. Writes
    /// are stamped at syscall entry and reads at exit, so concurrent calls
    /// from two threads on one socket can arrive out of order.
    pub out_of_order: u64,
    /// True once end of stream or a reset was seen.
    pub ended: bool,
}

impl StreamState {
    pub fn record(&mut self, ts_ns: u64, captured_bytes: u64, missing_bytes: u64) {
        if ts_ns < self.last_ns {
            self.out_of_order += 1;
        }
        self.first_ns.get_or_insert(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        self.calls += 1;
        self.captured_bytes += captured_bytes;
        self.missing_bytes += missing_bytes;
    }
}
