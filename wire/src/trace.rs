//! W3C Trace Context: the `traceparent` and `tracestate` request headers.

use llmslo_schema::TraceContext;

/// Longest `tracestate` kept. W3C Trace Context requires platforms
/// to propagate at least 512 characters. List members past it are dropped
/// whole.
const MAX_TRACESTATE_CHARS: usize = 512;

/// Parses `traceparent` (and `tracestate` when the parent is valid).
/// Returns `None` for a missing or invalid `traceparent`: a wrong length or
/// separator, uppercase or non-hex digits, version `ff`, or an all-zero
/// trace or parent id.
pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<TraceContext> {
    let value = traceparent?.trim();
    let bytes = value.as_bytes();
    // Every valid traceparent is ASCII, and only ASCII can be sliced at
    // the fixed byte offsets below. HTTP/2 header values can hold any bytes.
    if bytes.len() < 55 || !value.is_ascii() {
        return None;
    }

    let version = &value[..2];
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more
    // after another dash, which a version 00 reader ignores.
    let well_sized = if version == "00" {
        bytes.len() == 55
    } else {
        bytes.len() == 55 || bytes[55] == b'-'
    };
    if !well_sized || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }

    let trace_id = &value[3..35];
    let parent_id = &value[36..52];
    let flags = &value[53..55];
    let all_hex = is_lower_hex(trace_id) && is_lower_hex(parent_id) && is_lower_hex(flags);
    if !all_hex || is_all_zero(trace_id) || is_all_zero(parent_id) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;

    Some(TraceContext {
        trace_id: trace_id.to_owned(),
        parent_span_id: parent_id.to_owned(),
        sampled: flags & 1 == 1,
        tracestate: tracestate.and_then(bounded_tracestate),
    })
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_all_zero(text: &str) -> bool {
    text.bytes().all(|b| b == b'0')
}

/// Keeps whole list members up to [`MAX_TRACESTATE_CHARS`].
fn bounded_tracestate(value: &str) -> Option<String> {
    let mut kept = String::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let needed = member.len() + usize::from(!kept.is_empty());
        if kept.len() + needed > MAX_TRACESTATE_CHARS {
            break;
        }
        if !kept.is_empty() {
            kept.push(',');
        }
        kept.push_str(member);
    }
    (!kept.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparent() {
        let trace = parse(Some(VALID), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).unwrap();
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_span_id, "00f067aa0ba902b7");
        assert!(trace.sampled);
        assert_eq!(
            trace.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
    }

    #[test]
    fn unsampled_flag() {
        let value = VALID.replace("-01", "-00");
        assert!(!parse(Some(&value), None).unwrap().sampled);
    }

    #[test]
    fn invalid_traceparents_are_rejected() {
        let cases = [
            VALID.to_uppercase(),
            VALID.replace("00-4bf", "ff-4bf"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_owned(),
            VALID[..54].to_owned(),
            format!("{VALID}-extra"),
            VALID.replace('-', "_"),
            VALID.replace("4bf9", "4bg9"),
        ];
        for case in cases {
            assert!(parse(Some(&case), None).is_none(), "{case}");
        }
    }

    #[test]
    fn non_ascii_traceparent_is_rejected() {
        // A three-byte character across the version's end, then a
        // character in every field: none may be sliced.
        let shifted = format!("0\u{fffd}{}", &VALID[3..]);
        assert_eq!(parse(Some(&shifted), None), None);
        for at in [1, 10, 40, 54] {
            let mut value = VALID.to_owned();
            value.replace_range(at..at + 1, "\u{e9}");
            assert_eq!(parse(Some(&value), None), None, "{value}");
        }
    }

    #[test]
    fn future_version_may_have_more_fields() {
        let value = VALID.replacen("00", "01", 1) + "-what-ever";
        assert!(parse(Some(&value), None).is_some());
    }

    #[test]
    fn tracestate_is_bounded_by_members() {
        let member = format!("k={}", "v".repeat(300));
        let value = format!("{member},{member}");
        let trace = parse(Some(VALID), Some(&value)).unwrap();
        assert_eq!(trace.tracestate, Some(member));
    }
}
