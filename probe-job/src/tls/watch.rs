//! Follows the TLS libraries of target processes through the window. Each
//! process is scanned when it is first seen, after `execve()`, and
//! periodically for libraries loaded later with `dlopen`. New library files
//! get the uprobes, and the watcher records what each process can and
//! cannot show.
//!
//! Files are inspected on the thread of [`Inspector`]; [`TlsWatcher::poll`]
//! attaches to what it found.
//!
//! # Attach latency
//!
//! A uprobe belongs to a file, so a process that maps an attached file,
//! whether by `fork` or by loading the same library, is covered from its
//! first call once the kernel filter admits it. A file the probe has not
//! seen yet is attached after the scan that finds it, its inspection (a few
//! milliseconds per library in a release build) and the next poll. After
//! `execve` the process is scanned when the exec event is handled and again
//! [`EXEC_RESCAN_DELAYS`] later, because the dynamic loader maps the shared
//! libraries just after the exec. So a program can be missed when it makes
//! a TLS call within about 20 ms of its exec through a library that no
//! other target maps. A library opened with `dlopen` later in the process's life is
//! found by the periodic scan, within [`PERIODIC_RESCAN`]. TLS calls made
//! before the attach are not seen.

use std::{
    collections::{BTreeMap, HashMap, HashSet, hash_map::Entry},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::Ebpf;
use llmslo_schema::{Diagnostic, Severity, TlsVisibility};

use super::{
    attach::attach,
    discover::{FileId, MappedFile, host_paths, mapped_files},
    elf::{TlsFinding, TlsLibrary},
    inspector::{Inspected, Inspector, Request},
};

/// Scans after an `execve()`, counted from the exec event.
pub const EXEC_RESCAN_DELAYS: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// Interval of the scan of every target process.
pub const PERIODIC_RESCAN: Duration = Duration::from_secs(1);

/// How often finished inspections are collected while some are running.
pub const INSPECTION_POLL: Duration = Duration::from_millis(10);

/// Inspection and attach state of one file.
#[derive(Debug, Clone, Default)]
struct FileState {
    finding: Option<TlsFinding>,
    /// Whether the uprobes are in place; false with a plan means the attach
    /// failed (the reason is in `error`).
    attached: bool,
    error: Option<String>,
}

/// A TLS library that a process maps.
#[derive(Debug, Clone)]
struct Found {
    entry: TlsVisibility,
    /// True when the library is supported but its uprobes failed.
    attach_failed: bool,
}

/// TLS state of all target processes.
pub struct TlsWatcher {
    proc_root: PathBuf,
    files: HashMap<FileId, FileState>,
    /// Files under inspection, with the processes that map them.
    pending: HashMap<FileId, Vec<(u32, MappedFile)>>,
    inspector: Inspector,
    /// Files each live process maps, as of its last scan.
    process_files: HashMap<u32, HashSet<FileId>>,
    /// One entry per (pid, path).
    found: BTreeMap<(u32, String), Found>,
    /// Scans due at an instant.
    scheduled: Vec<(Instant, u32)>,
    last_periodic: Option<Instant>,
    /// When [`Self::poll`] last collected finished inspections.
    last_poll: Option<Instant>,
}

impl TlsWatcher {
    /// `proc_root` is `/proc`, or where the host's `/proc` is mounted in
    /// the probe's container.
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            files: HashMap::new(),
            pending: HashMap::new(),
            inspector: Inspector::start(),
            process_files: HashMap::new(),
            found: BTreeMap::new(),
            scheduled: Vec::new(),
            last_periodic: None,
            last_poll: None,
        }
    }

    /// Scans one process: queues each file it maps that the probe has not
    /// seen for inspection, and records the TLS libraries among the files
    /// already inspected.
    pub fn scan(&mut self, pid: u32) {
        let files = match mapped_files(&self.proc_root, pid) {
            Ok(files) => files,
            Err(error) => {
                // The process exited between its event and this scan.
                tracing::debug!(pid, %error, "skipped the TLS scan of a process");
                self.process_files.remove(&pid);
                return;
            }
        };
        let known = self.process_files.entry(pid).or_default();
        let new_files: Vec<MappedFile> = files
            .into_iter()
            .filter(|file| known.insert(file.id))
            .collect();
        for file in new_files {
            if self.files.contains_key(&file.id) {
                self.record(pid, &file);
                continue;
            }
            match self.pending.entry(file.id) {
                Entry::Occupied(mut waiting) => waiting.get_mut().push((pid, file)),
                Entry::Vacant(waiting) => {
                    self.inspector.submit(Request {
                        id: file.id,
                        file_name: file.path.clone(),
                        paths: host_paths(&self.proc_root, pid, &file),
                    });
                    waiting.insert(vec![(pid, file)]);
                }
            }
        }
    }

    /// Attaches to the TLS libraries that finished inspections found, and
    /// returns the pids whose TLS libraries changed.
    pub fn poll(&mut self, ebpf: &mut Ebpf) -> Vec<u32> {
        self.last_poll = Some(Instant::now());
        let mut changed = Vec::new();
        while let Some(inspected) = self.inspector.try_take() {
            changed.extend(self.finish_inspection(ebpf, inspected));
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Waits up to `timeout` for every queued inspection and attaches to
    /// what they found; returns the pids whose TLS libraries changed.
    pub fn wait_idle(&mut self, ebpf: &mut Ebpf, timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        let mut changed = Vec::new();
        while !self.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(inspected) = self.inspector.take_timeout(left) else {
                tracing::warn!(
                    files = self.pending.len(),
                    timeout_ms = timeout.as_millis() as u64,
                    "TLS library inspection is still running; attaching later"
                );
                break;
            };
            changed.extend(self.finish_inspection(ebpf, inspected));
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Handles an exec event: scans now and again after the dynamic loader
    /// mapped the program's libraries.
    pub fn on_exec(&mut self, pid: u32, now: Instant) {
        self.process_files.remove(&pid);
        self.scan(pid);
        for delay in EXEC_RESCAN_DELAYS {
            self.scheduled.push((now + delay, pid));
        }
    }

    /// Forgets a process that exited; what it showed stays in the report.
    pub fn on_exit(&mut self, pid: u32) {
        self.process_files.remove(&pid);
        self.scheduled.retain(|(_, scheduled)| *scheduled != pid);
    }

    /// Returns when [`Self::run_due`] and [`Self::poll`] next have work:
    /// the earliest scheduled or periodic scan, and while inspections run,
    /// [`INSPECTION_POLL`] after the last poll, so that an idle probe
    /// sleeps up to a second between these wake-ups. The times are fixed
    /// points rather than offsets from `now`, so that a loop woken often
    /// by other work does not push them back.
    pub fn next_due(&self, now: Instant) -> Instant {
        let periodic = self
            .last_periodic
            .map_or(now, |last| last + PERIODIC_RESCAN);
        let scan = self
            .scheduled
            .iter()
            .map(|(at, _)| *at)
            .fold(periodic, Instant::min);
        if self.pending.is_empty() {
            return scan;
        }
        let poll = self.last_poll.map_or(now, |last| last + INSPECTION_POLL);
        scan.min(poll)
    }

    /// Runs the scans that are due: scheduled ones, and every known process
    /// once per [`PERIODIC_RESCAN`].
    pub fn run_due(&mut self, now: Instant) {
        let mut due: Vec<u32> = Vec::new();
        self.scheduled.retain(|(at, pid)| {
            if *at <= now {
                due.push(*pid);
                false
            } else {
                true
            }
        });
        let periodic = self
            .last_periodic
            .is_none_or(|last| now.duration_since(last) >= PERIODIC_RESCAN);
        if periodic {
            self.last_periodic = Some(now);
            due.extend(self.process_files.keys().copied());
        }
        due.sort_unstable();
        due.dedup();
        for pid in due {
            self.scan(pid);
        }
    }

    /// Name of the OpenSSL-API library whose plaintext events `pid` sends:
    /// `boringssl` when the only attached one is BoringSSL, else `openssl`
    /// (the events do not say which of two libraries a call went through).
    pub fn openssl_api_name(&self, pid: u32) -> &'static str {
        let attached = self
            .process_files
            .get(&pid)
            .into_iter()
            .flatten()
            .filter_map(|id| self.files.get(id))
            .filter(|state| state.attached)
            .filter_map(|state| state.finding.as_ref().map(|finding| finding.library));
        let mut boringssl_only = false;
        for library in attached {
            match library {
                TlsLibrary::OpenSsl => return TlsLibrary::OpenSsl.name(),
                TlsLibrary::BoringSsl => boringssl_only = true,
                _ => {}
            }
        }
        if boringssl_only {
            TlsLibrary::BoringSsl.name()
        } else {
            TlsLibrary::OpenSsl.name()
        }
    }

    /// Returns what each process showed of TLS, and one diagnostic for
    /// each library whose plaintext stayed hidden. That is a warning, except
    /// for an unsupported library in a process that also uses a visible one:
    /// libraries such as GnuTLS come along as dependencies (libcurl's
    /// librtmp) of programs that make their calls through OpenSSL, so that
    /// is only information.
    pub fn report(&self) -> (Vec<TlsVisibility>, Vec<Diagnostic>) {
        let entries: Vec<TlsVisibility> = self
            .found
            .values()
            .map(|found| found.entry.clone())
            .collect();
        let diagnostics = self
            .found
            .values()
            .filter(|found| !found.entry.visible)
            .map(|found| {
                let visible_library = entries
                    .iter()
                    .find(|other| other.pid == found.entry.pid && other.visible)
                    .map(|other| other.library.as_str());
                hidden_diagnostic(found, visible_library)
            })
            .collect();
        (entries, diagnostics)
    }

    /// Attaches to a finished inspection's TLS library, if any, and records
    /// it for the processes that map the file; returns those pids.
    fn finish_inspection(&mut self, ebpf: &mut Ebpf, inspected: Inspected) -> Vec<u32> {
        let state = match inspected.parsed {
            Some((path, finding)) => attach_finding(ebpf, &path, finding),
            None => FileState::default(),
        };
        self.files.insert(inspected.id, state);
        let waiting = self.pending.remove(&inspected.id).unwrap_or_default();
        let mut pids = Vec::with_capacity(waiting.len());
        for (pid, file) in waiting {
            self.record(pid, &file);
            pids.push(pid);
        }
        pids
    }

    fn record(&mut self, pid: u32, file: &MappedFile) {
        let Some(state) = self.files.get(&file.id) else {
            return;
        };
        let Some(finding) = &state.finding else {
            return;
        };
        let key = (pid, file.path.clone());
        if self.found.contains_key(&key) {
            return;
        }
        let reason = state.error.clone().or_else(|| finding.reason.clone());
        let entry = TlsVisibility {
            pid,
            library: finding.library.name().to_string(),
            path: file.path.clone(),
            visible: state.attached,
            reason: reason.clone(),
        };
        tracing::info!(
            pid,
            library = finding.library.name(),
            path = %file.path,
            visible = state.attached,
            "found a TLS library"
        );
        self.found.insert(
            key,
            Found {
                entry,
                attach_failed: state.error.is_some(),
            },
        );
    }
}

fn hidden_diagnostic(found: &Found, visible_library: Option<&str>) -> Diagnostic {
    let entry = &found.entry;
    let reason = entry.reason.as_deref().unwrap_or("no reason recorded");
    let (code, severity, consequence) = match (found.attach_failed, visible_library) {
        (true, _) => (
            "tls_attach_failed",
            Severity::Warning,
            "its HTTPS calls are missing from the result".to_string(),
        ),
        (false, None) => (
            "tls_library_unsupported",
            Severity::Warning,
            "its HTTPS calls are missing from the result".to_string(),
        ),
        (false, Some(visible)) => (
            "tls_library_unsupported",
            Severity::Info,
            format!(
                "the process also uses {visible}, which the probe reads, so only calls made \
                 through {} (if any) are missing",
                entry.library
            ),
        ),
    };
    Diagnostic {
        severity,
        code: code.to_string(),
        message: format!(
            "pid {} maps {} in {}, whose plaintext the probe cannot read ({reason}); \
             {consequence}",
            entry.pid, entry.library, entry.path
        ),
        pid: Some(entry.pid),
    }
}

fn attach_finding(ebpf: &mut Ebpf, path: &Path, finding: Option<TlsFinding>) -> FileState {
    let Some(plan) = finding.as_ref().and_then(|finding| finding.plan.clone()) else {
        return FileState {
            finding,
            attached: false,
            error: None,
        };
    };
    match attach(ebpf, path, &plan) {
        Ok(probes) => {
            tracing::info!(path = %path.display(), probes, "attached TLS uprobes");
            FileState {
                finding,
                attached: true,
                error: None,
            }
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "failed to attach TLS uprobes");
            FileState {
                finding,
                attached: false,
                error: Some(error.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_due_follows_pending_work() {
        let empty_proc = std::env::temp_dir().join("llmslo-no-such-proc");
        let mut watcher = TlsWatcher::new(&empty_proc);
        let now = Instant::now();
        assert_eq!(watcher.next_due(now), now, "the first periodic scan is due");

        watcher.run_due(now);
        assert_eq!(watcher.next_due(now), now + PERIODIC_RESCAN);

        // The scan of a process that is gone queues nothing, but the
        // rescans after its exec stay scheduled.
        watcher.on_exec(4_000_000, now);
        assert_eq!(watcher.next_due(now), now + EXEC_RESCAN_DELAYS[0]);
    }

    #[test]
    fn next_due_polls_running_inspections() {
        let mut watcher = TlsWatcher::new("/proc");
        let start = Instant::now();
        watcher.run_due(start);
        watcher.scan(std::process::id());
        assert_eq!(watcher.next_due(start), start, "never polled: due now");

        // A poll fixes the next one; later turns of the loop do not move it.
        watcher.last_poll = Some(start);
        let later = start + INSPECTION_POLL / 2;
        assert_eq!(watcher.next_due(later), start + INSPECTION_POLL);
    }
}
