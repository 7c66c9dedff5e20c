//! Samples the CPU statistics of the target processes' cgroups: CPU usage
//! and CFS bandwidth throttling.
//!
//! The cpu controller lives in cgroup v1 on v1 and hybrid hosts
//! (`cpu.stat` with `nr_periods`, `nr_throttled`, `throttled_time` in ns,
//! and `cpuacct.usage` in ns, often in one `cpu,cpuacct` hierarchy) and in
//! cgroup v2 elsewhere (`cpu.stat` with `usage_usec`, `nr_periods`,
//! `nr_throttled`, `throttled_usec`). Each process's cgroups come from
//! `/proc/PID/cgroup`; the hierarchy that holds the cpu controller wins.

use std::{
    collections::HashSet,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use llmslo_schema::{CgroupCpu, CpuStatSample};
use procfs::process::{MountInfo, Process};

/// How often `cpu.stat` is read. CFS periods are 100 ms by default, so
/// this interval resolves throttling per period.
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Cgroups sampled at most; more distinct cgroups among the targets are
/// reported and skipped, to bound the probe's reads per tick.
pub const MAX_CGROUPS: usize = 64;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Path inside the hierarchy that is mounted (`/` unless bind-mounted
    /// or in a cgroup namespace).
    root: String,
    point: PathBuf,
}

impl Mount {
    /// Returns the directory of a cgroup given by its `/proc/PID/cgroup`
    /// path, when it exists under this mount.
    fn directory(&self, cgroup_path: &str) -> Option<PathBuf> {
        // Paths outside this process's cgroup namespace start with `/..`;
        // a host-wide mount (the probe Job mounts the host's cgroupfs)
        // holds them below its root.
        let mut relative = cgroup_path;
        while let Some(rest) = relative.strip_prefix("/..") {
            relative = rest;
        }
        if self.root != "/" {
            relative = relative
                .strip_prefix(self.root.as_str())
                .unwrap_or(relative);
        }
        let directory = self.point.join(relative.trim_start_matches('/'));
        directory.is_dir().then_some(directory)
    }
}

/// The mounts that carry CPU statistics on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    v1_cpu: Option<Mount>,
    v1_cpuacct: Option<Mount>,
    v2: Option<Mount>,
}

impl CgroupMounts {
    /// Finds the mounts in `/proc/self/mountinfo`; none when it cannot be
    /// read.
    pub fn detect() -> Self {
        match Process::myself().and_then(|process| process.mountinfo()) {
            Ok(mounts) => Self::from_mountinfo(mounts.into_iter()),
            Err(error) => {
                tracing::warn!(%error, "failed to read /proc/self/mountinfo; cgroup CPU statistics are unavailable");
                Self::default()
            }
        }
    }

    fn from_mountinfo(mounts: impl Iterator<Item = MountInfo>) -> Self {
        let mut found = Self::default();
        for mount in mounts {
            let entry = Mount {
                root: mount.root.clone(),
                point: mount.mount_point.clone(),
            };
            match mount.fs_type.as_str() {
                "cgroup2" => {
                    found.v2.get_or_insert(entry);
                }
                "cgroup" => {
                    if mount.super_options.contains_key("cpu") {
                        found.v1_cpu.get_or_insert(entry.clone());
                    }
                    if mount.super_options.contains_key("cpuacct") {
                        found.v1_cpuacct.get_or_insert(entry);
                    }
                }
                _ => {}
            }
        }
        found
    }
}

/// The files one cgroup's statistics come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum StatFiles {
    /// cgroup v1: the cpu controller's `cpu.stat` and, when the cpuacct
    /// controller is mounted, `cpuacct.usage`.
    V1 {
        cpu_stat: PathBuf,
        usage: Option<PathBuf>,
    },
    /// cgroup v2 `cpu.stat`. Without the cpu controller enabled it has
    /// only the usage fields, and the throttling fields read as 0.
    V2 { cpu_stat: PathBuf },
}

#[derive(Debug)]
struct SampledCgroup {
    /// Path below the hierarchy's root, for the result.
    path: String,
    files: StatFiles,
    open: OpenFiles,
    samples: Vec<CpuStatSample>,
    /// Set once a read failed, so that a removed cgroup is logged once.
    failed: bool,
}

/// Samples `cpu.stat` of the target cgroups.
#[derive(Debug)]
pub struct CpuSampler {
    mounts: CgroupMounts,
    cgroups: Vec<SampledCgroup>,
    seen_pids: HashSet<u32>,
    /// Cgroups beyond [`MAX_CGROUPS`].
    pub skipped_cgroups: usize,
    /// Processes whose cgroup could not be found under the mounts.
    pub unlocated_pids: usize,
}

