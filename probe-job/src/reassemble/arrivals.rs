//! Arrival times of the bytes a connection received, so that the bytes of a
//! read are stamped when their TCP segment arrived rather than when the
//! process read them.
//!
//! TCP delivers bytes in order, so the n-th byte read is the n-th byte that
//! arrived. The queue holds `(arrival, length)` of segments not yet read;
//! each read takes its byte count from the front.
//!
//! Where the kernel reports sequence numbers, segments are queued in
//! sequence order: a retransmission that fills a gap goes before the bytes
//! that overtook it, which count as arrived only with it, and repeated
//! bytes are dropped.
//!
//! Without sequence numbers, a retransmitted segment whose data had already
//! arrived is reported again, which would shift later bytes onto earlier
//! arrivals. A read that returned fewer bytes than it requested emptied the
//! socket's receive queue, so every segment that arrived before that read
//! started has been read. Such segments still in the queue are duplicates
//! and are dropped.

use std::collections::VecDeque;

use super::gaps::{Placement, seq_before};

/// Segments kept per connection; beyond it the oldest are dropped, which
/// only loses precision (their bytes fall back to read times).
const MAX_SEGMENTS: usize = 16_384;

/// Unread segments of one connection, oldest first.
#[derive(Debug, Default)]
pub struct ArrivalQueue {
    segments: VecDeque<Segment>,
    /// Sequence number just past the last byte read, when the kernel
    /// reports sequence numbers.
    read_end: Option<u32>,
    /// Segments dropped as duplicates or for space.
    pub discarded: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    arrival_ns: u64,
    remaining_bytes: u64,
    /// Sequence number of the first unread byte, when known.
    seq: Option<u32>,
}

/// Bytes of one read that arrived together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub arrival_ns: u64,
    pub bytes: u64,
}

impl ArrivalQueue {
    /// Queues a segment whose sequence number is unknown, in arrival order.
    pub fn push(&mut self, arrival_ns: u64, bytes: u64) {
        self.push_segment(Segment {
            arrival_ns,
            remaining_bytes: bytes,
            seq: None,
        });
    }

    /// Queues the bytes of a segment with a known sequence number where
    /// [`super::gaps::SequenceGaps`] placed them. Bytes that fill a gap go
    /// before the bytes that arrived past it, and those count as arrived
    /// only now: the process could not read them before.
    pub fn place(&mut self, arrival_ns: u64, placement: &Placement) {
        for &(seq, len) in &placement.filled {
            let index = self
                .segments
                .iter()
                .position(|segment| segment.seq.is_some_and(|queued| seq_before(seq, queued)))
                .unwrap_or(self.segments.len());
            for later in self.segments.range_mut(index..) {
                later.arrival_ns = later.arrival_ns.max(arrival_ns);
            }
            if self.segments.len() < MAX_SEGMENTS {
                self.segments.insert(
                    index,
                    Segment {
                        arrival_ns,
                        remaining_bytes: u64::from(len),
                        seq: Some(seq),
                    },
                );
            } else {
                self.discarded += 1;
            }
        }
        if let Some((seq, len)) = placement.appended {
            self.push_segment(Segment {
                arrival_ns,
                remaining_bytes: u64::from(len),
                seq: Some(seq),
            });
        }
        if placement.duplicate_bytes > 0 {
            self.discarded += 1;
        }
    }

    fn push_segment(&mut self, segment: Segment) {
        if segment.remaining_bytes == 0 {
            return;
        }
        if self.segments.len() == MAX_SEGMENTS {
            self.segments.pop_front();
            self.discarded += 1;
        }
        self.segments.push_back(segment);
    }

    /// Sequence number just past the last byte that [`Self::take`] handed
    /// out, when the kernel reports sequence numbers.
    pub fn read_end(&self) -> Option<u32> {
        self.read_end
    }

    /// Splits a read of `bytes` into runs by arrival, which replace the
    /// contents of `runs`. Bytes the queue does not cover (an arrival event
    /// was lost or came before the connection was followed) get `read_ns`,
    /// the read's own time.
    ///
    /// NOTE: reads take bytes by count, also where segments carry sequence
    /// numbers, so a lost arrival event shifts later bytes onto the next
    /// segments' arrivals until the queue runs empty.
    pub fn take(&mut self, bytes: u64, read_ns: u64, runs: &mut Vec<Run>) {
        runs.clear();
        let mut left = bytes;
        while left > 0 {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            let taken = front.remaining_bytes.min(left);
            let arrival_ns = front.arrival_ns.min(read_ns);
            match runs.last_mut() {
                Some(last) if last.arrival_ns == arrival_ns => last.bytes += taken,
                _ => runs.push(Run {
                    arrival_ns,
                    bytes: taken,
                }),
            }
            front.remaining_bytes -= taken;
            if let Some(seq) = front.seq.as_mut() {
                // `taken` is at most one segment's length, a u32.
                *seq = seq.wrapping_add(taken as u32);
                self.read_end = Some(*seq);
            }
            left -= taken;
            if front.remaining_bytes == 0 {
                self.segments.pop_front();
            }
        }
        if left > 0 {
            runs.push(Run {
                arrival_ns: read_ns,
                bytes: left,
            });
        }
    }

