//! JSON and YAML serialization of the report.

use std::io::Write;

use super::{Report, ReportError};

pub fn write_json(report: &Report<'_>, out: &mut dyn Write) -> Result<(), ReportError> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    out.write_all(b"\n")?;
    Ok(())
}

pub fn write_yaml(report: &Report<'_>, out: &mut dyn Write) -> Result<(), ReportError> {
    let text =
        serde_saphyr::to_string(report).map_err(|error| ReportError::Yaml(error.to_string()))?;
    out.write_all(text.as_bytes())?;
    Ok(())
}