impl CpuSampler {
    pub fn new(mounts: CgroupMounts) -> Self {
        Self {
            mounts,
            cgroups: Vec::new(),
            seen_pids: HashSet::new(),
            skipped_cgroups: 0,
            unlocated_pids: 0,
        }
    }

    /// Starts sampling the cgroups of processes not seen before.
    pub fn add_processes(&mut self, pids: &[u32]) {
        for &pid in pids {
            if !self.seen_pids.insert(pid) {
                continue;
            }
            let Ok(cgroups) = Process::new(pid as i32).and_then(|process| process.cgroups()) else {
                // The process exited before it was looked at.
                continue;
            };
            let lines: Vec<(u32, Vec<String>, String)> = cgroups
                .into_iter()
                .map(|cgroup| (cgroup.hierarchy, cgroup.controllers, cgroup.pathname))
                .collect();
            match self.locate(&lines) {
                Some((path, files)) => self.add(path, files),
                None => {
                    self.unlocated_pids += 1;
                    tracing::debug!(pid, "no cgroup with CPU statistics found for the process");
                }
            }
        }
    }

    /// Picks the statistics files of one process from its
    /// `(hierarchy, controllers, path)` lines.
    fn locate(&self, lines: &[(u32, Vec<String>, String)]) -> Option<(String, StatFiles)> {
        let v1_path = |controller: &str| {
            lines
                .iter()
                .find(|(hierarchy, controllers, _)| {
                    *hierarchy != 0 && controllers.iter().any(|name| name == controller)
                })
                .map(|(_, _, path)| path.as_str())
        };
        if let (Some(mount), Some(path)) = (&self.mounts.v1_cpu, v1_path("cpu"))
            && let Some(directory) = mount.directory(path)
        {
            let usage = self
                .mounts
                .v1_cpuacct
                .as_ref()
                .zip(v1_path("cpuacct"))
                .and_then(|(mount, path)| mount.directory(path))
                .map(|directory| directory.join("cpuacct.usage"));
            let files = StatFiles::V1 {
                cpu_stat: directory.join("cpu.stat"),
                usage,
            };
            return Some((path.to_string(), files));
        }
        let path = lines
            .iter()
            .find(|(hierarchy, _, _)| *hierarchy == 0)
            .map(|(_, _, path)| path.as_str())?;
        let directory = self.mounts.v2.as_ref()?.directory(path)?;
        let files = StatFiles::V2 {
            cpu_stat: directory.join("cpu.stat"),
        };
        Some((path.to_string(), files))
    }

    fn add(&mut self, path: String, files: StatFiles) {
        if self.cgroups.iter().any(|cgroup| cgroup.files == files) {
            return;
        }
        if self.cgroups.len() >= MAX_CGROUPS {
            self.skipped_cgroups += 1;
            return;
        }
        tracing::debug!(cgroup = %path, ?files, "sampling the cgroup's CPU statistics");
        self.cgroups.push(SampledCgroup {
            path,
            files,
            open: OpenFiles::default(),
            samples: Vec::new(),
            failed: false,
        });
    }

    /// Reads every cgroup's statistics once; `at_ns` is `CLOCK_MONOTONIC`.
    pub fn sample(&mut self, at_ns: u64) {
        for cgroup in &mut self.cgroups {
            match read_sample(&cgroup.files, &mut cgroup.open, at_ns) {
                Ok(sample) => cgroup.samples.push(sample),
                Err(error) => {
                    // A removed cgroup may come back at the same path (a
                    // restarted unit or container), which only a new open
                    // reaches.
                    cgroup.open.close();
                    if !cgroup.failed {
                        cgroup.failed = true;
                        tracing::debug!(cgroup = %cgroup.path, %error, "failed to read the cgroup's CPU statistics");
                    }
                }
            }
        }
    }

    /// Returns the samples of every cgroup that has any, and why there are
    /// none when no cgroup could be sampled.
    pub fn finish(self) -> (Vec<CgroupCpu>, Result<(), String>) {
        let availability = if self.cgroups.is_empty() {
            Err(match (&self.mounts.v1_cpu, &self.mounts.v2) {
                (None, None) => "no cgroup hierarchy with CPU statistics is mounted (no cgroup2 \
                                 mount and no cgroup v1 mount with the cpu controller)"
                    .to_string(),
                _ => format!(
                    "the cgroups of {} target processes were not found under the cgroup mounts",
                    self.unlocated_pids
                ),
            })
        } else {
            Ok(())
        };
        let cgroups = self
            .cgroups
            .into_iter()
            .filter(|cgroup| !cgroup.samples.is_empty())
            .map(|cgroup| CgroupCpu {
                cgroup_path: cgroup.path,
                samples: cgroup.samples,
            })
            .collect();
        (cgroups, availability)
    }
}