    /// Drops segments that arrived before `read_start_ns` after a read that
    /// emptied the receive queue: they can only be duplicates. Segments
    /// with a sequence number stay: duplicates never reach the queue, and
    /// bytes past a gap are unreadable until it fills, so a short read
    /// leaves them queued.
    pub fn drained(&mut self, read_start_ns: u64) {
        while self
            .segments
            .front()
            .is_some_and(|segment| segment.seq.is_none() && segment.arrival_ns < read_start_ns)
        {
            self.segments.pop_front();
            self.discarded += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(queue: &mut ArrivalQueue, bytes: u64, read_ns: u64) -> Vec<Run> {
        let mut runs = Vec::new();
        queue.take(bytes, read_ns, &mut runs);
        runs
    }
    use crate::reassemble::gaps::SequenceGaps;

    fn run(arrival_ns: u64, bytes: u64) -> Run {
        Run { arrival_ns, bytes }
    }

    #[test]
    fn read_spanning_segments_is_split() {
        let mut queue = ArrivalQueue::default();
        queue.push(100, 10);
        queue.push(200, 5);
        assert_eq!(take(&mut queue, 12, 500), vec![run(100, 10), run(200, 2)]);
        assert_eq!(take(&mut queue, 3, 600), vec![run(200, 3)]);
    }

    #[test]
    fn uncovered_bytes_get_read_time() {
        let mut queue = ArrivalQueue::default();
        queue.push(100, 4);
        assert_eq!(take(&mut queue, 10, 500), vec![run(100, 4), run(500, 6)]);
        assert_eq!(take(&mut queue, 3, 700), vec![run(700, 3)]);
    }

    #[test]
    fn short_read_drops_stale_duplicates() {
        let mut queue = ArrivalQueue::default();
        queue.push(100, 10);
        // A retransmission of the same 10 bytes.
        queue.push(150, 10);
        queue.push(400, 5);
        assert_eq!(take(&mut queue, 10, 300), vec![run(100, 10)]);
        // The read started at 250 and emptied the socket: the duplicate
        // from 150 cannot still be unread; the segment from 400 can.
        queue.drained(250);
        assert_eq!(queue.discarded, 1);
        assert_eq!(take(&mut queue, 5, 500), vec![run(400, 5)]);
    }

    /// Feeds segments `(seq, len, arrival)` through a gap tracker into a
    /// queue.
    fn placed(gaps: &mut SequenceGaps, queue: &mut ArrivalQueue, segments: &[(u32, u32, u64)]) {
        for &(seq, len, arrival_ns) in segments {
            let placement = gaps.observe(seq, len, arrival_ns);
            queue.place(arrival_ns, &placement);
        }
    }

    #[test]
    fn filled_gap_is_read_first_and_holds_back_later_bytes() {
        let mut gaps = SequenceGaps::default();
        let mut queue = ArrivalQueue::default();
        placed(
            &mut gaps,
            &mut queue,
            &[(0, 10, 100), (20, 5, 200), (10, 10, 900)],
        );
        // A repeat of bytes that arrived is dropped.
        placed(&mut gaps, &mut queue, &[(0, 10, 950)]);
        assert_eq!(queue.discarded, 1);

        // The process reads in sequence order: the bytes past the gap were
        // readable only once the retransmission arrived at 900.
        assert_eq!(
            take(&mut queue, 25, 1_000),
            vec![run(100, 10), run(900, 15)]
        );
        assert_eq!(queue.read_end(), Some(25));
    }

    #[test]
    fn short_read_keeps_bytes_past_a_gap() {
        let mut gaps = SequenceGaps::default();
        let mut queue = ArrivalQueue::default();
        placed(&mut gaps, &mut queue, &[(0, 10, 100), (20, 5, 200)]);
        // The read returns the bytes before the gap, fewer than requested.
        assert_eq!(take(&mut queue, 10, 300), vec![run(100, 10)]);
        queue.drained(250);

        placed(&mut gaps, &mut queue, &[(10, 10, 900)]);
        assert_eq!(take(&mut queue, 15, 1_000), vec![run(900, 15)]);
        assert_eq!(queue.discarded, 0);
    }

    #[test]
    fn arrival_never_after_read() {
        let mut queue = ArrivalQueue::default();
        queue.push(900, 4);
        assert_eq!(take(&mut queue, 4, 800), vec![run(800, 4)]);
    }

    #[test]
    fn queue_is_bounded() {
        let mut queue = ArrivalQueue::default();
        for index in 0..=MAX_SEGMENTS as u64 {
            queue.push(index, 1);
        }
        assert_eq!(queue.discarded, 1);
        assert_eq!(take(&mut queue, 1, u64::MAX), vec![run(1, 1)]);
    }
}
