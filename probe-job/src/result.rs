//! Builds and prints the [`ProbeResult`]: clocks, identity of the probe,
//! resource usage, drops and the kernel report.

use std::{fs, io::Write as _};

use llmslo_schema::{
    Drops, Feature, KernelReport, ProbeInfo, ResourceUsage, UnavailableSignal, envelope,
};

use crate::{
    cli::ResultFormat,
    collect::{KernelDrops, features::KernelFeatures},
    reassemble::TableStats,
};

pub use llmslo_schema::ProbeResult;

/// Reads `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC).max(0) as u64
}

/// Nanoseconds to add to a `CLOCK_MONOTONIC` timestamp to get Unix time,
/// from two clock reads made back to back.
pub fn unix_offset_ns() -> i128 {
    let before = clock_ns(libc::CLOCK_MONOTONIC);
    let realtime = clock_ns(libc::CLOCK_REALTIME);
    let after = clock_ns(libc::CLOCK_MONOTONIC);
    realtime - (before + (after - before) / 2)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec for the call to fill. Both clocks
    // exist on every Linux kernel, and with a valid pointer the call only
    // fails for unknown clocks.
    unsafe { libc::clock_gettime(clock, &mut time) };
    i128::from(time.tv_sec) * 1_000_000_000 + i128::from(time.tv_nsec)
}

pub fn probe_info(node: Option<&str>) -> ProbeInfo {
    let read = |path: &str| {
        fs::read_to_string(path)
            .map(|text| text.trim().to_string())
            .unwrap_or_default()
    };
    ProbeInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        node: node
            .map(str::to_string)
            .unwrap_or_else(|| read("/proc/sys/kernel/hostname")),
        kernel_release: read("/proc/sys/kernel/osrelease"),
    }
}

/// Returns the CPU time of this process so far, from `getrusage`, and its
/// peak memory since its exec.
pub fn resource_usage(events: u64, payload_bytes: u64) -> ResourceUsage {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill; with
    // RUSAGE_SELF getrusage only fails for an invalid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    // Linux keeps ru_maxrss across fork and exec, so it is at least the
    // peak of the process that started the probe. VmHWM starts afresh at
    // exec; ru_maxrss (in KiB) serves where /proc cannot be read.
    let peak_since_exec_kib = procfs::process::Process::myself()
        .and_then(|process| process.status())
        .ok()
        .and_then(|status| status.vmhwm);
    ResourceUsage {
        cpu_user_us: micros(usage.ru_utime),
        cpu_system_us: micros(usage.ru_stime),
        max_rss_kib: peak_since_exec_kib.unwrap_or(usage.ru_maxrss.max(0) as u64),
        events,
        payload_bytes,
    }
}

pub fn drops(kernel: KernelDrops, table: &TableStats) -> Drops {
    Drops {
        ring_buffer_full: kernel.ring_buffer_full,
        payload_truncated_bytes: kernel.payload_truncated_bytes,
        payload_read_failed: kernel.payload_read_failed,
        map_full: kernel.map_full,
        unparsed_bytes: table.unparsed_bytes,
        open_at_window_end: table.open_at_window_end,
    }
}

/// Describes the kernel features and what cannot be measured. `arrivals`
/// is why segment arrival times are unavailable, if they are, and
/// `ring_buffer_bytes` the size of the ring buffer in use, if any.
pub fn kernel_report(
    features: &KernelFeatures,
    ring_buffer_bytes: Option<u32>,
    arrivals: &Result<(), String>,
) -> KernelReport {
    let mut unavailable = Vec::new();
    for signal in features.unavailable_signals() {
        if signal.signal == "segment_arrival_times" {
            // Reported from the attach below.
            continue;
        }
        unavailable.push(signal);
    }
    if let Err(reason) = arrivals {
        unavailable.push(UnavailableSignal {
            signal: "segment_arrival_times".into(),
            reason: format!(
                "{reason}; received bytes are stamped when the target read them, which adds \
                 the target's own read delay to TTFB, TTFT and ITL"
            ),
            remedy: "a kernel with the tcp:tcp_probe tracepoint (Linux 4.16 or later)".into(),
        });
    }

    let mut report = features.report(unavailable);
    report.features.push(Feature {
        name: "segment_arrival_times".into(),
        available: arrivals.is_ok(),
        detail: Some(match arrivals {
            Ok(()) => "tcp:tcp_probe stamps received bytes with their arrival".into(),
            Err(reason) => reason.clone(),
        }),
    });
    if let Some(bytes) = ring_buffer_bytes
        && let Some(ring_buffer) = report
            .features
            .iter_mut()
            .find(|feature| feature.name == "ring_buffer")
    {
        ring_buffer.detail = Some(format!("{} MiB in use", bytes >> 20));
    }
    report
}

#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error("failed to encode the result: {0}")]
    Encode(#[from] envelope::EnvelopeError),
    #[error("failed to serialize the result as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("failed to write the result to stdout: {0}")]
    Write(#[from] std::io::Error),
}

/// Prints the result as one line on stdout.
pub fn print(result: &ProbeResult, format: ResultFormat) -> Result<(), PrintError> {
    let line = match format {
        ResultFormat::Json => serde_json::to_string(result)?,
        ResultFormat::GzipBase64 => envelope::encode_gzip_base64(result)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_offset_matches_system_time() {
        let offset = unix_offset_ns();
        let now_unix = i128::from(monotonic_ns()) + offset;
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        assert!(
            (now_unix - system).abs() < 5_000_000,
            "{now_unix} vs {system}"
        );
    }

    #[test]
    fn usage_reports_cpu_and_memory() {
        let usage = resource_usage(3, 10);
        assert!(usage.max_rss_kib > 0);
        assert_eq!(usage.events, 3);
        assert_eq!(usage.payload_bytes, 10);
    }
}
