//! Time intervals on the probe's monotonic clock: union, clipping, and the
//! critical-path split of a request window among overlapping calls.

/// A half-open interval `[start_ns, end_ns)` of `CLOCK_MONOTONIC` time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Interval {
    pub fn new(start_ns: u64, end_ns: u64) -> Self {
        Self {
            start_ns,
            end_ns: end_ns.max(start_ns),
        }
    }

    pub fn len_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// Returns whether the instant `ns` falls inside the interval.
    pub fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }

    /// Returns the part of `self` inside `window`, or `None` when they do
    /// not overlap.
    pub fn clip(&self, window: Interval) -> Option<Interval> {
        let start_ns = self.start_ns.max(window.start_ns);
        let end_ns = self.end_ns.min(window.end_ns);
        (start_ns < end_ns).then_some(Interval { start_ns, end_ns })
    }
}

/// Merges overlapping or touching intervals into a sorted disjoint list.
pub fn merge(intervals: &[Interval]) -> Vec<Interval> {
    let mut sorted: Vec<Interval> = intervals
        .iter()
        .copied()
        .filter(|interval| interval.len_ns() > 0)
        .collect();
    sorted.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(sorted.len());
    for interval in sorted {
        match merged.last_mut() {
            Some(last) if interval.start_ns <= last.end_ns => {
                last.end_ns = last.end_ns.max(interval.end_ns);
            }
            _ => merged.push(interval),
        }
    }
    merged
}

/// The parts of `whole` outside `holes`, which must be sorted and
/// disjoint (as [`merge`] returns them).
pub fn subtract(whole: Interval, holes: &[Interval]) -> Vec<Interval> {
    let mut parts = Vec::with_capacity(holes.len() + 1);
    let mut start_ns = whole.start_ns;
    for hole in holes {
        let Some(hole) = hole.clip(whole) else {
            continue;
        };
        if hole.start_ns > start_ns {
            parts.push(Interval::new(start_ns, hole.start_ns));
        }
        start_ns = start_ns.max(hole.end_ns);
    }
    if start_ns < whole.end_ns {
        parts.push(Interval::new(start_ns, whole.end_ns));
    }
    parts
}

/// Length of the union of the intervals clipped to `window`: overlapping
/// calls count once.
pub fn union_len_within(intervals: &[Interval], window: Interval) -> u64 {
    let clipped: Vec<Interval> = intervals
        .iter()
        .filter_map(|interval| interval.clip(window))
        .collect();
    merge(&clipped).iter().map(Interval::len_ns).sum()
}

/// Intersection of two lists of intervals, as a merged list.
pub fn intersection(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let a = merge(a);
    let b = merge(b);
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if let Some(overlap) = a[i].clip(b[j]) {
            out.push(overlap);
        }
        if a[i].end_ns < b[j].end_ns {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Returns the items that may overlap `window`, found by binary search.
/// `interval_of` gives each item's interval, and those intervals must be
/// sorted and disjoint.
pub fn overlapping<T>(items: &[T], interval_of: impl Fn(&T) -> Interval, window: Interval) -> &[T] {
    let first = items.partition_point(|item| interval_of(item).end_ns <= window.start_ns);
    let rest = &items[first..];
    let count = rest.partition_point(|item| interval_of(item).start_ns < window.end_ns);
    &rest[..count]
}

/// Nanoseconds of `window` that the sorted, disjoint `intervals` cover.
pub fn covered_ns(intervals: &[Interval], window: Interval) -> u64 {
    overlapping(intervals, |interval| *interval, window)
        .iter()
        .filter_map(|interval| interval.clip(window))
        .map(|overlap| overlap.len_ns())
        .sum()
}

/// One call inside a request window, tagged with the component it
/// belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaggedInterval {
    pub interval: Interval,
    pub component: usize,
    /// End of the whole call this interval is a part of, which ranks
    /// overlapping calls; `interval.end_ns` for a call in one piece.
    pub call_end_ns: u64,
}

/// Split of a request window into serial time per component and the
/// request's own time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriticalSplit {
    /// Nanoseconds on the critical path per component index.
    pub component_ns: Vec<u64>,
    /// Parts of the window during which no call was in flight.
    pub own: Vec<Interval>,
}

