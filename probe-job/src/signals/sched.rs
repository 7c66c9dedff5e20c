//! Run-queue waits and on-CPU time of target threads: seeds the kernel's
//! thread map, keeps the long waits that arrive as events, and reads the
//! per-CPU totals when the window ends.

use std::{collections::BTreeMap, fs};

use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use llmslo_probe_common::sched::{OnCpu, ProcessCpu, RUN_QUEUE_BUCKETS, RunQueueStats};
use llmslo_schema::{ProcessScheduling, RunQueueWait, Scheduling};

use super::SignalError;

/// Long waits kept for the result; later ones are counted only, so that a
/// CPU-starved target cannot make the result grow without bound.
pub const MAX_LONG_WAITS: usize = 50_000;

/// Adds every thread of a process to the kernel's thread map, so that the
/// run-queue programs see threads that existed before the probe; returns
/// how many were added. Threads created later are added by the kernel.
///
/// # Errors
///
/// [`SignalError`] when the map is missing or full.
pub fn add_threads(ebpf: &mut Ebpf, pid: u32) -> Result<usize, SignalError> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else {
        // The process exited; its threads need no entries.
        return Ok(0);
    };
    let data = ebpf
        .map_mut("TARGET_THREADS")
        .ok_or(SignalError::MissingMap {
            map: "TARGET_THREADS",
        })?;
    let mut threads: HashMap<_, u32, u32> =
        HashMap::try_from(data).map_err(|source| SignalError::Map {
            action: "map",
            map: "TARGET_THREADS",
            source,
        })?;
    let mut added = 0;
    for tid in entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
    {
        threads
            .insert(&tid, &pid, 0)
            .map_err(|source| SignalError::Map {
                action: "insert a thread",
                map: "TARGET_THREADS",
                source,
            })?;
        added += 1;
    }
    Ok(added)
}

/// Long run-queue waits from the ring buffer.
#[derive(Debug, Default)]
pub struct LongWaits {
    waits: Vec<RunQueueWait>,
    /// Waits beyond [`MAX_LONG_WAITS`].
    pub omitted: u64,
}

impl LongWaits {
    pub fn push(&mut self, pid: u32, tid: u32, end_ns: u64, wait_ns: u64) {
        if self.waits.len() >= MAX_LONG_WAITS {
            self.omitted += 1;
            return;
        }
        self.waits.push(RunQueueWait {
            pid,
            tid,
            end_ns,
            wait_us: wait_ns / 1_000,
        });
    }
}

/// Kernel totals of the run-queue programs, summed over CPUs.
#[derive(Debug, Clone)]
pub struct Totals {
    pub waits: u64,
    pub total_wait_ns: u64,
    pub histogram: [u64; RUN_QUEUE_BUCKETS],
    /// Per target process, by pid.
    pub processes: BTreeMap<u32, ProcessCpu>,
}

