//! Follows the TLS libraries of target processes through the window. Each
//! process is scanned when it is first seen, after `execve()`, and
//! periodically for libraries loaded later with `dlopen`. New library files
//! get the uprobes, and the watcher records what each process can and
//! cannot show.
//!
//! # Attach latency
//!
//! A process that starts by `fork` runs the same files as its parent, so
//! the uprobes already cover it once the kernel filter admits it. After
//! `execve` the new executable is attached when the exec event is handled,
//! usually within a few milliseconds; its shared libraries are mapped by the
//! dynamic loader just after, so the process is scanned again
//! [`EXEC_RESCAN_DELAYS`] later. A library opened with `dlopen` later in the
//! process's life is found by the periodic scan, within
//! [`PERIODIC_RESCAN`]. TLS calls made before the attach are not seen.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::Ebpf;
use llmslo_schema::{Diagnostic, Severity, TlsVisibility};

use super::{
    attach::attach,
    discover::{FileId, MappedFile, host_paths, mapped_files},
    elf::{TlsFinding, TlsLibrary, inspect},
};

/// Scans after an `execve()`, counted from the exec event.
pub const EXEC_RESCAN_DELAYS: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// Interval of the scan of every target process.
pub const PERIODIC_RESCAN: Duration = Duration::from_secs(1);

/// What the probe learned about one file.
#[derive(Debug, Clone)]
struct FileState {
    finding: Option<TlsFinding>,
    /// Whether the uprobes are in place; false with a plan means the attach
    /// failed (the reason is in `error`).
    attached: bool,
    error: Option<String>,
}

/// TLS state of all target processes.
pub struct TlsWatcher {
    proc_root: PathBuf,
    files: HashMap<FileId, FileState>,
    /// Files each live process maps, as of its last scan.
    process_files: HashMap<u32, HashSet<FileId>>,
    /// One entry per (pid, path), in the order found.
    visibility: BTreeMap<(u32, String), TlsVisibility>,
    diagnostics: Vec<Diagnostic>,
    /// Scans due at an instant.
    scheduled: Vec<(Instant, u32)>,
    last_periodic: Option<Instant>,
}

impl TlsWatcher {
    /// `proc_root` is `/proc`, or where the host's `/proc` is mounted in
    /// the probe's container.
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            files: HashMap::new(),
            process_files: HashMap::new(),
            visibility: BTreeMap::new(),
            diagnostics: Vec::new(),
            scheduled: Vec::new(),
            last_periodic: None,
        }
    }

    /// Scans one process: inspects each file it maps that the probe has not
    /// seen, and attaches to the ones with a TLS library.
    pub fn scan(&mut self, ebpf: &mut Ebpf, pid: u32) {
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
            if !self.files.contains_key(&file.id) {
                let state = self.inspect_and_attach(ebpf, pid, &file);
                self.files.insert(file.id, state);
            }
            self.record(pid, &file);
        }
    }

    /// Handles an exec event: scans now and again after the dynamic loader
    /// mapped the program's libraries.
    pub fn on_exec(&mut self, ebpf: &mut Ebpf, pid: u32, now: Instant) {
        self.process_files.remove(&pid);
        self.scan(ebpf, pid);
        for delay in EXEC_RESCAN_DELAYS {
            self.scheduled.push((now + delay, pid));
        }
    }

    /// Forgets a process that exited; what it showed stays in the report.
    pub fn on_exit(&mut self, pid: u32) {
        self.process_files.remove(&pid);
        self.scheduled.retain(|(_, scheduled)| *scheduled != pid);
    }

    /// Runs the scans that are due: scheduled ones, and every known process
    /// once per [`PERIODIC_RESCAN`].
    pub fn run_due(&mut self, ebpf: &mut Ebpf, now: Instant) {
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
            self.scan(ebpf, pid);
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

    /// Returns what each process showed of TLS, and the diagnostics for
    /// libraries whose plaintext stayed hidden.
    pub fn report(&self) -> (Vec<TlsVisibility>, Vec<Diagnostic>) {
        (
            self.visibility.values().cloned().collect(),
            self.diagnostics.clone(),
        )
    }

    fn inspect_and_attach(&mut self, ebpf: &mut Ebpf, pid: u32, file: &MappedFile) -> FileState {
        let paths = host_paths(&self.proc_root, pid, file);
        let mut last_error = None;
        for path in &paths {
            match inspect(path, &file.path) {
                Ok(finding) => return attach_finding(ebpf, path, finding),
                Err(error) => last_error = Some(error),
            }
        }
        if let Some(error) = last_error {
            // Not an ELF file (a JIT code cache, for example) or unreadable.
            tracing::debug!(pid, path = %file.path, %error, "skipped a mapped file");
        }
        FileState {
            finding: None,
            attached: false,
            error: None,
        }
    }

    fn record(&mut self, pid: u32, file: &MappedFile) {
        let Some(state) = self.files.get(&file.id) else {
            return;
        };
        let Some(finding) = &state.finding else {
            return;
        };
        let key = (pid, file.path.clone());
        if self.visibility.contains_key(&key) {
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
        if !state.attached {
            let code = if state.error.is_some() {
                "tls_attach_failed"
            } else {
                "tls_library_unsupported"
            };
            self.diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                code: code.to_string(),
                message: format!(
                    "pid {pid} uses {} in {}, whose plaintext the probe cannot read: {}; \
                     its HTTPS calls are missing from the result",
                    finding.library.name(),
                    file.path,
                    reason.as_deref().unwrap_or("no reason recorded"),
                ),
                pid: Some(pid),
            });
        }
        tracing::info!(
            pid,
            library = finding.library.name(),
            path = %file.path,
            visible = state.attached,
            "found a TLS library"
        );
        self.visibility.insert(key, entry);
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
