//! Loads the embedded eBPF object and attaches its programs to
//! tracepoints.

use std::{fs, io, path::Path};

use aya::{
    Ebpf, EbpfError, EbpfLoader, VerifierLogLevel,
    maps::MapError,
    programs::{
        ProgramError, TracePoint,
        trace_point::{TracePointLink, TracePointLinkId},
    },
};
use llmslo_probe_common::{PidNamespaces, TcpProbeLayout};

use super::btf::Btf;
use crate::signals::KernelGlobals;

/// The eBPF object built by build.rs from `probe-ebpf/`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmslo-probe-ebpf"));

/// Each program and the tracepoint (category, name) it attaches to.
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sys_enter_read", "syscalls", "sys_enter_read"),
    ("sys_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("sys_enter_readv", "syscalls", "sys_enter_readv"),
    ("sys_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("sys_enter_write", "syscalls", "sys_enter_write"),
    ("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("sys_enter_writev", "syscalls", "sys_enter_writev"),
    ("sys_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("sys_enter_recvmmsg", "syscalls", "sys_enter_recvmmsg"),
    ("sys_enter_sendmmsg", "syscalls", "sys_enter_sendmmsg"),
    ("sys_exit_data", "syscalls", "sys_exit_read"),
    ("sys_exit_data", "syscalls", "sys_exit_recvfrom"),
    ("sys_exit_data", "syscalls", "sys_exit_readv"),
    ("sys_exit_data", "syscalls", "sys_exit_recvmsg"),
    ("sys_exit_data", "syscalls", "sys_exit_write"),
    ("sys_exit_data", "syscalls", "sys_exit_sendto"),
    ("sys_exit_data", "syscalls", "sys_exit_writev"),
    ("sys_exit_data", "syscalls", "sys_exit_sendmsg"),
    ("sys_exit_data", "syscalls", "sys_exit_recvmmsg"),
    ("sys_exit_data", "syscalls", "sys_exit_sendmmsg"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_enter_accept", "syscalls", "sys_enter_accept"),
    ("sys_enter_accept", "syscalls", "sys_enter_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept4"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sched_process_exec", "sched", "sched_process_exec"),
];

/// The optional program that reports TCP segment arrivals.
const ARRIVAL_PROGRAM: (&str, &str, &str) = ("tcp_probe", "tcp", "tcp_probe");

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the kernel denied creating eBPF map {map} ({source}); the probe needs CAP_BPF and \
         CAP_PERFMON, and in a container a seccomp profile that allows bpf() (Unconfined, or \
         --privileged)"
    )]
    MapDenied {
        map: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to load the embedded eBPF object: {0}")]
    Object(#[source] Box<EbpfError>),
    #[error("eBPF program {program} is missing from the embedded object; rebuild llmslo-probe")]
    MissingProgram { program: &'static str },
    #[error(
        "the kernel verifier rejected eBPF program {program} ({source}); this kernel may be too \
         old or too restricted for the probe. Run with -v to print the verifier log{}",
        if log.is_some() { " (printed above)" } else { "" }
    )]
    Verifier {
        program: &'static str,
        #[source]
        source: io::Error,
        /// The verifier log; kept only with -v.
        log: Option<String>,
    },
    #[error("failed to load eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("failed to attach eBPF program {program} to tracepoint {category}:{name}: {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
}

/// Most events do not wake user space, which reads the ring buffer on a
/// timer instead. The event that fills the ring buffer past its size
/// divided by this (a quarter) wakes it at once.
const WAKEUP_DIVISOR: u32 = 4;

/// Creates the maps and loads every program, without attaching.
///
/// `filter_flags` and `pid_namespaces` are written to the read-only
/// globals `FILTER_FLAGS` and `TARGET_PID_NAMESPACES` before load (with
/// `WAKEUP_BYTES`, derived from `ring_buffer_bytes`), so that
/// the verifier and JIT see them as constants; `signals` holds the globals
/// of the component signal programs, which [`crate::signals::programs`]
/// loads later.
///
/// # Errors
///
/// [`LoadError`] naming the map or program and what to do; with
/// `keep_verifier_log` a verifier rejection carries the full log.
pub fn load(
    ring_buffer_bytes: u32,
    filter_flags: u8,
    pid_namespaces: &PidNamespaces,
    tcp_probe_layout: TcpProbeLayout,
    signals: &KernelGlobals,
    keep_verifier_log: bool,
) -> Result<Ebpf, LoadError> {
    let wakeup_bytes = u64::from(ring_buffer_bytes / WAKEUP_DIVISOR);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("FILTER_FLAGS", &filter_flags, true)
        .override_global("TARGET_PID_NAMESPACES", pid_namespaces, true)
        .override_global("TCP_PROBE_LAYOUT", &tcp_probe_layout, true)
        .override_global("SCHED_LAYOUT", &signals.sched_layout, true)
        .override_global("TCP_LAYOUT", &signals.tcp_layout, true)
        .override_global(
            "LONG_WAIT_THRESHOLD_NS",
            &signals.long_wait_threshold_ns,
            true,
        )
        .verifier_log_level(if keep_verifier_log {
            VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS
        } else {
            VerifierLogLevel::default()
        })
        .load(EBPF_OBJECT)
        .map_err(|error| match error {
            EbpfError::MapError(MapError::CreateError { name, io_error })
                if io_error.kind() == io::ErrorKind::PermissionDenied =>
            {
                LoadError::MapDenied {
                    map: name,
                    source: io_error,
                }
            }
            other => LoadError::Object(Box::new(other)),
        })?;

    let arrivals = (tcp_probe_layout != TcpProbeLayout::default()).then_some(&ARRIVAL_PROGRAM);
    for (program, _, _) in TRACEPOINTS.iter().chain(arrivals) {
        let tracepoint = tracepoint_mut(&mut ebpf, program)?;
        if tracepoint.fd().is_ok() {
            continue;
        }
        tracepoint
            .load()
            .map_err(|error| program_error(program, error, keep_verifier_log))?;
        tracing::debug!(program, "loaded eBPF program");
    }
    Ok(ebpf)
}

/// Attaches every program and returns the links, for
/// [`take_links`]. Programs attach one by one, so events start flowing
/// before the last attach returns.
///
/// # Errors
///
/// [`LoadError::Attach`] with the program and tracepoint.
pub fn attach(ebpf: &mut Ebpf) -> Result<Vec<(&'static str, TracePointLinkId)>, LoadError> {
    let mut links = Vec::with_capacity(TRACEPOINTS.len());
    for &(program, category, name) in TRACEPOINTS {
        let link = tracepoint_mut(ebpf, program)?
            .attach(category, name)
            .map_err(|source| LoadError::Attach {
                program,
                category,
                name,
                source: Box::new(source),
            })?;
        links.push((program, link));
    }
    tracing::debug!(count = TRACEPOINTS.len(), "attached eBPF programs");
    Ok(links)
}

/// Takes the links that [`attach`] returned out of their programs, so
/// that each can be dropped (detached) on its own thread. Links already
/// gone are skipped.
pub fn take_links(
    ebpf: &mut Ebpf,
    links: Vec<(&'static str, TracePointLinkId)>,
) -> Vec<TracePointLink> {
    links
        .into_iter()
        .filter_map(|(program, link)| {
            let owned = match tracepoint_mut(ebpf, program) {
                Ok(tracepoint) => tracepoint
                    .take_link(link)
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            owned
                .inspect_err(|error| tracing::debug!(program, %error, "failed to take a link"))
                .ok()
        })
        .collect()
}

/// Attaches the program that reports TCP segment arrivals. Without it the
/// probe still works, with received bytes stamped at their read.
///
/// # Errors
///
/// [`LoadError::Attach`] when the tracepoint cannot be attached.
pub fn attach_arrivals(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let (program, category, name) = ARRIVAL_PROGRAM;
    tracepoint_mut(ebpf, program)?
        .attach(category, name)
        .map_err(|source| LoadError::Attach {
            program,
            category,
            name,
            source: Box::new(source),
        })?;
    Ok(())
}

/// Reads the offsets of the `tcp:tcp_probe` fields the arrival program
/// needs from the tracepoint's format file.
///
/// # Errors
///
/// Why arrival times are unavailable: the tracepoint or a field is missing.
pub fn tcp_probe_layout(tracefs: &Path) -> Result<TcpProbeLayout, String> {
    let path = tracefs.join("events/tcp/tcp_probe/format");
    let format = fs::read_to_string(&path)
        .map_err(|error| format!("{} cannot be read ({error})", path.display()))?;
    let field = |wanted: &str, min_size: u32| -> Result<u32, String> {
        format
            .lines()
            .filter_map(parse_format_field)
            .find(|(name, _, _)| *name == wanted)
            .filter(|(_, _, size)| *size >= min_size)
            .map(|(_, offset, _)| offset)
            .ok_or_else(|| format!("tcp:tcp_probe has no usable field {wanted} on this kernel"))
    };
    // saddr and daddr hold a struct sockaddr_in6 (28 bytes) or sockaddr_in.
    Ok(TcpProbeLayout {
        saddr: field("saddr", 28)?,
        daddr: field("daddr", 28)?,
        sport: field("sport", 2)?,
        dport: field("dport", 2)?,
        data_len: field("data_len", 2)?,
        // Older kernels have no skbaddr; see `with_sequence_numbers`.
        skbaddr: field("skbaddr", 8).unwrap_or(0),
        snd_nxt: field("snd_nxt", 4).unwrap_or(0),
        snd_una: field("snd_una", 4).unwrap_or(0),
        srtt: field("srtt", 4).unwrap_or(0),
        ..TcpProbeLayout::default()
    })
}

/// Adds what the `tcp_probe` program needs to read each segment's sequence
/// number, which shows gaps in the received data. Without it (a kernel
/// whose `tcp:tcp_probe` has no `skbaddr`, or no BTF) arrivals still work,
/// with no sequence numbers.
///
/// # Errors
///
/// Why sequence numbers cannot be read; the layout is returned unchanged.
pub fn with_sequence_numbers(
    layout: TcpProbeLayout,
    btf: &Btf,
) -> Result<TcpProbeLayout, (TcpProbeLayout, String)> {
    if layout.skbaddr == 0 {
        return Err((layout, NO_SKBADDR.into()));
    }
    // The TCP control block (`tcp_skb_cb`) lives in the `cb` scratch area
    // of the `sk_buff` while TCP handles the segment.
    match (
        member_offset(btf, "sk_buff", "cb"),
        member_offset(btf, "tcp_skb_cb", "seq"),
    ) {
        (Ok(cb), Ok(seq)) => Ok(TcpProbeLayout {
            skb_seq: cb + seq,
            ..layout
        }),
        (Err(reason), _) | (_, Err(reason)) => Err((layout, reason)),
    }
}

/// Adds what the `tcp_probe` program needs to read the IPv4 ID and the
/// packet count of each segment, which show the peer's packets that never
/// arrived. Without it arrivals still work, and only gaps in the sequence
/// numbers show losses.
///
/// # Errors
///
/// Why packet IDs cannot be read; the layout is returned unchanged.
pub fn with_packet_ids(
    layout: TcpProbeLayout,
    btf: &Btf,
) -> Result<TcpProbeLayout, (TcpProbeLayout, String)> {
    if layout.skbaddr == 0 {
        return Err((layout, NO_SKBADDR.into()));
    }
    if cfg!(target_pointer_width = "32") {
        // There `sk_buff.end` is a pointer, not an offset from `head`.
        return Err((layout, "packet IDs are read on 64-bit kernels only".into()));
    }
    let offsets = (|| {
        let gso_size = member_offset(btf, "skb_shared_info", "gso_size")?;
        if member_offset(btf, "skb_shared_info", "gso_segs")? != gso_size + 2 {
            return Err("skb_shared_info.gso_segs does not follow gso_size on this kernel".into());
        }
        Ok::<_, String>(TcpProbeLayout {
            skb_head: member_offset(btf, "sk_buff", "head")?,
            skb_network_header: member_offset(btf, "sk_buff", "network_header")?,
            skb_end: member_offset(btf, "sk_buff", "end")?,
            shinfo_gso_size: gso_size,
            ..layout
        })
    })();
    offsets.map_err(|reason| (layout, reason))
}

const NO_SKBADDR: &str = "tcp:tcp_probe has no skbaddr field on this kernel; newer kernels have it";

fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32, String> {
    btf.member_offset(name, member)
        .ok_or_else(|| format!("the kernel's BTF has no usable {name}.{member}"))
}

/// Parses `field:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;` into
/// `(name, offset, size)`.
fn parse_format_field(line: &str) -> Option<(&str, u32, u32)> {
    let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
    let name = declaration.split_whitespace().last()?;
    let name = name.split('[').next()?;
    let number = |key: &str| -> Option<u32> {
        line.split(';')
            .find_map(|part| part.trim().strip_prefix(key))?
            .parse()
            .ok()
    };
    Some((name, number("offset:")?, number("size:")?))
}

fn tracepoint_mut<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut TracePoint, LoadError> {
    ebpf.program_mut(program)
        .ok_or(LoadError::MissingProgram { program })?
        .try_into()
        .map_err(|source| LoadError::Program {
            program,
            source: Box::new(source),
        })
}

fn program_error(program: &'static str, error: ProgramError, keep_log: bool) -> LoadError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier {
            program,
            source: io_error,
            log: keep_log.then(|| verifier_log.to_string()),
        },
        source => LoadError::Program {
            program,
            source: Box::new(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_fields_parse() {
        assert_eq!(
            parse_format_field("\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;"),
            Some(("saddr", 8, 28))
        );
        assert_eq!(
            parse_format_field("\tfield:__u16 data_len;\toffset:76;\tsize:2;\tsigned:0;"),
            Some(("data_len", 76, 2))
        );
        assert_eq!(parse_format_field("name: tcp_probe"), None);
    }

    #[test]
    fn verifier_rejection_points_to_verbose_flag() {
        let error = program_error(
            "sys_exit_data",
            ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(libc::EACCES),
                verifier_log: aya_obj::VerifierLog::new("R1 invalid mem access".into()),
            },
            false,
        );
        let message = error.to_string();
        assert!(
            message.contains("rejected eBPF program sys_exit_data"),
            "{message}"
        );
        assert!(message.contains("Run with -v"), "{message}");
        assert!(!message.contains("R1 invalid mem access"), "{message}");
        assert!(!message.contains("printed above"), "{message}");
    }

    #[test]
    fn verifier_log_is_kept_with_verbose_flag() {
        let error = program_error(
            "sys_exit_data",
            ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(libc::EACCES),
                verifier_log: aya_obj::VerifierLog::new("R1 invalid mem access".into()),
            },
            true,
        );
        assert!(error.to_string().contains("printed above"));
        let LoadError::Verifier { log, .. } = error else {
            panic!("not a verifier error");
        };
        assert_eq!(log.as_deref(), Some("R1 invalid mem access"));
    }

    #[test]
    fn this_kernel_has_tcp_probe() {
        let layout = tcp_probe_layout(Path::new("/sys/kernel/tracing")).unwrap();
        assert_ne!(layout.data_len, 0);
        assert_eq!(layout.dport, layout.sport + 2);
        assert_eq!(layout.snd_una, layout.snd_nxt + 4);
        assert_ne!(layout.srtt, 0);

        let btf = Btf::read(Path::new(super::super::features::BTF_PATH)).unwrap();
        let layout = with_sequence_numbers(layout, &btf).unwrap();
        let layout = with_packet_ids(layout, &btf).unwrap();
        assert_ne!(layout.skb_seq, 0);
        assert_ne!(layout.skb_head, layout.skb_network_header);
        assert_ne!(layout.shinfo_gso_size, 0);
    }
}
