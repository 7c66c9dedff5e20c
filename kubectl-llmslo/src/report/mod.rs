//! Report step: the analysis as tables for people, or as JSON or YAML
//! with a stable, versioned structure (docs/output.md) for scripts.

mod json;
mod table;
mod traces;

use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use crate::{analyze::Analysis, cli::OutputFormat, color};

/// Version of the JSON/YAML report structure. It changes when a field is
/// removed or changes meaning; added fields keep it.
pub const REPORT_VERSION: u32 = 1;

/// The machine-readable report: the analysis with a version header.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub report_version: u32,
    /// Version of the kubectl-llmslo binary that wrote the report.
    pub cli_version: &'static str,
    #[serde(flatten)]
    pub analysis: &'a Analysis,
}

impl<'a> Report<'a> {
    pub fn new(analysis: &'a Analysis) -> Self {
        Self {
            report_version: REPORT_VERSION,
            cli_version: env!("CARGO_PKG_VERSION"),
            analysis,
        }
    }
}

/// Table style for one output: colour, wrapping and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours, as [`crate::color::use_color`] decides for stdout:
    /// on a terminal unless `NO_COLOR`, `CLICOLOR=0` or `TERM=dumb` is
    /// set, and off a terminal only with `CLICOLOR_FORCE`.
    pub color: bool,
    /// Wrap to the terminal's width; off for pipes and files.
    pub terminal: bool,
    pub wide: bool,
}

impl Style {
    /// Returns the style for standard output.
    pub fn for_stdout(format: OutputFormat) -> Self {
        let terminal = io::stdout().is_terminal();
        Self {
            color: color::use_color(color::Stream::Stdout),
            terminal,
            wide: format == OutputFormat::Wide,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("failed to serialize the report as JSON")]
    Json(#[from] serde_json::Error),
    #[error("failed to serialize the report as YAML: {0}")]
    Yaml(String),
    #[error("failed to write the report")]
    Write(#[from] io::Error),
}

/// Writes the report in `format` to `out`.
///
/// # Errors
///
/// [`ReportError`] when serialization or the write fails (for example a
/// closed pipe).
pub fn write(
    analysis: &Analysis,
    format: OutputFormat,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    match format {
        OutputFormat::Json => json::write_json(&Report::new(analysis), out),
        OutputFormat::Yaml => json::write_yaml(&Report::new(analysis), out),
        OutputFormat::Table | OutputFormat::Wide => {
            out.write_all(table::render(analysis, style).as_bytes())?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{
        AnalysisOptions, analyze,
        slo::SloSpec,
        testing::{Fault, Scenario},
    };

    #[test]
    fn stdout_style_uses_shared_color_decision() {
        let style = Style::for_stdout(OutputFormat::Table);
        assert_eq!(style.color, color::use_color(color::Stream::Stdout));
    }

    const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/report-v1.json");

    fn small_analysis() -> Analysis {
        let scenario = Scenario {
            requests: 12,
            faults: vec![Fault {
                component: "retrieval",
                extra_ms: 1500.0,
                fraction: 0.5,
            }],
            ..Scenario::default()
        };
        let options = AnalysisOptions {
            slos: vec![
                SloSpec::parse("ttft.p95=800ms").unwrap(),
                SloSpec::parse("error_rate=5%").unwrap(),
            ],
            ..AnalysisOptions::default()
        };
        analyze(&scenario.collection(), &options)
    }

    fn render(analysis: &Analysis, format: OutputFormat, style: Style) -> String {
        let mut out = Vec::new();
        write(analysis, format, style, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    const PLAIN: Style = Style {
        color: false,
        terminal: false,
        wide: false,
    };

    /// The JSON structure is a contract with scripts: a change here must
    /// be deliberate. Regenerate with `UPDATE_GOLDEN=1 cargo test`.
    #[test]
    fn json_report_matches_golden_file() {
        let json = render(&small_analysis(), OutputFormat::Json, PLAIN)
            .replace(env!("CARGO_PKG_VERSION"), "CLI_VERSION");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(GOLDEN, &json).unwrap();
        }
        let golden = std::fs::read_to_string(GOLDEN).expect("the golden report exists");
        assert!(
            json == golden,
            "the JSON report differs from {GOLDEN}; diff them and update the file and docs/output.md if the change is intended"
        );
    }

    #[test]
    fn json_report_has_version_and_records() {
        let json = render(&small_analysis(), OutputFormat::Json, PLAIN);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["report_version"], REPORT_VERSION);
        let calls = value["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 48);
        assert_eq!(calls[0]["workload"]["namespace"], "prod");
        assert_eq!(calls[0]["role"], "request");
        assert!(calls[0]["decomposition"]["ttft"].is_array());
        assert_eq!(value["slos"][0]["status"], "breached");
        assert_eq!(
            value["verdicts"][0]["contributors"][0]["component"],
            "retrieval"
        );
    }

    #[test]
    fn yaml_report_parses_back() {
        let yaml = render(&small_analysis(), OutputFormat::Yaml, PLAIN);
        let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(value["report_version"], REPORT_VERSION);
        assert_eq!(value["calls"].as_array().unwrap().len(), 48);
    }

    #[test]
    fn table_shows_each_section_without_ansi() {
        let text = render(&small_analysis(), OutputFormat::Table, PLAIN);
        for expected in [
            "SLIs",
            "TTFT p50",
            "Where the time goes",
            "SLOs",
            "BREACHED",
            "Verdicts",
            "[attributed]",
            "retrieval",
            "90% CI",
            "Workloads",
            "chat-api-7d9f-abcde",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            !text.contains('\u{1b}'),
            "ANSI escape in plain output:\n{text}"
        );
    }

    #[test]
    #[ignore = "prints the tables for a person to read"]
    fn print_tables() {
        println!("{}", render(&small_analysis(), OutputFormat::Table, PLAIN));
        let style = Style {
            wide: true,
            ..PLAIN
        };
        println!("{}", render(&small_analysis(), OutputFormat::Wide, style));
    }

    #[test]
    fn color_style_adds_ansi() {
        let style = Style {
            color: true,
            ..PLAIN
        };
        let text = render(&small_analysis(), OutputFormat::Table, style);
        assert!(text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn wide_table_adds_columns() {
        let style = Style {
            wide: true,
            ..PLAIN
        };
        let wide = render(&small_analysis(), OutputFormat::Wide, style);
        let narrow = render(&small_analysis(), OutputFormat::Table, PLAIN);
        assert!(wide.contains("TOKENS OUT"));
        assert!(wide.contains("TPOT p50"));
        assert!(!narrow.contains("TOKENS OUT"));
        // Wide shows every node, narrow only the ones with trouble.
        assert!(wide.contains("worker-1"));
    }
}
