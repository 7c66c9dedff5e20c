//! The "Traces" section: trace context coverage, the trace ids of the
//! worst requests per SLO and regression, and how the OTLP export went.

use std::fmt::Write as _;

use comfy_table::{Cell, Color};

use super::{
    Style,
    table::{colored, new_table},
};
use crate::{
    analyze::{Analysis, traces::Exemplar, units},
    export::ExportState,
};

/// Writes the section, or nothing when no call was traced and nothing
/// was exported.
pub fn write(analysis: &Analysis, style: Style, out: &mut String) {
    let traces = &analysis.traces;
    let traced = traces.traced_requests + traces.traced_outbound_calls;
    if traced == 0 && analysis.otlp_export.is_none() {
        return;
    }

    let _ = writeln!(out, "\nTraces (W3C traceparent)");
    let _ = writeln!(
        out,
        "- {} of {} requests and {} of {} outbound calls carried a traceparent ({} trace ids)",
        traces.traced_requests,
        traces.requests,
        traces.traced_outbound_calls,
        traces.outbound_calls,
        traces.trace_ids
    );
    if let Some(export) = &analysis.otlp_export {
        let line = match export.state {
            ExportState::Exported => format!(
                "- OTLP export to {} ({}): {} spans and {} metric values sent",
                export.endpoint, export.protocol, export.spans, export.metric_values
            ),
            ExportState::Failed => format!(
                "- OTLP export to {} ({}) failed: {}",
                export.endpoint,
                export.protocol,
                export.error.as_deref().unwrap_or("unknown error")
            ),
        };
        let _ = writeln!(out, "{line}");
        if export.covered_spans > 0 || export.skipped_calls > 0 {
            let _ = writeln!(
                out,
                "- {} calls were already traced by the application: {} spans marked, {} left out",
                export.covered_spans + export.skipped_calls,
                export.covered_spans,
                export.skipped_calls
            );
        }
    }

    let sets: Vec<_> = traces
        .exemplars
        .iter()
        .filter(|set| set.tail_requests > 0)
        .collect();
    if sets.is_empty() {
        return;
    }
    let mut table = new_table(
        style,
        &["SUBJECT", "TRACED TAIL", "TRACE ID", "VALUE", "CALL"],
    );
    for set in sets {
        let traced = format!("{}/{}", set.traced_tail_requests, set.tail_requests);
        if set.requests.is_empty() {
            table.add_row(vec![
                Cell::new(&set.subject),
                colored(traced, Color::Yellow, style),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
            ]);
            continue;
        }
        for (index, exemplar) in set.requests.iter().enumerate() {
            let (subject, traced) = if index == 0 {
                (set.subject.as_str(), traced.as_str())
            } else {
                ("", "")
            };
            table.add_row(vec![
                Cell::new(subject),
                Cell::new(traced),
                Cell::new(&exemplar.trace_id),
                Cell::new(value_text(exemplar)),
                Cell::new(&exemplar.call_id),
            ]);
        }
    }
    let _ = writeln!(out, "Worst traced requests\n{table}");
}

fn value_text(exemplar: &Exemplar) -> String {
    match (exemplar.value, exemplar.unit) {
        (Some(value), "us") => units::duration_us(value),
        (Some(value), _) => units::tokens_per_sec(value),
        (None, _) => exemplar.error_kind.clone().unwrap_or_else(|| "-".into()),
    }
}
