//! A PostgreSQL server for one stack: its own data directory, run as the
//! `postgres` user inside chat-api's network namespace.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    ServedDelay, StackError, monotonic_now_ns,
    system::{in_netns, run},
};

/// The port inside chat-api's network namespace.
pub const PORT: u16 = 5432;

/// Database that chat-api queries.
pub const DATABASE: &str = "chat";

/// A data directory under the stack's directory. The server is started
/// with `pg_ctl`, which detaches it, so it is stopped with `pg_ctl` too.
#[derive(Debug)]
pub struct Postgres {
    bin_dir: PathBuf,
    /// Holds the data directory and the Unix socket, owned by `postgres`.
    dir: PathBuf,
    started: bool,
}

impl Postgres {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs `initdb` as `postgres` in `<stack dir>/pg`.
    pub fn init(stack_dir: &Path) -> Result<Self, StackError> {
        let bin_dir = find_bin_dir()?;
        let dir = stack_dir.join("pg");
        fs::create_dir_all(&dir)
            .map_err(|error| StackError::new(format!("mkdir {}: {error}", dir.display())))?;
        chown_to_postgres(&dir)?;
        let postgres = Self {
            bin_dir,
            dir,
            started: false,
        };
        run(as_postgres(postgres.bin_dir.join("initdb"))
            .arg("-D")
            .arg(postgres.data_dir())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ])
            .args(["-E", "UTF8", "--locale", "C"]))?;
        // Every statement's duration, and lines that start with the
        // epoch time and the backend's pid, for `served_delays`.
        let config = postgres.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .and_then(|mut file| {
                file.write_all(b"\nlog_min_duration_statement = 0\nlog_line_prefix = '%n %p '\n")
            })
            .map_err(|error| {
                StackError::new(format!("appending to {}: {error}", config.display()))
            })?;
        Ok(postgres)
    }

    /// Starts the server in `netns` on 127.0.0.1 and on a Unix socket in
    /// its directory, which the fixture uses from the root namespace.
    pub fn start(&mut self, netns: &str) -> Result<(), StackError> {
        let server_options = format!(
            "-c listen_addresses=127.0.0.1 -p {PORT} -k {} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB \
             -c max_connections=40",
            self.dir.display()
        );
        let mut command = in_netns(netns, "runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin_dir.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &server_options, "start"]);
        self.started = true;
        run(&mut command).map_err(|error| {
            let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            StackError::new(format!("{error}\nserver log:\n{log}"))
        })?;
        Ok(())
    }

    /// Runs SQL through `psql` on the Unix socket, stopping at the first
    /// error.
    pub fn execute(&self, database: &str, sql: &str) -> Result<String, StackError> {
        run(Command::new(self.bin_dir.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &PORT.to_string(), "-U", "postgres", "-d", database])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]))
    }

    /// Creates the database, its tables and the `retrieval_delay()`
    /// function from `tests/stack/schema.sql`.
    pub fn create_schema(&self, schema_sql: &str) -> Result<(), StackError> {
        self.execute("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        self.execute(DATABASE, schema_sql)?;
        Ok(())
    }

    /// Sets how long each retrieval query sleeps in the server.
    pub fn set_query_delay_ms(&self, delay_ms: u64) -> Result<(), StackError> {
        self.execute(
            DATABASE,
            &format!("UPDATE fault_settings SET value = {delay_ms} WHERE name = 'query_delay_ms'"),
        )?;
        Ok(())
    }

    /// Returns every retrieval query the server completed, delayed or not,
    /// from its log. Each has the delay that `retrieval_delay()` was asked
    /// for (0 without the fault) and the duration of the query's execute
    /// step, which includes the sleep and the work around it. The ends move
    /// from the wall clock (to the millisecond) to `CLOCK_MONOTONIC`.
    pub fn served_delays(&self) -> Result<Vec<ServedDelay>, StackError> {
        let path = self.dir.join("server.log");
        let bytes = fs::read(&path)
            .map_err(|error| StackError::new(format!("reading {}: {error}", path.display())))?;
        let log = String::from_utf8_lossy(&bytes);
        let wall_now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as i128);
        let wall_minus_monotonic_ns = wall_now_ns - i128::from(monotonic_now_ns());
        Ok(retrieval_statements(&log)
            .into_iter()
            .map(|(ended_epoch_secs, planned_ms, actual_ms)| {
                let ended_ns = (ended_epoch_secs * 1e9) as i128 - wall_minus_monotonic_ns;
                ServedDelay {
                    ended_ns: u64::try_from(ended_ns).unwrap_or(0),
                    planned_ms,
                    actual_ms,
                }
            })
            .collect())
    }

    /// Stops the server with `pg_ctl stop -m immediate`.
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.started) {
            stop_data_dir(&self.bin_dir, &self.data_dir());
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds the retrieval statements in a server log written with
/// `log_line_prefix = '%n %p '`: `(end in epoch seconds, requested delay
/// ms, execute duration ms)`. The requested delay is the one the same
/// backend logged during that execute step: a statement that failed logs
/// no duration, so an error or the next statement's duration line drops
/// a delay still pending.
fn retrieval_statements(log: &str) -> Vec<(f64, f64, f64)> {
    let mut planned_by_pid: HashMap<&str, f64> = HashMap::new();
    let mut statements = Vec::new();
    for line in log.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(epoch), Some(pid), Some(message)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(epoch_secs) = epoch.parse::<f64>() else {
            continue;
        };
        if let Some(planned) = message.strip_prefix("LOG:  retrieval_delay planned_ms=") {
            if let Ok(planned_ms) = planned.trim().parse() {
                planned_by_pid.insert(pid, planned_ms);
            }
        } else if let Some(rest) = message.strip_prefix("LOG:  duration: ") {
            let planned_ms = planned_by_pid.remove(pid).unwrap_or(0.0);
            // The extended protocol logs parse, bind and execute apart,
            // and the query runs in the execute step.
            if let Some((duration, step)) = rest.split_once(" ms  ")
                && (step.starts_with("execute ") || step.starts_with("statement: "))
                && step.contains("retrieval_delay()")
                && let Ok(duration_ms) = duration.parse()
            {
                statements.push((epoch_secs, planned_ms, duration_ms));
            }
        } else if message.starts_with("ERROR:") || message.starts_with("FATAL:") {
            planned_by_pid.remove(pid);
        }
    }
    statements
}

