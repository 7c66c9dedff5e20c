//! Tables for people: SLIs per endpoint and model, the decomposition, SLOs,
//! baseline comparisons, verdicts, workloads, skipped pods, nodes, drops
//! and probe diagnostics.

use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Color, ContentArrangement, Table, presets};
use llmslo_schema::Severity;

use super::Style;
use crate::analyze::{
    Analysis, NodeStatus, RequestScope,
    decompose::Phase,
    records::Role,
    sli::SliGroup,
    slo::{SloResult, SloStatus},
    units,
    verdict::{Verdict, VerdictStatus},
};

/// Renders the whole report as text.
pub fn render(analysis: &Analysis, style: Style) -> String {
    let mut out = String::new();
    header(analysis, &mut out);
    section(&mut out, "SLIs", sli_table(analysis, style));
    section(
        &mut out,
        "Where the time goes (critical path)",
        component_table(analysis, style),
    );
    section(&mut out, "SLOs", slo_table(&analysis.slos, style));
    section(
        &mut out,
        "Compared with the baseline",
        comparison_table(analysis, style),
    );
    verdicts(analysis, style, &mut out);
    super::traces::write(analysis, style, &mut out);
    section(&mut out, "Workloads", workload_table(analysis, style));
    section(&mut out, "Skipped pods", skipped_table(analysis, style));
    section(&mut out, "Nodes", node_table(analysis, style));
    data_quality(analysis, style, &mut out);
    out
}

pub(super) fn new_table(style: Style, header: &[&str]) -> Table {
    let mut table = Table::new();
    if style.terminal {
        table
            .load_style(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        table
            .load_style(presets::ASCII_FULL_CONDENSED)
            .force_no_tty();
    }
    if style.color {
        table.enforce_styling();
    }
    table.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    table
}

fn right_align(table: &mut Table, from_column: usize) {
    let columns = table.column_count();
    for index in from_column..columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

pub(super) fn colored(text: impl Into<String>, color: Color, style: Style) -> Cell {
    let cell = Cell::new(text.into());
    if style.color { cell.fg(color) } else { cell }
}

fn section(out: &mut String, title: &str, table: Option<Table>) {
    if let Some(table) = table {
        let _ = writeln!(out, "\n{title}\n{table}");
    }
}

fn header(analysis: &Analysis, out: &mut String) {
    let nodes = analysis.nodes.len();
    let window_secs = analysis
        .nodes
        .iter()
        .filter_map(|n| n.window_ms)
        .fold(0.0_f64, f64::max)
        / 1000.0;
    let requests = match analysis.scope {
        RequestScope::Inbound => format!("{} inbound requests", analysis.requests.requests),
        RequestScope::OutboundLlm => format!(
            "{} outbound LLM calls (no inbound request seen)",
            analysis.requests.requests
        ),
        RequestScope::None => "no request to measure (see Data quality)".to_owned(),
    };
    let _ = writeln!(
        out,
        "Run {}: {} node{}, {:.1} s window, {}",
        analysis.run_id,
        nodes,
        if nodes == 1 { "" } else { "s" },
        window_secs,
        requests
    );
    if analysis.interrupted {
        let _ = writeln!(
            out,
            "Interrupted: the report covers the part of the window before Ctrl-C."
        );
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), units::duration_us)
}

fn sli_table(analysis: &Analysis, style: Style) -> Option<Table> {
    let groups: Vec<&SliGroup> = analysis
        .sli_groups
        .iter()
        .filter(|g| style.wide || g.role == Role::Request || g.provider.is_some())
        .collect();
    if groups.is_empty() {
        return None;
    }
    let mut header = vec![
        "WORKLOAD",
        "KIND",
        "ENDPOINT",
        "MODEL",
        "REQS",
        "ERRORS",
        "TTFT p50",
        "p95",
        "p99",
        "ITL p50",
        "p99",
        "E2E p50",
        "p95",
        "p99",
        "TOK/S p50",
    ];
    if style.wide {
        header.extend(["429", "TPOT p50", "TOKENS IN", "TOKENS OUT", "TOKEN SOURCE"]);
    }
    let mut table = new_table(style, &header);
    for group in groups {
        let s = &group.summary;
        let kind = match group.role {
            Role::Request => format!("request ({})", direction_name(group.direction)),
            _ => group.component.clone(),
        };
        let model = match (&group.provider, &group.model) {
            (Some(provider), Some(model)) => format!("{provider}/{model}"),
            (Some(provider), None) => provider.clone(),
            (None, Some(model)) => model.clone(),
            (None, None) => "-".to_owned(),
        };
        let errors = if s.errors == 0 {
            Cell::new("0")
        } else {
            colored(
                format!("{} ({})", s.errors, units::percent(s.error_rate)),
                Color::Red,
                style,
            )
        };
        let mut row = vec![
            Cell::new(&group.workload),
            Cell::new(kind),
            Cell::new(group.endpoint.label()),
            Cell::new(model),
            Cell::new(s.requests),
            errors,
            Cell::new(ms(s.ttft_us.p50)),
            Cell::new(ms(s.ttft_us.p95)),
            Cell::new(ms(s.ttft_us.p99)),
            Cell::new(ms(s.itl_us.p50)),
            Cell::new(ms(s.itl_us.p99)),
            Cell::new(ms(s.e2e_us.p50)),
            Cell::new(ms(s.e2e_us.p95)),
            Cell::new(ms(s.e2e_us.p99)),
            Cell::new(
                s.tokens_per_sec
                    .p50
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            ),
        ];
        if style.wide {
            let sources: Vec<String> = s
                .output_token_sources
                .iter()
                .map(|(source, count)| format!("{source}:{count}"))
                .collect();
            row.extend([
                Cell::new(s.rate_limited),
                Cell::new(ms(s.tpot_us.p50)),
                Cell::new(s.input_tokens),
                Cell::new(s.output_tokens),
                Cell::new(if sources.is_empty() {
                    "-".to_owned()
                } else {
                    sources.join(" ")
                }),
            ]);
        }
        table.add_row(row);
    }
    right_align(&mut table, 4);
    Some(table)
}

fn direction_name(direction: llmslo_schema::Direction) -> &'static str {
    match direction {
        llmslo_schema::Direction::Inbound => "inbound",
        llmslo_schema::Direction::Outbound => "outbound",
    }
}

