//! Child processes that are killed when a test ends, however it ends.

use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Child, ExitStatus},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

/// A child process that is killed and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child) -> Self {
        Self {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    pub fn child(&self) -> &Child {
        self.child
            .as_ref()
            .expect("the child is present until drop")
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is present until drop")
    }

    /// Sends a signal, such as `libc::SIGINT`.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill() has no memory-safety preconditions; the pid is our
        // own child, which is not reaped before this guard drops.
        let status = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(status, 0, "kill({}, {signal}) failed", self.name);
    }

    /// Waits for the child to exit, killing it after `timeout`.
    ///
    /// # Panics
    ///
    /// When the child did not exit in time.
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait works") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child_mut().kill();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Collects a child's output stream line by line on a thread, and lets a
/// test wait for a line that contains some text.
pub struct LineReader {
    lines: Arc<Mutex<Vec<String>>>,
    arrivals: mpsc::Receiver<String>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LineReader {
    pub fn spawn(stream: impl Read + Send + 'static) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, arrivals) = mpsc::channel();
        let collected = lines.clone();
        let thread = thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line.clone());
                let _ = sender.send(line);
            }
        });
        Self {
            lines,
            arrivals,
            thread: Some(thread),
        }
    }

    /// Waits for a line containing `needle`; returns false on timeout or
    /// when the stream closed first.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.text().contains(needle) {
            return true;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.arrivals.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Everything read so far, one line per line.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for the stream to close and returns all of it.
    pub fn finish(mut self) -> String {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.text()
    }
}
