//! Serde helpers that read LLM API JSON without keeping generated text.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// Whether a JSON string is non-empty. The text itself is never stored, so
/// deserializing a completion into this type cannot leak it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NonEmptyText(pub bool);

impl<'de> Deserialize<'de> for NonEmptyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = NonEmptyText;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string or null")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(NonEmptyText(!value.is_empty()))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(NonEmptyText(false))
            }

            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Self::Value, D::Error> {
                inner.deserialize_any(self)
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// Number of elements of a JSON array, `0` for `null`. Elements are skipped
/// without being stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArrayLength(pub usize);

impl<'de> Deserialize<'de> for ArrayLength {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LengthVisitor;

        impl<'de> Visitor<'de> for LengthVisitor {
            type Value = ArrayLength;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an array or null")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut length = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    length += 1;
                }
                Ok(ArrayLength(length))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ArrayLength(0))
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ArrayLength(0))
            }

            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Self::Value, D::Error> {
                inner.deserialize_any(self)
            }
        }

        deserializer.deserialize_any(LengthVisitor)
    }
}

/// Parses JSON from bytes, checking them as UTF-8 once, as a whole.
/// `serde_json::from_slice` checks each string it reads on its own
/// instead, which was a fifth of the parse of an OpenAI chunk. It also
/// skips unread strings unchecked, so bytes that are not UTF-8 go to it:
/// a request with such bytes in its messages still gives its model.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text).ok(),
        Err(_) => serde_json::from_slice(bytes).ok(),
    }
}

/// Request fields that llmslo reads. Messages, prompts and inputs are
/// skipped unread.
#[derive(Debug, Default, Deserialize)]
pub struct RequestFields {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
}

/// Copies a short identifier from JSON (model name, finish reason, error
/// code), cut to [`MAX_LABEL_CHARS`] characters so a hostile body cannot grow
/// the result.
pub fn label(value: &str) -> String {
    cut_label(value).to_owned()
}

/// Stores [`label`]`(value)` in `slot` unless `slot` already contains it.
/// Streams repeat the model name in every event, so most calls only
/// compare.
pub fn set_label(slot: &mut Option<String>, value: &str) {
    let value = cut_label(value);
    if slot.as_deref() != Some(value) {
        *slot = Some(value.to_owned());
    }
}

fn cut_label(value: &str) -> &str {
    match value.char_indices().nth(MAX_LABEL_CHARS) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// Maximum length of a kept model name, error code or finish reason.
pub const MAX_LABEL_CHARS: usize = 128;

/// An error object as OpenAI, Anthropic, Gemini and compatible servers
/// return it inside `{"error": {...}}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, rename = "type")]
    pub kind: Option<serde_json::Value>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

impl ErrorBody {
    /// Returns the most specific code the provider gave: a string `code`
    /// (OpenAI's `rate_limit_exceeded`), then `type` (Anthropic's
    /// `overloaded_error`), then `status` (Gemini's `RESOURCE_EXHAUSTED`).
    pub fn provider_code(&self) -> Option<String> {
        [&self.code, &self.kind, &self.status]
            .into_iter()
            .flatten()
            .find_map(|value| value.as_str().filter(|s| !s.is_empty()).map(label))
    }
}

/// Reads the provider error code from an error body, if it is JSON of a
/// known shape. Ollama's `{"error": "text"}` has no code and gives `None`.
pub fn error_code(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let envelope: Envelope = parse(body)?;
    let object = envelope.error?;
    let body: ErrorBody = serde_json::from_value(object).ok()?;
    body.provider_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_empty_text_reads_strings_and_null() {
        let parse = |json: &str| serde_json::from_str::<NonEmptyText>(json).unwrap().0;
        assert!(parse(r#""hi""#));
        assert!(parse(r#""\u00e9""#));
        assert!(!parse(r#""""#));
        assert!(!parse("null"));
    }

    #[test]
    fn array_length_counts_elements() {
        let parse = |json: &str| serde_json::from_str::<ArrayLength>(json).unwrap().0;
        assert_eq!(parse(r#"[{"a":1},2]"#), 2);
        assert_eq!(parse("[]"), 0);
        assert_eq!(parse("null"), 0);
    }

    #[test]
    fn parse_skips_invalid_utf8() {
        let parse = |bytes: &[u8]| parse::<RequestFields>(bytes).map(|fields| fields.model);
        assert_eq!(
            parse(br#"{"model":"m\u00e9"}"#),
            Some(Some("m\u{e9}".into()))
        );
        assert_eq!(
            parse(b"{\"model\":\"m\",\"messages\":\"\xff\"}"),
            Some(Some("m".into())),
            "invalid in a skipped string"
        );
        assert_eq!(
            parse(b"{\"model\":\"m\xff\"}"),
            None,
            "invalid in a read string"
        );
        assert_eq!(parse(b"{\"model\":"), None);
    }

    #[test]
    fn error_code_prefers_code_then_type_then_status() {
        let openai = br#"{"error":{"message":"m","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(error_code(openai).as_deref(), Some("rate_limit_exceeded"));
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_code(anthropic).as_deref(), Some("overloaded_error"));
        let gemini = br#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(error_code(gemini).as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(error_code(br#"{"error":"model not found"}"#), None);
        assert_eq!(error_code(b"not json"), None);
    }
}