fn component_table(analysis: &Analysis, style: Style) -> Option<Table> {
    let rows: Vec<_> = analysis
        .components
        .iter()
        .filter(|c| style.wide || c.phase != Phase::Generation)
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut table = new_table(
        style,
        &["PHASE", "COMPONENT", "SHARE", "MEAN", "p95", "REQUESTS"],
    );
    for row in rows {
        table.add_row(vec![
            Cell::new(row.phase.name()),
            Cell::new(&row.component),
            Cell::new(units::percent(row.share)),
            Cell::new(units::duration_us(row.mean_critical_us)),
            Cell::new(units::duration_us(row.p95_critical_us)),
            Cell::new(row.requests),
        ]);
    }
    right_align(&mut table, 2);
    Some(table)
}

fn status_cell(slo: &SloResult, style: Style) -> Cell {
    match slo.status {
        SloStatus::Met => colored("met", Color::Green, style),
        SloStatus::Breached => colored("BREACHED", Color::Red, style),
        SloStatus::InsufficientData => colored("too few samples", Color::Yellow, style),
        SloStatus::NotMeasured => colored("not measured", Color::Yellow, style),
    }
}

fn slo_table(slos: &[SloResult], style: Style) -> Option<Table> {
    if slos.is_empty() {
        return None;
    }
    let mut table = new_table(
        style,
        &[
            "SLO",
            "OBJECTIVE",
            "MEASURED",
            "STATUS",
            "BUDGET USED",
            "BAD/SAMPLES",
            "NOTE",
        ],
    );
    for slo in slos {
        table.add_row(vec![
            Cell::new(&slo.name),
            Cell::new(&slo.objective),
            Cell::new(slo.measured_text()),
            status_cell(slo, style),
            Cell::new(
                slo.budget_consumed
                    .map_or_else(|| "-".to_owned(), units::percent),
            ),
            Cell::new(format!("{}/{}", slo.bad, slo.samples)),
            Cell::new(slo.note.as_deref().unwrap_or("")),
        ]);
    }
    Some(table)
}

fn comparison_table(analysis: &Analysis, style: Style) -> Option<Table> {
    let baseline = analysis.baseline.as_ref()?;
    let level = (analysis
        .verdicts
        .first()
        .map_or(crate::analyze::bootstrap::DEFAULT_LEVEL, |v| {
            v.confidence_level
        })
        * 100.0)
        .round();
    let ci_header = format!("{level}% CI");
    let mut table = new_table(
        style,
        &[
            "METRIC",
            "BASELINE",
            "NOW",
            "CHANGE",
            ci_header.as_str(),
            "RESULT",
        ],
    );
    for comparison in &analysis.comparisons {
        let format_value = |value: f64| {
            if comparison.sli.is_latency() {
                units::duration_us(value)
            } else if comparison.sli.is_ratio() {
                units::percent(value)
            } else {
                units::tokens_per_sec(value)
            }
        };
        let format_change = |value: f64| {
            if comparison.sli.is_latency() {
                units::signed_duration_us(value)
            } else if comparison.sli.is_ratio() {
                format!("{:+.1} pp", value * 100.0)
            } else {
                format!("{value:+.1} tok/s")
            }
        };
        table.add_row(vec![
            Cell::new(&comparison.metric),
            Cell::new(format_value(comparison.baseline)),
            Cell::new(format_value(comparison.current)),
            Cell::new(format_change(comparison.change)),
            Cell::new(comparison.interval.map_or_else(
                || "-".to_owned(),
                |ci| format!("{} .. {}", format_change(ci.low), format_change(ci.high)),
            )),
            if comparison.regressed {
                colored("REGRESSED", Color::Red, style)
            } else {
                colored("no regression", Color::Green, style)
            },
        ]);
    }
    let _ = baseline;
    Some(table)
}