/// Reads and sums the per-CPU totals, counting the slices of target
/// threads still on a CPU up to `now_ns`.
///
/// # Errors
///
/// [`SignalError`] when a map is missing or cannot be read.
pub fn read_totals(ebpf: &Ebpf, now_ns: u64) -> Result<Totals, SignalError> {
    let stats_map = ebpf.map("RUN_QUEUE_STATS").ok_or(SignalError::MissingMap {
        map: "RUN_QUEUE_STATS",
    })?;
    let stats: PerCpuArray<_, RunQueueStats> =
        PerCpuArray::try_from(stats_map).map_err(|source| SignalError::Map {
            action: "map",
            map: "RUN_QUEUE_STATS",
            source,
        })?;
    let per_cpu = stats.get(&0, 0).map_err(|source| SignalError::Map {
        action: "read the run-queue totals",
        map: "RUN_QUEUE_STATS",
        source,
    })?;
    let mut totals = Totals {
        waits: 0,
        total_wait_ns: 0,
        histogram: [0; RUN_QUEUE_BUCKETS],
        processes: BTreeMap::new(),
    };
    for cpu in per_cpu.iter() {
        totals.waits += cpu.waits;
        totals.total_wait_ns += cpu.total_wait_ns;
        for (sum, count) in totals.histogram.iter_mut().zip(cpu.histogram) {
            *sum += count;
        }
    }

    let process_map = ebpf
        .map("PROCESS_CPU")
        .ok_or(SignalError::MissingMap { map: "PROCESS_CPU" })?;
    let processes: PerCpuHashMap<_, u32, ProcessCpu> = PerCpuHashMap::try_from(process_map)
        .map_err(|source| SignalError::Map {
            action: "map",
            map: "PROCESS_CPU",
            source,
        })?;
    let running_map = ebpf
        .map("ON_CPU")
        .ok_or(SignalError::MissingMap { map: "ON_CPU" })?;
    let running: PerCpuArray<_, OnCpu> =
        PerCpuArray::try_from(running_map).map_err(|source| SignalError::Map {
            action: "map",
            map: "ON_CPU",
            source,
        })?;

    let read_running = || {
        running
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().copied().collect::<Vec<OnCpu>>())
            .map_err(|source| SignalError::Map {
                action: "read the running target threads",
                map: "ON_CPU",
                source,
            })
    };
    let read_processes = || {
        let mut sums = BTreeMap::<u32, ProcessCpu>::new();
        // An entry that vanishes while iterating is skipped; the programs
        // never delete entries, so that does not happen during a run.
        for (pid, per_cpu) in processes.iter().flatten() {
            let sum = sums.entry(pid).or_default();
            for cpu in per_cpu.iter() {
                sum.on_cpu_ns += cpu.on_cpu_ns;
                sum.waits += cpu.waits;
                sum.total_wait_ns += cpu.total_wait_ns;
            }
        }
        Ok(sums)
    };
    let (sums, open) = read_consistent(read_running, read_processes)?;
    totals.processes = sums;
    add_open_slices(&mut totals, open.iter(), now_ns);
    Ok(totals)
}

/// Attempts at reading the per-process totals while no target slice
/// starts or ends.
const CONSISTENT_READ_ATTEMPTS: usize = 8;

/// Reads the per-process totals between two reads of the running slices,
/// again while a slice started or ended in between, and returns them with
/// the slices of the second read. A slice is charged to its process when
/// it ends. One that ended between the two reads may be missing from both,
/// but while the running slices stay unchanged, every slice is counted
/// once. After [`CONSISTENT_READ_ATTEMPTS`] the last reads are returned as
/// they are.
fn read_consistent<P, E>(
    mut read_running: impl FnMut() -> Result<Vec<OnCpu>, E>,
    mut read_processes: impl FnMut() -> Result<P, E>,
) -> Result<(P, Vec<OnCpu>), E> {
    let same = |a: &[OnCpu], b: &[OnCpu]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| a.tid == b.tid && a.since_ns == b.since_ns)
    };
    let mut before = read_running()?;
    let mut attempt = 1;
    loop {
        let processes = read_processes()?;
        let after = read_running()?;
        if same(&before, &after) || attempt == CONSISTENT_READ_ATTEMPTS {
            return Ok((processes, after));
        }
        before = after;
        attempt += 1;
    }
}

/// Adds the slices of target threads still on a CPU at `now_ns`.
fn add_open_slices<'a>(totals: &mut Totals, running: impl Iterator<Item = &'a OnCpu>, now_ns: u64) {
    for slot in running.filter(|slot| slot.tid != 0) {
        totals.processes.entry(slot.tgid).or_default().on_cpu_ns +=
            now_ns.saturating_sub(slot.since_ns);
    }
}

