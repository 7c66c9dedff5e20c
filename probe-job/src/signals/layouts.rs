//! Field offsets of the sched, sock and tcp tracepoint records, read from
//! their tracefs format files.
//!
//! These records are not a stable ABI: fields were added, removed and
//! turned into dynamic arrays across kernel versions (`sched_wakeup`
//! changed layout in Linux 5.14, and 6.x kernels store the comm fields of
//! `sched_process_fork` as dynamic arrays). Reading the offsets at run
//! time keeps one eBPF object working on all of them, and a missing field
//! disables one signal instead of the probe.

use std::{fs, path::Path};

use llmslo_probe_common::{SockTupleLayout, TcpLayout, sched::SchedLayout};

/// The fields of one tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// `category:name`, for messages.
    tracepoint: String,
    /// `(name, offset, size)` of every field.
    fields: Vec<(String, u32, u32)>,
}

impl Format {
    /// Reads `events/<category>/<name>/format` under tracefs.
    ///
    /// # Errors
    ///
    /// Why the format is unavailable: the tracepoint does not exist on this
    /// kernel, or the file cannot be read.
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, String> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|error| {
            format!(
                "tracepoint {category}:{name} is not available on this kernel ({} cannot be \
                 read: {error})",
                path.display()
            )
        })?;
        Ok(Self::parse(&format!("{category}:{name}"), &text))
    }

    pub fn parse(tracepoint: &str, text: &str) -> Self {
        Self {
            tracepoint: tracepoint.to_string(),
            fields: text.lines().filter_map(parse_field).collect(),
        }
    }

    /// Returns the offset of a field whose size is one of `sizes`.
    ///
    /// # Errors
    ///
    /// Names the tracepoint and field when the field is missing or has
    /// another size.
    pub fn offset(&self, name: &str, sizes: &[u32]) -> Result<u32, String> {
        let Some((_, offset, size)) = self.fields.iter().find(|(field, _, _)| field == name) else {
            return Err(format!(
                "tracepoint {} has no field {name} on this kernel",
                self.tracepoint
            ));
        };
        if !sizes.contains(size) {
            return Err(format!(
                "field {name} of tracepoint {} is {size} bytes on this kernel, expected {sizes:?}",
                self.tracepoint
            ));
        }
        Ok(*offset)
    }

    /// Returns the offset and size of a field whose size is one of `sizes`.
    fn offset_and_size(&self, name: &str, sizes: &[u32]) -> Result<(u32, u32), String> {
        let offset = self.offset(name, sizes)?;
        let size = self
            .fields
            .iter()
            .find(|(field, _, _)| field == name)
            .map_or(0, |(_, _, size)| *size);
        Ok((offset, size))
    }
}

/// Parses `\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;` into
/// `(name, offset, size)`.
fn parse_field(line: &str) -> Option<(String, u32, u32)> {
    let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
    let name = declaration.split_whitespace().last()?;
    let name = name.split('[').next()?;
    let number = |key: &str| -> Option<u32> {
        line.split(';')
            .find_map(|part| part.trim().strip_prefix(key))?
            .parse()
            .ok()
    };
    Some((name.to_string(), number("offset:")?, number("size:")?))
}

/// Reads the offsets the run-queue programs need.
///
/// # Errors
///
/// Why run-queue waits are unavailable: a missing tracepoint or field.
pub fn sched_layout(tracefs: &Path) -> Result<SchedLayout, String> {
    let wakeup = Format::read(tracefs, "sched", "sched_wakeup")?;
    let wakeup_new = Format::read(tracefs, "sched", "sched_wakeup_new")?;
    let switch = Format::read(tracefs, "sched", "sched_switch")?;
    // `task:task_newtask` keeps the thread map up to date; its offsets are
    // fixed in the eBPF object, so only its presence is checked.
    Format::read(tracefs, "task", "task_newtask")?;
    let (switch_prev_state, switch_prev_state_size) =
        switch.offset_and_size("prev_state", &[4, 8])?;
    Ok(SchedLayout {
        wakeup_pid: wakeup.offset("pid", &[4])?,
        wakeup_new_pid: wakeup_new.offset("pid", &[4])?,
        switch_prev_state,
        switch_prev_state_size,
        switch_next_pid: switch.offset("next_pid", &[4])?,
        _pad: 0,
    })
}

/// The layout of the TCP programs and which of them this kernel supports.
#[derive(Debug, Clone)]
pub struct TcpLayouts {
    /// Offsets of every program that is available; zeros for the others.
    pub layout: TcpLayout,
    /// `sock:inet_sock_set_state`: connection attempts and their latency.
    pub handshakes: Result<(), String>,
    /// `sock:inet_sk_error_report`: the errno of failed attempts.
    pub error_reports: Result<(), String>,
    /// `tcp:tcp_retransmit_skb`.
    pub retransmits: Result<(), String>,
}