/// The statistics files of one cgroup, kept open between samples: each
/// sample reads them again from the start, which saves an open and a close
/// per read and per tick.
#[derive(Debug, Default)]
struct OpenFiles {
    cpu_stat: Option<File>,
    usage: Option<File>,
    /// Reused for every read.
    bytes: Vec<u8>,
}

impl OpenFiles {
    fn close(&mut self) {
        self.cpu_stat = None;
        self.usage = None;
    }
}

fn read_sample(files: &StatFiles, open: &mut OpenFiles, at_ns: u64) -> io::Result<CpuStatSample> {
    match files {
        StatFiles::V1 { cpu_stat, usage } => {
            let usage_ns = match usage {
                Some(path) => parse_number(path, reread(&mut open.usage, path, &mut open.bytes)?)?,
                None => 0,
            };
            let stat = reread(&mut open.cpu_stat, cpu_stat, &mut open.bytes)?;
            Ok(parse_v1(stat, usage_ns, at_ns))
        }
        StatFiles::V2 { cpu_stat } => Ok(parse_v2(
            reread(&mut open.cpu_stat, cpu_stat, &mut open.bytes)?,
            at_ns,
        )),
    }
}

/// Reads all of `path` through `file`, which is opened on first use and
/// kept. cgroupfs renders a file anew for each read at offset 0.
fn reread<'a>(file: &mut Option<File>, path: &Path, bytes: &'a mut Vec<u8>) -> io::Result<&'a str> {
    let file = match file {
        Some(file) => file,
        None => file.insert(File::open(path)?),
    };
    bytes.clear();
    loop {
        let start = bytes.len();
        bytes.resize(start + 4096, 0);
        match file.read_at(&mut bytes[start..], start as u64) {
            Ok(0) => {
                bytes.truncate(start);
                break;
            }
            Ok(read) => bytes.truncate(start + read),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => bytes.truncate(start),
            Err(error) => return Err(error),
        }
    }
    std::str::from_utf8(bytes).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8: {error}", path.display()),
        )
    })
}

fn parse_number(path: &Path, text: &str) -> io::Result<u64> {
    text.trim().parse().map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {:?}, not a number: {error}",
                path.display(),
                text.trim()
            ),
        )
    })
}