fn verdicts(analysis: &Analysis, style: Style, out: &mut String) {
    if analysis.verdicts.is_empty() {
        if analysis
            .slos
            .iter()
            .any(|s| s.status == SloStatus::Breached)
        {
            return;
        }
        if !analysis.slos.is_empty() || analysis.baseline.is_some() {
            let _ = writeln!(out, "\nVerdicts\nNo breach or regression to explain.");
        }
        return;
    }
    let _ = writeln!(out, "\nVerdicts");
    for (index, verdict) in analysis.verdicts.iter().enumerate() {
        let label = match verdict.status {
            VerdictStatus::Attributed => "attributed",
            VerdictStatus::Inconclusive => "INCONCLUSIVE",
        };
        let _ = writeln!(out, "{}. [{label}] {}", index + 1, verdict.summary);
        if let Some(reason) = &verdict.reason {
            let _ = writeln!(out, "   Why inconclusive: {reason}");
        }
        if let Some(table) = verdict_table(verdict, style) {
            let _ = writeln!(out, "{table}");
        }
    }
}

fn interval_text(value_unit: &str, low: f64, high: f64) -> String {
    match value_unit {
        "us" => format!(
            "{} .. {}",
            units::signed_duration_us(low),
            units::signed_duration_us(high)
        ),
        "us_per_token" => format!(
            "{} .. {} per token",
            units::signed_duration_us(low),
            units::signed_duration_us(high)
        ),
        _ => format!("{} .. {}", units::percent(low), units::percent(high)),
    }
}

fn verdict_table(verdict: &Verdict, style: Style) -> Option<Table> {
    if verdict.contributors.is_empty() {
        return None;
    }
    let ci_header = format!("{}% CI", (verdict.confidence_level * 100.0).round());
    let mut table = new_table(
        style,
        &["COMPONENT", "EFFECT", ci_header.as_str(), "EVIDENCE"],
    );
    let e = &verdict.evidence;
    let mut evidence = format!("{} requests, {} in the tail", e.requests, e.tail_requests);
    if let Some(baseline) = e.baseline_requests {
        let _ = write!(evidence, ", {baseline} in the baseline");
    }
    let _ = write!(
        evidence,
        "; loss {}; ambiguous links {}/{}",
        units::percent(e.loss_fraction),
        e.ambiguous_links,
        e.linked_calls
    );
    if e.missing_nodes > 0 {
        let _ = write!(evidence, "; {} nodes missing", e.missing_nodes);
    }
    for contributor in &verdict.contributors {
        table.add_row(vec![
            Cell::new(&contributor.component),
            Cell::new(&contributor.effect),
            Cell::new(contributor.interval.map_or_else(
                || "-".to_owned(),
                |ci| interval_text(contributor.unit, ci.low, ci.high),
            )),
            Cell::new(&evidence),
        ]);
    }
    Some(table)
}

fn workload_table(analysis: &Analysis, style: Style) -> Option<Table> {
    if analysis.workloads.is_empty() {
        return None;
    }
    let mut table = new_table(style, &["NAMESPACE", "POD", "CONTAINER", "NODE", "OWNER"]);
    for workload in &analysis.workloads {
        table.add_row(vec![
            Cell::new(&workload.namespace),
            Cell::new(&workload.pod),
            Cell::new(&workload.container),
            Cell::new(&workload.node),
            Cell::new(workload.owners.last().map_or("-", String::as_str)),
        ]);
    }
    Some(table)
}

fn skipped_table(analysis: &Analysis, style: Style) -> Option<Table> {
    if analysis.skipped.is_empty() {
        return None;
    }
    let mut table = new_table(style, &["NAMESPACE", "POD", "REASON"]);
    for pod in &analysis.skipped {
        table.add_row(vec![
            Cell::new(&pod.namespace),
            Cell::new(&pod.pod),
            Cell::new(&pod.reason),
        ]);
    }
    Some(table)
}

