//! Gaps in the sequence space of the bytes a connection received. A
//! segment that arrives past the next expected byte shows that data was
//! lost on the way (or reordered). The segment that later fills the gap
//! is the peer's retransmission (or the late original), and the time
//! between the two is a wait that loss recovery explains, seen from this
//! end.

/// Open gaps kept per connection; beyond it the oldest is forgotten.
const MAX_GAPS: usize = 64;

/// The largest TCP window (2^30 bytes with window scaling). `tcp_probe`
/// fires before the kernel checks a segment against the window, so a
/// segment further ahead is one the kernel drops, and is ignored here.
const MAX_WINDOW: u32 = 1 << 30;

/// A gap open this long is taken as filled by a segment whose arrival the
/// probe did not see: TCP retransmits within seconds.
const MAX_GAP_AGE_NS: u64 = 60_000_000_000;

/// Open gaps of one connection.
#[derive(Debug, Default)]
pub struct SequenceGaps {
    /// One past the highest sequence number that arrived.
    highest_end: Option<u32>,
    gaps: Vec<Gap>,
}

/// Missing sequence numbers `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    start: u32,
    end: u32,
    /// Arrival of the first segment past the gap.
    opened_ns: u64,
}

/// The places of one arrived segment's bytes in the sequence space.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// New bytes past everything that arrived before: `(seq, len)`.
    pub appended: Option<(u32, u32)>,
    /// Bytes that fill gaps: `(seq, len)` each.
    pub filled: Vec<(u32, u32)>,
    /// Bytes that had arrived before.
    pub duplicate_bytes: u32,
    /// The wait for the gaps this segment closed.
    pub refill: Option<Refill>,
    /// Whether the segment arrived past bytes that had not arrived, which
    /// opened a gap.
    pub opened_gap: bool,
}

/// A gap that closed: from the arrival of the first segment past it to the
/// arrival of the retransmission that filled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub from_ns: u64,
    pub to_ns: u64,
}