/// Reads the offsets the TCP programs need; each program that lacks a
/// tracepoint or field is disabled on its own.
pub fn tcp_layouts(tracefs: &Path) -> TcpLayouts {
    let mut layouts = TcpLayouts {
        layout: TcpLayout::default(),
        handshakes: Ok(()),
        error_reports: Ok(()),
        retransmits: Ok(()),
    };

    let set_state = Format::read(tracefs, "sock", "inet_sock_set_state").and_then(|format| {
        Ok((
            format.offset("skaddr", &[8])?,
            format.offset("oldstate", &[4])?,
            format.offset("newstate", &[4])?,
            format.offset("protocol", &[2])?,
            tuple_layout(&format)?,
        ))
    });
    layouts.handshakes = set_state.map(|(skaddr, old_state, new_state, protocol, tuple)| {
        layouts.layout.set_state_skaddr = skaddr;
        layouts.layout.set_state_oldstate = old_state;
        layouts.layout.set_state_newstate = new_state;
        layouts.layout.set_state_protocol = protocol;
        layouts.layout.set_state_tuple = tuple;
    });

    // The error report only completes attempts that the handshake program
    // reported as failed.
    let error_report = layouts.handshakes.clone().and_then(|()| {
        let format = Format::read(tracefs, "sock", "inet_sk_error_report")?;
        Ok((
            format.offset("error", &[4])?,
            format.offset("protocol", &[2])?,
            tuple_layout(&format)?,
        ))
    });
    layouts.error_reports = error_report.map(|(error, protocol, tuple)| {
        layouts.layout.error_report_error = error;
        layouts.layout.error_report_protocol = protocol;
        layouts.layout.error_report_tuple = tuple;
    });

    let retransmit = Format::read(tracefs, "tcp", "tcp_retransmit_skb").and_then(|format| {
        Ok((
            format.offset("skaddr", &[8])?,
            // Absent before Linux 5.x; the program then reports state 0.
            format.offset("state", &[4]).unwrap_or(0),
            tuple_layout(&format)?,
        ))
    });
    layouts.retransmits = retransmit.map(|(skaddr, state, tuple)| {
        layouts.layout.retransmit_skaddr = skaddr;
        layouts.layout.retransmit_state = state;
        layouts.layout.retransmit_tuple = tuple;
    });
    layouts
}

fn tuple_layout(format: &Format) -> Result<SockTupleLayout, String> {
    Ok(SockTupleLayout {
        family: format.offset("family", &[2])?,
        sport: format.offset("sport", &[2])?,
        dport: format.offset("dport", &[2])?,
        saddr: format.offset("saddr", &[4])?,
        daddr: format.offset("daddr", &[4])?,
        saddr_v6: format.offset("saddr_v6", &[16])?,
        daddr_v6: format.offset("daddr_v6", &[16])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEFS: &str = "/sys/kernel/tracing";

    /// `sched:sched_wakeup` of a kernel before 5.14, with `success` before
    /// `target_cpu`.
    const OLD_WAKEUP: &str = "name: sched_wakeup
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:int success;\toffset:32;\tsize:4;\tsigned:1;
\tfield:int target_cpu;\toffset:36;\tsize:4;\tsigned:1;
";

    #[test]
    fn old_wakeup_format_parses() {
        let format = Format::parse("sched:sched_wakeup", OLD_WAKEUP);
        assert_eq!(format.offset("pid", &[4]), Ok(24));
        assert_eq!(format.offset("comm", &[16]), Ok(8));
        assert_eq!(format.offset("target_cpu", &[4]), Ok(36));
    }

    #[test]
    fn missing_and_resized_fields_are_named() {
        let format = Format::parse("sched:sched_wakeup", OLD_WAKEUP);
        let missing = format.offset("next_pid", &[4]).unwrap_err();
        assert!(
            missing.contains("sched:sched_wakeup has no field next_pid"),
            "{missing}"
        );
        let resized = format.offset("pid", &[8]).unwrap_err();
        assert!(resized.contains("is 4 bytes"), "{resized}");
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let error = Format::read(Path::new(TRACEFS), "sched", "no_such_event").unwrap_err();
        assert!(
            error.contains("sched:no_such_event is not available"),
            "{error}"
        );
    }

    #[test]
    fn this_kernel_has_sched_fields() {
        let layout = sched_layout(Path::new(TRACEFS)).unwrap();
        assert_eq!(layout.wakeup_pid, 24);
        assert_eq!(layout.wakeup_new_pid, 24);
        assert!(matches!(layout.switch_prev_state_size, 4 | 8));
        assert!(layout.switch_next_pid > layout.switch_prev_state);
    }

    #[test]
    fn this_kernel_has_tcp_fields() {
        let layouts = tcp_layouts(Path::new(TRACEFS));
        assert_eq!(layouts.handshakes, Ok(()));
        assert_eq!(layouts.error_reports, Ok(()));
        assert_eq!(layouts.retransmits, Ok(()));
        let layout = layouts.layout;
        assert_eq!(layout.set_state_skaddr, 8);
        assert_ne!(layout.set_state_tuple.daddr_v6, 0);
        assert_ne!(layout.retransmit_state, 0);
        assert_ne!(layout.error_report_error, 0);
    }
}