fn node_table(analysis: &Analysis, style: Style) -> Option<Table> {
    let show_all = style.wide;
    let nodes: Vec<_> = analysis
        .nodes
        .iter()
        .filter(|n| show_all || n.status != NodeStatus::Ok)
        .collect();
    if nodes.is_empty() {
        return None;
    }
    let mut table = new_table(
        style,
        &["NODE", "STATUS", "CALLS", "PROBE", "KERNEL", "DETAIL"],
    );
    for node in nodes {
        let status = match node.status {
            NodeStatus::Ok => colored("ok", Color::Green, style),
            NodeStatus::Partial => colored("partial", Color::Yellow, style),
            NodeStatus::Missing => colored("MISSING", Color::Red, style),
        };
        let detail = match (&node.failure, &node.outcome_message) {
            (Some(failure), _) => format!("{}: {}", failure.code, failure.message),
            (None, Some(message)) => message.clone(),
            (None, None) => String::new(),
        };
        table.add_row(vec![
            Cell::new(&node.node),
            status,
            Cell::new(node.exchanges),
            Cell::new(node.probe_version.as_deref().unwrap_or("-")),
            Cell::new(node.kernel_release.as_deref().unwrap_or("-")),
            Cell::new(detail),
        ]);
    }
    Some(table)
}

fn data_quality(analysis: &Analysis, style: Style, out: &mut String) {
    let quality = &analysis.data_quality;
    let drops = &quality.drops;
    let mut lines = Vec::new();
    if drops.ring_buffer_full > 0 {
        lines.push(format!(
            "{} kernel events lost to a full ring buffer ({} of all events)",
            drops.ring_buffer_full,
            units::percent(quality.event_loss_fraction)
        ));
    }
    if quality.calls_with_missing_bytes > 0 {
        lines.push(format!(
            "{} calls have bytes the probe did not see; their timings may be late",
            quality.calls_with_missing_bytes
        ));
    }
    for (count, what) in [
        (
            drops.payload_read_failed,
            "payload reads failed in the kernel",
        ),
        (
            drops.map_full,
            "connections untracked because a map was full",
        ),
        (
            drops.open_at_window_end,
            "exchanges still open at the end of the window",
        ),
    ] {
        if count > 0 {
            lines.push(format!("{count} {what}"));
        }
    }
    if quality.in_flight_requests > 0 {
        lines.push(format!(
            "{} requests were still in flight when the window ended; they are not counted as \
             errors or in E2E",
            quality.in_flight_requests
        ));
    }
    if quality.incomplete_capture_calls > 0 {
        lines.push(format!(
            "{} calls looked cut short after the probe missed some of their bytes; they count \
             as incomplete capture, not as errors, and have no E2E",
            quality.incomplete_capture_calls
        ));
    }
    if quality.unparsed_calls > 0 {
        lines.push(format!(
            "{} calls had a response the probe could not parse; they count as neither \
             successes nor errors",
            quality.unparsed_calls
        ));
    }
    if drops.unparsed_bytes > 0 {
        lines.push(format!(
            "{} bytes could not be parsed",
            drops.unparsed_bytes
        ));
    }
    if quality.opaque_connections > 0 {
        lines.push(format!(
            "{} outbound connections carried traffic the probe could not read",
            quality.opaque_connections
        ));
    }
    for tls in quality.tls.iter().filter(|t| !t.visible) {
        lines.push(format!(
            "pid {}: TLS library {} at {} is not readable{}",
            tls.pid,
            tls.library,
            tls.path,
            tls.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    for signal in &quality.unavailable {
        lines.push(format!(
            "{} unavailable: {} ({})",
            signal.signal, signal.reason, signal.remedy
        ));
    }
    lines.extend(quality.notes.iter().cloned());
    if !lines.is_empty() {
        let _ = writeln!(out, "\nData quality");
        for line in lines {
            let _ = writeln!(out, "- {line}");
        }
    }

    let diagnostics: Vec<_> = analysis
        .diagnostics
        .iter()
        .filter(|d| style.wide || d.severity >= Severity::Warning)
        .collect();
    if diagnostics.is_empty() {
        return;
    }
    let mut table = new_table(style, &["SEVERITY", "NODE", "PID", "CODE", "MESSAGE"]);
    for diagnostic in diagnostics {
        let severity = match diagnostic.severity {
            Severity::Info => Cell::new("info"),
            Severity::Warning => colored("warning", Color::Yellow, style),
            Severity::Error => colored("error", Color::Red, style),
        };
        table.add_row(vec![
            severity,
            Cell::new(&diagnostic.node),
            Cell::new(
                diagnostic
                    .pid
                    .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            ),
            Cell::new(&diagnostic.code),
            Cell::new(&diagnostic.message),
        ]);
    }
    let _ = writeln!(out, "\nProbe diagnostics\n{table}");
}