/// Returns whether sequence number `a` comes before `b`, modulo 2^32.
pub fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl SequenceGaps {
    /// Places a segment of `len` bytes starting at `seq` that arrived at
    /// `arrival_ns`.
    pub fn observe(&mut self, seq: u32, len: u32, arrival_ns: u64) -> Placement {
        let mut placement = Placement::default();
        let end = seq.wrapping_add(len);
        let Some(highest) = self.highest_end else {
            self.highest_end = Some(end);
            placement.appended = Some((seq, len));
            return placement;
        };
        self.gaps
            .retain(|gap| arrival_ns.saturating_sub(gap.opened_ns) < MAX_GAP_AGE_NS);
        if !seq_before(seq, highest) {
            if seq.wrapping_sub(highest) > MAX_WINDOW {
                return placement;
            }
            if seq != highest {
                if self.gaps.len() == MAX_GAPS {
                    self.gaps.remove(0);
                }
                self.gaps.push(Gap {
                    start: highest,
                    end: seq,
                    opened_ns: arrival_ns,
                });
                placement.opened_gap = true;
            }
            self.highest_end = Some(end);
            placement.appended = Some((seq, len));
            return placement;
        }

        // Some or all of the segment lies below the highest byte: it fills
        // gaps or repeats bytes that arrived.
        let old_end = if seq_before(highest, end) {
            highest
        } else {
            end
        };
        let old_len = old_end.wrapping_sub(seq);
        let mut filled_len = 0u32;
        let mut closed_from: Option<u64> = None;
        let mut remaining = Vec::with_capacity(self.gaps.len());
        for gap in self.gaps.drain(..) {
            let start = if seq_before(gap.start, seq) {
                seq
            } else {
                gap.start
            };
            let stop = if seq_before(old_end, gap.end) {
                old_end
            } else {
                gap.end
            };
            if !seq_before(start, stop) {
                remaining.push(gap);
                continue;
            }
            placement.filled.push((start, stop.wrapping_sub(start)));
            filled_len = filled_len.saturating_add(stop.wrapping_sub(start));
            if start != gap.start {
                remaining.push(Gap { end: start, ..gap });
            }
            if stop != gap.end {
                remaining.push(Gap { start: stop, ..gap });
            }
            if start == gap.start && stop == gap.end {
                closed_from =
                    Some(closed_from.map_or(gap.opened_ns, |from| from.min(gap.opened_ns)));
            }
        }
        self.gaps = remaining;
        placement.duplicate_bytes = old_len.saturating_sub(filled_len);
        placement.refill = closed_from.map(|from_ns| Refill {
            from_ns,
            to_ns: arrival_ns.max(from_ns),
        });
        if seq_before(highest, end) {
            placement.appended = Some((highest, end.wrapping_sub(highest)));
            self.highest_end = Some(end);
        }
        placement
    }

    /// Forgets gaps below `seq`: the process read bytes past them, so they
    /// were filled by segments whose arrival the probe did not see.
    pub fn read_up_to(&mut self, seq: u32) {
        self.gaps.retain(|gap| seq_before(seq, gap.end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_segments_append() {
        let mut gaps = SequenceGaps::default();
        assert_eq!(gaps.observe(100, 10, 1).appended, Some((100, 10)));
        let placement = gaps.observe(110, 5, 2);
        assert_eq!(placement.appended, Some((110, 5)));
        assert!(placement.filled.is_empty());
        assert!(placement.refill.is_none());
    }

    #[test]
    fn retransmission_fills_a_gap() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(100, 10, 1);
        // 110..120 is lost; 120..130 arrives at 5.
        assert_eq!(gaps.observe(120, 10, 5).appended, Some((120, 10)));
        let placement = gaps.observe(110, 10, 9);
        assert_eq!(placement.appended, None);
        assert_eq!(placement.filled, vec![(110, 10)]);
        assert_eq!(
            placement.refill,
            Some(Refill {
                from_ns: 5,
                to_ns: 9
            })
        );
        assert_eq!(placement.duplicate_bytes, 0);
    }

    #[test]
    fn duplicate_is_not_a_fill() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(100, 10, 1);
        let placement = gaps.observe(100, 10, 2);
        assert_eq!(placement.duplicate_bytes, 10);
        assert!(placement.filled.is_empty());
        assert!(placement.appended.is_none());
    }

    #[test]
    fn partial_fill_keeps_the_gap_open() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(0, 10, 1);
        gaps.observe(30, 10, 2);
        let first = gaps.observe(10, 10, 3);
        assert_eq!(first.filled, vec![(10, 10)]);
        assert_eq!(first.refill, None);
        // The rest of the gap, together with new bytes past the highest.
        let second = gaps.observe(20, 30, 4);
        assert_eq!(second.filled, vec![(20, 10)]);
        assert_eq!(second.duplicate_bytes, 10);
        assert_eq!(second.appended, Some((40, 10)));
        assert_eq!(
            second.refill,
            Some(Refill {
                from_ns: 2,
                to_ns: 4
            })
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(u32::MAX - 4, 5, 1);
        gaps.observe(5, 5, 2);
        let placement = gaps.observe(0, 5, 3);
        assert_eq!(placement.filled, vec![(0, 5)]);
        assert_eq!(
            placement.refill,
            Some(Refill {
                from_ns: 2,
                to_ns: 3
            })
        );
    }

    #[test]
    fn reading_past_a_gap_forgets_it() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(0, 10, 1);
        gaps.observe(20, 10, 2);
        gaps.read_up_to(30);
        // The fill's arrival was missed; a late duplicate closes nothing.
        let placement = gaps.observe(10, 10, 3);
        assert!(placement.filled.is_empty());
        assert_eq!(placement.refill, None);
    }

    #[test]
    fn segment_beyond_any_window_is_ignored() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(0, 10, 1);
        assert_eq!(gaps.observe(MAX_WINDOW + 100, 10, 2), Placement::default());
        // The stream goes on as if the stray segment never came.
        let placement = gaps.observe(10, 10, 3);
        assert_eq!(placement.appended, Some((10, 10)));
        assert!(placement.filled.is_empty());
        assert!(placement.refill.is_none());
    }

    #[test]
    fn old_gaps_are_forgotten() {
        let mut gaps = SequenceGaps::default();
        gaps.observe(0, 10, 0);
        gaps.observe(20, 10, 1);
        // The fill's arrival was never seen; a minute later a repeat of
        // those bytes closes nothing.
        let placement = gaps.observe(10, 10, MAX_GAP_AGE_NS + 2);
        assert_eq!(placement.refill, None);
        assert_eq!(placement.duplicate_bytes, 10);
    }
}