/// Stops a server left running in `data_dir`, if any.
pub fn stop_data_dir(bin_dir: &Path, data_dir: &Path) {
    if !data_dir.join("postmaster.pid").exists() {
        return;
    }
    let result = run(as_postgres(bin_dir.join("pg_ctl"))
        .arg("-D")
        .arg(data_dir)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"]));
    if let Err(error) = result {
        eprintln!(
            "stack: could not stop PostgreSQL in {}: {error}",
            data_dir.display()
        );
    }
}

/// Stops a server left behind by a stack directory of a dead process.
pub fn stop_leftover(stack_dir: &Path) {
    if let Ok(bin_dir) = find_bin_dir() {
        stop_data_dir(&bin_dir, &stack_dir.join("pg").join("data"));
    }
}

fn as_postgres(program: PathBuf) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

/// Finds the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn find_bin_dir() -> Result<PathBuf, StackError> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .map_err(|error| {
            StackError::new(format!(
                "PostgreSQL is not installed ({}: {error}); run scripts/setup.sh",
                root.display()
            ))
        })?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        StackError::new(format!(
            "no PostgreSQL server binaries under {}; run scripts/setup.sh",
            root.display()
        ))
    })
}

fn chown_to_postgres(path: &Path) -> Result<(), StackError> {
    let name = CString::new("postgres").expect("no NUL in a literal");
    // SAFETY: getpwnam returns a pointer to static storage or null; the
    // fields are read at once, before any other getpw* call.
    let (uid, gid) = unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            return Err(StackError::new(
                "the postgres user does not exist; install postgresql with scripts/setup.sh",
            ));
        }
        ((*entry).pw_uid, (*entry).pw_gid)
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|error| StackError::new(format!("chown postgres {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_statements_pair_delay_and_execute() {
        let log = "\
1796482513.100 41 LOG:  duration: 0.041 ms  parse <unnamed>: SELECT d.id, d.title FROM retrieval_delay() AS gate
1796482513.101 41 LOG:  duration: 0.230 ms  execute <unnamed>: SELECT d.id, d.title FROM retrieval_delay() AS gate
1796482513.200 42 LOG:  retrieval_delay planned_ms=500
1796482513.200 42 CONTEXT:  PL/pgSQL function retrieval_delay() line 7 at RAISE
1796482513.200 42 STATEMENT:  SELECT d.id, d.title FROM retrieval_delay() AS gate
1796482513.300 41 LOG:  duration: 0.120 ms  statement: SELECT 1
1796482513.701 42 LOG:  duration: 500.712 ms  execute _pg3_0: SELECT d.id, d.title FROM retrieval_delay() AS gate
1796482513.800 43 LOG:  duration: 0.050 ms  bind <unnamed>: SELECT d.id FROM retrieval_delay() AS gate
1796482513.900 44 LOG:  retrieval_delay planned_ms=500
1796482514.000 44 ERROR:  canceling statement due to user request
1796482514.100 44 LOG:  duration: 0.210 ms  execute <unnamed>: SELECT d.id, d.title FROM retrieval_delay() AS gate
";
        assert_eq!(
            retrieval_statements(log),
            vec![
                (1796482513.101, 0.0, 0.230),
                (1796482513.701, 500.0, 500.712),
                (1796482514.100, 0.0, 0.210)
            ]
        );
    }
}