/// Returns the value of `key` in `cpu.stat`'s `key value` lines; absent
/// keys read as 0.
fn stat_value(stat: &str, key: &str) -> u64 {
    stat.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Parses a cgroup v1 `cpu.stat`, where `throttled_time` is in ns, with
/// the cpuacct controller's usage in ns.
fn parse_v1(stat: &str, usage_ns: u64, at_ns: u64) -> CpuStatSample {
    CpuStatSample {
        at_ns,
        usage_usec: usage_ns / 1_000,
        nr_periods: stat_value(stat, "nr_periods"),
        nr_throttled: stat_value(stat, "nr_throttled"),
        throttled_usec: stat_value(stat, "throttled_time") / 1_000,
    }
}

fn parse_v2(stat: &str, at_ns: u64) -> CpuStatSample {
    CpuStatSample {
        at_ns,
        usage_usec: stat_value(stat, "usage_usec"),
        nr_periods: stat_value(stat, "nr_periods"),
        nr_throttled: stat_value(stat, "nr_throttled"),
        throttled_usec: stat_value(stat, "throttled_usec"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn v1_stat_converts_nanoseconds() {
        let stat = "nr_periods 40\nnr_throttled 12\nthrottled_time 345678901\nnr_bursts 0\n";
        let sample = parse_v1(stat, 2_500_000_999, 7);
        assert_eq!(sample.at_ns, 7);
        assert_eq!(sample.usage_usec, 2_500_000);
        assert_eq!(sample.nr_periods, 40);
        assert_eq!(sample.nr_throttled, 12);
        assert_eq!(sample.throttled_usec, 345_678);
    }

    #[test]
    fn v2_stat_without_cpu_controller_has_usage_only() {
        let stat = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        let sample = parse_v2(stat, 1);
        assert_eq!(sample.usage_usec, 1234);
        assert_eq!(sample.nr_periods, 0);
        assert_eq!(sample.throttled_usec, 0);
    }

    #[test]
    fn v2_stat_with_cpu_controller() {
        let stat = "usage_usec 90\nuser_usec 60\nsystem_usec 30\nnr_periods 5\nnr_throttled 2\n\
                    throttled_usec 1500\nnr_bursts 0\nburst_usec 0\n";
        let sample = parse_v2(stat, 1);
        assert_eq!(sample.nr_periods, 5);
        assert_eq!(sample.nr_throttled, 2);
        assert_eq!(sample.throttled_usec, 1500);
    }

    fn mountinfo(lines: &[&str]) -> CgroupMounts {
        CgroupMounts::from_mountinfo(
            lines
                .iter()
                .map(|line| MountInfo::from_line(line).expect("valid mountinfo line")),
        )
    }

    #[test]
    fn hybrid_mounts_with_split_controllers() {
        let mounts = mountinfo(&[
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
            "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct",
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        ]);
        assert_eq!(
            mounts.v1_cpu.unwrap().point,
            PathBuf::from("/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            mounts.v1_cpuacct.unwrap().point,
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(
            mounts.v2.unwrap().point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn combined_cpu_cpuacct_hierarchy() {
        let mounts = mountinfo(&[
            "30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
        ]);
        assert_eq!(mounts.v1_cpu, mounts.v1_cpuacct);
        assert!(mounts.v2.is_none());
    }

    #[test]
    fn cpu_controller_hierarchy_wins_over_v2() {
        let root = std::env::temp_dir().join(format!("llmslo-cgroup-cpu-{}", std::process::id()));
        let v1 = root.join("cpu");
        let v2 = root.join("unified");
        fs::create_dir_all(v1.join("kubepods/pod1")).unwrap();
        fs::create_dir_all(v2.join("kubepods/pod1")).unwrap();
        let sampler = CpuSampler::new(CgroupMounts {
            v1_cpu: Some(Mount {
                root: "/".into(),
                point: v1.clone(),
            }),
            v1_cpuacct: None,
            v2: Some(Mount {
                root: "/".into(),
                point: v2.clone(),
            }),
        });
        let lines = vec![
            (1, vec!["cpu".to_string()], "/kubepods/pod1".to_string()),
            (0, vec![], "/kubepods/pod1".to_string()),
        ];
        let (path, files) = sampler.locate(&lines).unwrap();
        assert_eq!(path, "/kubepods/pod1");
        assert_eq!(
            files,
            StatFiles::V1 {
                cpu_stat: v1.join("kubepods/pod1/cpu.stat"),
                usage: None
            }
        );

        let v2_only = vec![(0, vec![], "/../../kubepods/pod1".to_string())];
        let (_, files) = sampler.locate(&v2_only).unwrap();
        assert_eq!(
            files,
            StatFiles::V2 {
                cpu_stat: v2.join("kubepods/pod1/cpu.stat")
            },
            "paths outside the cgroup namespace resolve below the mount"
        );

        let missing = vec![(0, vec![], "/elsewhere".to_string())];
        let located = sampler.locate(&missing);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(located, None);
    }

    #[test]
    fn reread_follows_file_content() {
        let path = std::env::temp_dir().join(format!("llmslo-reread-{}", std::process::id()));
        let long = "nr_periods 1\n".repeat(1000);
        fs::write(&path, "usage_usec 1\n").unwrap();
        let (mut file, mut bytes) = (None, Vec::new());
        assert_eq!(
            reread(&mut file, &path, &mut bytes).unwrap(),
            "usage_usec 1\n"
        );
        fs::write(&path, &long).unwrap();
        let text = reread(&mut file, &path, &mut bytes).map(str::to_owned);
        fs::remove_file(&path).unwrap();
        assert_eq!(
            text.unwrap(),
            long,
            "a file longer than one read, same open file"
        );

        let mut closed = None;
        let error = reread(&mut closed, &path, &mut bytes).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn sample_reopens_failed_file() {
        let directory =
            std::env::temp_dir().join(format!("llmslo-cgroup-again-{}", std::process::id()));
        let cpu_stat = directory.join("cpu.stat");
        // A directory opens but fails to read, as the kept file of a removed
        // cgroup does.
        fs::create_dir_all(&cpu_stat).unwrap();
        let mut sampler = CpuSampler::new(CgroupMounts {
            v1_cpu: None,
            v1_cpuacct: None,
            v2: None,
        });
        sampler.add(
            "/pod".into(),
            StatFiles::V2 {
                cpu_stat: cpu_stat.clone(),
            },
        );
        sampler.sample(1);
        fs::remove_dir(&cpu_stat).unwrap();
        fs::write(&cpu_stat, "usage_usec 30\n").unwrap();
        sampler.sample(2);
        fs::remove_dir_all(&directory).unwrap();

        let samples = &sampler.cgroups[0].samples;
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].usage_usec, 30);
    }
}
