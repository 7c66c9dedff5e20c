//! Inspects ELF files for TLS libraries on a thread of its own, so that the
//! probe's event loop keeps draining the ring buffer while it reads large
//! libraries and executables (tens of milliseconds each for a debug build of
//! the probe).

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::mpsc::{self, Receiver, Sender},
    thread::{self, JoinHandle},
    time::Duration,
};

use super::{
    discover::FileId,
    elf::{TlsFinding, inspect},
};

/// A file to inspect.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: FileId,
    /// The name the process mapped, which identifies some libraries.
    pub file_name: String,
    /// Paths the probe can open the file under, best first.
    pub paths: [PathBuf; 2],
}

/// Result of one inspection.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub id: FileId,
    /// The path that parsed as ELF, with the TLS library in it if any;
    /// `None` when no path parsed (a JIT code cache, or the file vanished).
    pub parsed: Option<(PathBuf, Option<TlsFinding>)>,
}

/// The inspection thread, or inline inspection when it cannot start.
pub struct Inspector {
    requests: Option<Sender<Request>>,
    results: Receiver<Inspected>,
    worker: Option<JoinHandle<()>>,
    /// Results of inline inspections.
    inline: VecDeque<Inspected>,
}

impl Inspector {
    /// Starts the inspection thread; without one, files are inspected on
    /// the caller's thread.
    pub fn start() -> Self {
        let (request_sender, request_receiver) = mpsc::channel::<Request>();
        let (result_sender, results) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("tls-inspect".into())
            .spawn(move || {
                for request in request_receiver {
                    if result_sender.send(inspect_request(&request)).is_err() {
                        return;
                    }
                }
            });
        let (requests, worker) = match spawned {
            Ok(worker) => (Some(request_sender), Some(worker)),
            Err(error) => {
                tracing::warn!(%error, "failed to start the TLS inspection thread; inspecting inline");
                (None, None)
            }
        };
        Self {
            requests,
            results,
            worker,
            inline: VecDeque::new(),
        }
    }

    /// Queues a file for inspection.
    pub fn submit(&mut self, request: Request) {
        let request = match &self.requests {
            Some(sender) => match sender.send(request) {
                Ok(()) => return,
                Err(mpsc::SendError(request)) => request,
            },
            None => request,
        };
        self.inline.push_back(inspect_request(&request));
    }

    /// Returns a finished inspection without waiting.
    pub fn try_take(&mut self) -> Option<Inspected> {
        self.inline
            .pop_front()
            .or_else(|| self.results.try_recv().ok())
    }

    /// Waits up to `timeout` for a finished inspection.
    pub fn take_timeout(&mut self, timeout: Duration) -> Option<Inspected> {
        if let Some(inspected) = self.inline.pop_front() {
            return Some(inspected);
        }
        // A disconnected channel means the thread is gone: nothing to wait for.
        self.results.recv_timeout(timeout).ok()
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after its current file.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn inspect_request(request: &Request) -> Inspected {
    let mut last_error = None;
    for path in &request.paths {
        match inspect(path, &request.file_name) {
            Ok(finding) => {
                return Inspected {
                    id: request.id,
                    parsed: Some((path.clone(), finding)),
                };
            }
            Err(error) => last_error = Some(error),
        }
    }
    if let Some(error) = last_error {
        // Not an ELF file (a JIT code cache, for example) or unreadable.
        tracing::debug!(path = %request.file_name, %error, "skipped a mapped file");
    }
    Inspected {
        id: request.id,
        parsed: None,
    }
}