/// Builds the result's scheduling section.
pub fn scheduling(totals: &Totals, long_waits: LongWaits, threshold_ns: u64) -> Scheduling {
    // Trailing empty buckets carry no information.
    let used_buckets = totals
        .histogram
        .iter()
        .rposition(|count| *count > 0)
        .map_or(0, |last| last + 1);
    let mut waits = long_waits.waits;
    waits.sort_by_key(|wait| (wait.end_ns, wait.tid));
    Scheduling {
        waits: totals.waits,
        total_wait_us: totals.total_wait_ns / 1_000,
        wait_histogram_log2_us: totals.histogram[..used_buckets].to_vec(),
        long_waits: waits,
        long_wait_threshold_us: threshold_ns / 1_000,
        processes: totals
            .processes
            .iter()
            .map(|(pid, cpu)| ProcessScheduling {
                pid: *pid,
                on_cpu_us: cpu.on_cpu_ns / 1_000,
                waits: cpu.waits,
                total_wait_us: cpu.total_wait_ns / 1_000,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tid: u32, since_ns: u64) -> OnCpu {
        OnCpu {
            tid,
            tgid: tid,
            since_ns,
        }
    }

    #[test]
    fn totals_reread_while_slices_change() {
        // The slice on the second CPU ends during the first read of the
        // totals, then nothing changes.
        let mut running = vec![
            vec![slot(0, 0), slot(7, 100)],
            vec![slot(0, 0), slot(0, 0)],
            vec![slot(0, 0), slot(0, 0)],
        ]
        .into_iter();
        let mut reads = 0;
        let (totals, open) = read_consistent::<_, ()>(
            || Ok(running.next().unwrap()),
            || {
                reads += 1;
                Ok(reads)
            },
        )
        .unwrap();
        assert_eq!(totals, 2);
        assert!(open.iter().all(|slot| slot.tid == 0));
    }

    #[test]
    fn totals_read_gives_up_after_attempts() {
        let mut since = 0;
        let mut reads = 0;
        let (totals, _) = read_consistent::<_, ()>(
            || {
                since += 1;
                Ok(vec![slot(3, since)])
            },
            || {
                reads += 1;
                Ok(reads)
            },
        )
        .unwrap();
        assert_eq!(totals, CONSISTENT_READ_ATTEMPTS);
    }

    #[test]
    fn long_waits_beyond_limit_are_counted() {
        let mut long_waits = LongWaits::default();
        for index in 0..MAX_LONG_WAITS as u64 + 3 {
            long_waits.push(1, 2, index, 2_000_000);
        }
        assert_eq!(long_waits.waits.len(), MAX_LONG_WAITS);
        assert_eq!(long_waits.omitted, 3);
        assert_eq!(long_waits.waits[0].wait_us, 2_000);
    }

    #[test]
    fn open_slices_count_up_to_the_read() {
        let mut totals = Totals {
            waits: 0,
            total_wait_ns: 0,
            histogram: [0; RUN_QUEUE_BUCKETS],
            processes: BTreeMap::from([(
                7,
                ProcessCpu {
                    on_cpu_ns: 1_000,
                    ..ProcessCpu::default()
                },
            )]),
        };
        let running = [
            OnCpu {
                tid: 8,
                tgid: 7,
                since_ns: 10_000,
            },
            // No target on this CPU.
            OnCpu::default(),
            // A target whose only slice has not ended yet.
            OnCpu {
                tid: 9,
                tgid: 9,
                since_ns: 40_000,
            },
        ];
        add_open_slices(&mut totals, running.iter(), 50_000);
        assert_eq!(totals.processes[&7].on_cpu_ns, 41_000);
        assert_eq!(totals.processes[&9].on_cpu_ns, 10_000);
        assert_eq!(totals.processes.len(), 2);
    }

    #[test]
    fn histogram_drops_trailing_empty_buckets() {
        let mut histogram = [0; RUN_QUEUE_BUCKETS];
        histogram[0] = 5;
        histogram[3] = 1;
        let totals = Totals {
            waits: 6,
            total_wait_ns: 12_500,
            histogram,
            processes: BTreeMap::from([(
                7,
                ProcessCpu {
                    on_cpu_ns: 3_000_000,
                    waits: 6,
                    total_wait_ns: 12_500,
                },
            )]),
        };
        let mut long_waits = LongWaits::default();
        long_waits.push(7, 8, 900, 1_500_000);
        long_waits.push(7, 9, 100, 1_200_000);

        let scheduling = scheduling(&totals, long_waits, 1_000_000);
        assert_eq!(scheduling.wait_histogram_log2_us, vec![5, 0, 0, 1]);
        assert_eq!(scheduling.total_wait_us, 12);
        assert_eq!(scheduling.long_wait_threshold_us, 1_000);
        let ends: Vec<u64> = scheduling.long_waits.iter().map(|w| w.end_ns).collect();
        assert_eq!(ends, vec![100, 900], "sorted by end");
        assert_eq!(scheduling.processes.len(), 1);
        assert_eq!(scheduling.processes[0].on_cpu_us, 3_000);
    }
}
