//! The kernel side of collection: preflight checks, the loaded eBPF object,
//! its target and socket maps, the ring buffer reader and the drop counters.

pub mod btf;
pub mod features;
pub mod loader;
pub mod preflight;

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        Program, ProgramError,
        trace_point::{TracePointLink, TracePointLinkId},
    },
};
use llmslo_probe_common::{
    DropReason, FlowKey, FlowState, PidNamespaces, SOCKET_SEEDED, SocketKey, TcpProbeLayout,
};
use std::time::Instant;

use tokio::io::unix::AsyncFd;

pub use loader::LoadError;

use crate::signals::{KernelGlobals, SignalError};

/// `BPF_NOEXIST` of `bpf(BPF_MAP_UPDATE_ELEM)`: insert only a new key.
const BPF_NOEXIST: u64 = 1;

/// Records read between two looks at the clock in [`Collector::drain_until`].
const FINAL_DRAIN_BATCH: usize = 256;

/// Progress of the ring buffer read after the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalDrain {
    pub records: usize,
    /// The ring buffer was empty at the end; `false` when the deadline
    /// stopped the read with records still arriving.
    pub emptied: bool,
}

/// Drop counters summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelDrops {
    pub ring_buffer_full: u64,
    pub payload_truncated_bytes: u64,
    pub payload_read_failed: u64,
    pub map_full: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("eBPF map {map} is missing from the embedded object; rebuild llmslo-probe")]
    MissingMap { map: &'static str },
    #[error("failed to {action} in eBPF map {map}: {source}")]
    Map {
        action: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("failed to poll the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
    #[error(transparent)]
    Signal(#[from] SignalError),
}

/// Space a record of `len` bytes takes in the ring buffer: an 8-byte
/// header, and the record padded to 8 bytes.
fn ring_record_bytes(len: usize) -> u64 {
    (len as u64 + 8).next_multiple_of(8)
}

/// Passes up to `budget` records of `ring` to `handle`; returns how many it
/// passed, fewer than `budget` only when the ring buffer is empty. Adds the
/// ring buffer space the records took to `bytes_read`.
fn read_records(
    ring: &mut RingBuf<MapData>,
    budget: usize,
    bytes_read: &mut u64,
    handle: &mut impl FnMut(&[u8]),
) -> usize {
    let mut count = 0;
    while count < budget {
        let Some(item) = ring.next() else { break };
        *bytes_read += ring_record_bytes(item.len());
        handle(&item);
        count += 1;
    }
    count
}

/// Threads that detach programs when the probe stops. The kernel
/// serialises part of each detach: on a 2-CPU VM with Linux 6.18 the
/// probe's programs detached in 2.7 s on one thread, 1.5 s on 8 threads
/// and 1.4 s on one thread per link and program.
const UNLOAD_THREADS: usize = 8;

/// One piece of [`Collector::unload_all`].
enum Unload<'a> {
    Link(TracePointLink),
    Program(&'a str, &'a mut Program),
}

impl Unload<'_> {
    fn run(self) {
        let (name, program) = match self {
            // Dropping an owned link detaches it.
            Unload::Link(link) => return drop(link),
            Unload::Program(name, program) => (name, program),
        };
        let unloaded = match program {
            Program::TracePoint(program) => program.unload(),
            Program::UProbe(program) => program.unload(),
            // The probe loads no other kind; dropping the object unloads
            // anything else.
            _ => Ok(()),
        };
        match unloaded {
            Ok(()) | Err(ProgramError::NotLoaded) => {}
            Err(error) => {
                tracing::debug!(program = name, %error, "failed to unload an eBPF program");
            }
        }
    }
}

/// The loaded programs and the maps user space writes or reads. Dropping
/// it detaches the programs.
pub struct Collector {
    ebpf: Ebpf,
    events: AsyncFd<RingBuf<MapData>>,
    ring_buffer_bytes: u32,
    /// Ring buffer space of the records read during the window.
    bytes_read: u64,
    /// The links of [`Collector::attach`], detached in parallel on drop.
    links: Vec<(&'static str, TracePointLinkId)>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.unload_all();
    }
}

impl Collector {
    /// Loads the programs and maps without attaching them; targets and
    /// sockets can be added before [`Collector::attach`]. Must run inside a
    /// tokio runtime, which polls the ring buffer.
    ///
    /// # Errors
    ///
    /// [`CollectError::Load`] from the loader, or a missing or unusable
    /// ring buffer.
    pub fn load(
        ring_buffer_bytes: u32,
        filter_flags: u8,
        pid_namespaces: &PidNamespaces,
        tcp_probe_layout: TcpProbeLayout,
        signals: &KernelGlobals,
        keep_verifier_log: bool,
    ) -> Result<Self, CollectError> {
        let mut ebpf = loader::load(
            ring_buffer_bytes,
            filter_flags,
            pid_namespaces,
            tcp_probe_layout,
            signals,
            keep_verifier_log,
        )?;
        let map = ebpf
            .take_map("EVENTS")
            .ok_or(CollectError::MissingMap { map: "EVENTS" })?;
        let ring = RingBuf::try_from(map).map_err(|source| CollectError::Map {
            action: "map",
            map: "EVENTS",
            source,
        })?;
        // SAFETY: the ring buffer owns its map fd, and nothing replaces or
        // closes that fd while it is registered with the AsyncFd.
        let events =
            unsafe { AsyncFd::register(ring) }.map_err(|error| CollectError::Poll(error.into()))?;
        Ok(Self {
            ebpf,
            events,
            ring_buffer_bytes,
            bytes_read: 0,
            links: Vec::new(),
        })
    }

    /// Size of the ring buffer in bytes.
    pub fn ring_buffer_bytes(&self) -> u32 {
        self.ring_buffer_bytes
    }

    /// Ring buffer space of the records that [`Collector::drain`] and
    /// [`Collector::drain_now`] read so far, headers included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The loaded object, for attaching the TLS uprobes to library files
    /// found during the window.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn attach(&mut self) -> Result<(), CollectError> {
        self.links = loader::attach(&mut self.ebpf)?;
        Ok(())
    }

    /// Attaches the optional arrival program; see [`loader::attach_arrivals`].
    pub fn attach_arrivals(&mut self) -> Result<(), CollectError> {
        Ok(loader::attach_arrivals(&mut self.ebpf)?)
    }

    /// The loaded object, for the component signals' programs and maps.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn add_target_pid(&mut self, pid: u32) -> Result<(), CollectError> {
        let mut map: HashMap<_, u32, u8> = self.hash_map("TARGET_TGIDS")?;
        map.insert(&pid, &1, 0).map_err(|source| CollectError::Map {
            action: "insert a target pid",
            map: "TARGET_TGIDS",
            source,
        })
    }

    pub fn add_target_cgroup(&mut self, cgroup_id: u64) -> Result<(), CollectError> {
        let mut map: HashMap<_, u64, u8> = self.hash_map("TARGET_CGROUPS")?;
        map.insert(&cgroup_id, &1, 0)
            .map_err(|source| CollectError::Map {
                action: "insert a target cgroup",
                map: "TARGET_CGROUPS",
                source,
            })
    }

    /// Makes the kernel report reads and writes on a socket that existed
    /// before the probe saw its `connect` or `accept`; the first of them
    /// wakes user space.
    pub fn track_socket(&mut self, tgid: u32, fd: i32) -> Result<(), CollectError> {
        let mut map: HashMap<_, SocketKey, u8> = self.hash_map("SOCKETS")?;
        map.insert(&SocketKey { tgid, fd }, &SOCKET_SEEDED, 0)
            .map_err(|source| CollectError::Map {
                action: "insert a socket",
                map: "SOCKETS",
                source,
            })
    }

    /// Makes the kernel report segment arrivals of a connection. The kernel
    /// adds the connections that targets open itself, and an entry already
    /// there keeps the packet state it holds.
    pub fn add_flow(&mut self, flow: &FlowKey) -> Result<(), CollectError> {
        let mut map: HashMap<_, FlowKey, FlowState> = self.hash_map("FLOWS")?;
        match map.insert(flow, &FlowState::default(), BPF_NOEXIST) {
            Err(MapError::SyscallError(error))
                if error.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            result => result.map_err(|source| CollectError::Map {
                action: "insert a connection",
                map: "FLOWS",
                source,
            }),
        }
    }

    /// Stops arrival reports of a connection; a missing entry is not an
    /// error.
    pub fn remove_flow(&mut self, flow: &FlowKey) -> Result<(), CollectError> {
        let mut map: HashMap<_, FlowKey, FlowState> = self.hash_map("FLOWS")?;
        let _ = map.remove(flow);
        Ok(())
    }

    /// Removes every socket of a process that exited, so that a new process
    /// with the same pid starts clean; returns how many were removed.
    pub fn forget_sockets(&mut self, tgid: u32) -> Result<usize, CollectError> {
        let mut map: HashMap<_, SocketKey, u8> = self.hash_map("SOCKETS")?;
        let keys: Vec<SocketKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.tgid == tgid)
            .collect();
        for key in &keys {
            // A key may vanish between listing and removal when the kernel
            // handles the close first, which is not an error.
            let _ = map.remove(key);
        }
        Ok(keys.len())
    }

    /// Sums the per-CPU drop counters.
    pub fn read_drops(&self) -> Result<KernelDrops, CollectError> {
        let map = self
            .ebpf
            .map("DROPS")
            .ok_or(CollectError::MissingMap { map: "DROPS" })?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| CollectError::Map {
                action: "map",
                map: "DROPS",
                source,
            })?;
        let total = |reason: DropReason| -> Result<u64, CollectError> {
            let values = counters
                .get(&(reason as u32), 0)
                .map_err(|source| CollectError::Map {
                    action: "read a drop counter",
                    map: "DROPS",
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(KernelDrops {
            ring_buffer_full: total(DropReason::RingBufferFull)?,
            payload_truncated_bytes: total(DropReason::PayloadTruncatedBytes)?,
            payload_read_failed: total(DropReason::PayloadReadFailed)?,
            map_full: total(DropReason::MapFull)?,
        })
    }

    /// Waits until the kernel wakes user space, then passes up to `budget`
    /// records to `handle`; returns how many it passed. Readiness is
    /// cleared only once the ring buffer is empty, so the next call after a
    /// full budget returns at once. Most events do not wake user space (see
    /// `WAKEUP_DIVISOR` in the loader): [`Collector::drain_now`] reads
    /// those.
    ///
    /// # Errors
    ///
    /// [`CollectError::Poll`] when epoll on the ring buffer fails.
    pub async fn drain(
        &mut self,
        budget: usize,
        mut handle: impl FnMut(&[u8]),
    ) -> Result<usize, CollectError> {
        let mut guard = self
            .events
            .readable_mut()
            .await
            .map_err(CollectError::Poll)?;
        let count = read_records(
            guard.get_inner_mut(),
            budget,
            &mut self.bytes_read,
            &mut handle,
        );
        if count < budget {
            guard.clear_ready();
        }
        Ok(count)
    }

    /// Passes up to `budget` records in the ring buffer to `handle` without
    /// waiting; returns how many it passed.
    pub fn drain_now(&mut self, budget: usize, mut handle: impl FnMut(&[u8])) -> usize {
        read_records(
            self.events.get_mut(),
            budget,
            &mut self.bytes_read,
            &mut handle,
        )
    }

    /// Passes the records in the ring buffer to `handle` without waiting,
    /// until it is empty or `deadline` has passed. It runs at the end of
    /// the window, while the programs may still be writing.
    pub fn drain_until(&mut self, deadline: Instant, mut handle: impl FnMut(&[u8])) -> FinalDrain {
        let ring = self.events.get_mut();
        let mut records = 0;
        loop {
            // The clock is read once per batch, not per record.
            for _ in 0..FINAL_DRAIN_BATCH {
                let Some(item) = ring.next() else {
                    return FinalDrain {
                        records,
                        emptied: true,
                    };
                };
                handle(&item);
                records += 1;
            }
            if Instant::now() >= deadline {
                return FinalDrain {
                    records,
                    emptied: false,
                };
            }
        }
    }

    /// Detaches and unloads every program, several at once. Detaching a
    /// tracepoint waits for an RCU grace period (about 70 ms on that VM), so one
    /// by one, as dropping the [`Ebpf`] does, the probe's 39 attachments
    /// kept it from exiting for almost 3 s after its window. Without
    /// threads (a pids limit) the work runs here, one by one.
    fn unload_all(&mut self) {
        let links = loader::take_links(&mut self.ebpf, std::mem::take(&mut self.links));
        let mut work: Vec<Unload<'_>> = links.into_iter().map(Unload::Link).collect();
        work.extend(
            self.ebpf
                .programs_mut()
                .map(|(name, program)| Unload::Program(name, program)),
        );
        let queue = std::sync::Mutex::new(work);
        let next = || {
            queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop()
        };
        // The guard is dropped before the work runs: inside the `while let`
        // condition it would live through the loop body.
        let run = || {
            while let Some(unload) = next() {
                unload.run();
            }
        };
        std::thread::scope(|scope| {
            for _ in 0..UNLOAD_THREADS {
                if std::thread::Builder::new()
                    .spawn_scoped(scope, run)
                    .is_err()
                {
                    break;
                }
            }
            run();
        });
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        map: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, CollectError> {
        let data = self
            .ebpf
            .map_mut(map)
            .ok_or(CollectError::MissingMap { map })?;
        HashMap::try_from(data).map_err(|source| CollectError::Map {
            action: "map",
            map,
            source,
        })
    }
}