/// Splits `window` among the calls in flight at each instant.
///
/// Where calls overlap, the instant goes to the call that ends last,
/// because the request cannot continue before that call returns. So two
/// parallel calls of 100 ms and 500 ms put 500 ms on the critical path,
/// all of it on the longer call. A call split into pieces (its network
/// waits apart) ranks by the end of the whole call. Ties go to the lower
/// component index.
/// The component times and the own time add up to the window length.
pub fn critical_split(
    window: Interval,
    calls: &[TaggedInterval],
    components: usize,
) -> CriticalSplit {
    let mut split = CriticalSplit {
        component_ns: vec![0; components],
        own: Vec::new(),
    };
    if window.len_ns() == 0 {
        return split;
    }

    let clipped: Vec<(Interval, TaggedInterval)> = calls
        .iter()
        .filter_map(|call| call.interval.clip(window).map(|part| (part, *call)))
        .collect();
    let mut boundaries: Vec<u64> = vec![window.start_ns, window.end_ns];
    for (part, _) in &clipped {
        boundaries.push(part.start_ns);
        boundaries.push(part.end_ns);
    }
    boundaries.sort_unstable();
    boundaries.dedup();

    for pair in boundaries.windows(2) {
        let segment = Interval::new(pair[0], pair[1]);
        let owner = clipped
            .iter()
            .filter(|(part, _)| part.start_ns <= segment.start_ns && segment.end_ns <= part.end_ns)
            .max_by(|(_, a), (_, b)| {
                a.call_end_ns
                    .cmp(&b.call_end_ns)
                    .then(b.component.cmp(&a.component))
            });
        match owner {
            Some((_, call)) if call.component < components => {
                split.component_ns[call.component] += segment.len_ns();
            }
            _ => split.own.push(segment),
        }
    }
    split.own = merge(&split.own);
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(start_ns: u64, end_ns: u64) -> Interval {
        Interval::new(start_ns, end_ns)
    }

    #[test]
    fn union_counts_overlap_once() {
        let calls = [iv(0, 100), iv(50, 150), iv(200, 250)];
        assert_eq!(union_len_within(&calls, iv(0, 1000)), 200);
    }

    #[test]
    fn union_clips_to_window() {
        let calls = [iv(0, 100), iv(900, 1200)];
        assert_eq!(union_len_within(&calls, iv(50, 1000)), 150);
    }

    #[test]
    fn merge_joins_touching_intervals() {
        assert_eq!(
            merge(&[iv(10, 20), iv(0, 10), iv(30, 40)]),
            vec![iv(0, 20), iv(30, 40)]
        );
    }

    #[test]
    fn intersection_of_lists() {
        let a = [iv(0, 100), iv(200, 300)];
        let b = [iv(50, 250)];
        assert_eq!(intersection(&a, &b), vec![iv(50, 100), iv(200, 250)]);
    }

    #[test]
    fn covered_time_of_a_window() {
        let sorted = [iv(0, 100), iv(200, 300), iv(400, 500)];
        assert_eq!(covered_ns(&sorted, iv(50, 250)), 100);
        assert_eq!(covered_ns(&sorted, iv(100, 200)), 0);
        assert_eq!(covered_ns(&sorted, iv(0, 1000)), 300);
    }

    #[test]
    fn parallel_calls_go_to_the_longer_one() {
        let calls = [
            TaggedInterval {
                interval: iv(0, 100),
                component: 0,
                call_end_ns: 100,
            },
            TaggedInterval {
                interval: iv(0, 500),
                component: 1,
                call_end_ns: 500,
            },
        ];
        let split = critical_split(iv(0, 1000), &calls, 2);
        assert_eq!(split.component_ns, vec![0, 500]);
        assert_eq!(split.own, vec![iv(500, 1000)]);
    }

    #[test]
    fn split_adds_up_to_window() {
        let calls = [
            TaggedInterval {
                interval: iv(10, 60),
                component: 0,
                call_end_ns: 60,
            },
            TaggedInterval {
                interval: iv(40, 90),
                component: 1,
                call_end_ns: 90,
            },
            TaggedInterval {
                interval: iv(80, 200),
                component: 0,
                call_end_ns: 200,
            },
        ];
        let window = iv(0, 150);
        let split = critical_split(window, &calls, 2);
        let own: u64 = split.own.iter().map(Interval::len_ns).sum();
        assert_eq!(
            split.component_ns.iter().sum::<u64>() + own,
            window.len_ns()
        );
        // 10..40 component 0, 40..80 component 1 (ends at 90 > 60),
        // 80..150 component 0 (ends at 200 > 90).
        assert_eq!(split.component_ns, vec![30 + 70, 40]);
        assert_eq!(split.own, vec![iv(0, 10)]);
    }

    #[test]
    fn serial_calls_of_one_component_add_up() {
        let calls = [
            TaggedInterval {
                interval: iv(0, 100),
                component: 0,
                call_end_ns: 100,
            },
            TaggedInterval {
                interval: iv(100, 300),
                component: 0,
                call_end_ns: 300,
            },
        ];
        let split = critical_split(iv(0, 400), &calls, 1);
        assert_eq!(split.component_ns, vec![300]);
    }

    #[test]
    fn empty_window_has_nothing() {
        let split = critical_split(iv(5, 5), &[], 1);
        assert_eq!(split.component_ns, vec![0]);
        assert!(split.own.is_empty());
    }

    #[test]
    fn subtract_leaves_the_parts_outside() {
        let whole = Interval::new(0, 100);
        let holes = [
            Interval::new(10, 20),
            Interval::new(50, 60),
            Interval::new(90, 120),
        ];
        assert_eq!(
            subtract(whole, &holes),
            vec![
                Interval::new(0, 10),
                Interval::new(20, 50),
                Interval::new(60, 90)
            ]
        );
        assert_eq!(subtract(whole, &[]), vec![whole]);
        assert!(subtract(whole, &[Interval::new(0, 100)]).is_empty());
    }

    #[test]
    fn pieces_of_a_call_rank_by_the_whole_call() {
        // A 500 ms call whose 20..60 piece is another component, next to
        // a 100 ms call: the long call's pieces own 0..100.
        let calls = [
            TaggedInterval {
                interval: iv(0, 100),
                component: 0,
                call_end_ns: 100,
            },
            TaggedInterval {
                interval: iv(0, 20),
                component: 1,
                call_end_ns: 500,
            },
            TaggedInterval {
                interval: iv(20, 60),
                component: 2,
                call_end_ns: 500,
            },
            TaggedInterval {
                interval: iv(60, 500),
                component: 1,
                call_end_ns: 500,
            },
        ];
        let split = critical_split(iv(0, 500), &calls, 3);
        assert_eq!(split.component_ns, vec![0, 460, 40]);
    }
}
