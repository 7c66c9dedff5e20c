//! Label and field selectors with the API server's syntax and semantics.

use std::collections::BTreeMap;

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k` (`==` works like `=`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_label_requirement(part)?);
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(key, value) => labels.get(key) == Some(value),
            LabelRequirement::NotEquals(key, value) => labels.get(key) != Some(value),
            LabelRequirement::In(key, values) => {
                labels.get(key).is_some_and(|v| values.contains(v))
            }
            LabelRequirement::NotIn(key, values) => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            LabelRequirement::Exists(key) => labels.contains_key(key),
            LabelRequirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_requirement(part: &str) -> Result<LabelRequirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(valid_key(key.trim())?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            valid_key(key.trim())?,
            value.trim().to_string(),
        ));
    }
    if let Some((key, value)) = part.split_once("==") {
        return Ok(LabelRequirement::Equals(
            valid_key(key.trim())?,
            value.trim().to_string(),
        ));
    }
    if let Some((key, value)) = part.split_once('=') {
        return Ok(LabelRequirement::Equals(
            valid_key(key.trim())?,
            value.trim().to_string(),
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = valid_key(words[0])?;
        let rest = words[1].trim();
        let (operator, list) = rest
            .split_once(char::is_whitespace)
            .or_else(|| rest.find('(').map(|index| (&rest[..index], &rest[index..])))
            .ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
        let list = list.trim();
        let values = list
            .strip_prefix('(')
            .and_then(|list| list.strip_suffix(')'))
            .ok_or_else(|| {
                format!("unable to parse requirement: expected a list in parentheses in {part:?}")
            })?
            .split(',')
            .map(|value| value.trim().to_string())
            .collect();
        return match operator.trim() {
            "in" => Ok(LabelRequirement::In(key, values)),
            "notin" => Ok(LabelRequirement::NotIn(key, values)),
            other => Err(format!(
                "unable to parse requirement: unknown operator {other:?}"
            )),
        };
    }
    Ok(LabelRequirement::Exists(valid_key(part)?))
}

fn valid_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['(', ')', '=', '!']) {
        return Err(format!(
            "unable to parse requirement: invalid label key {key:?}"
        ));
    }
    Ok(key.to_string())
}

/// A parsed field selector: `a=b`, `a==b`, `a!=b`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the selector and checks each field against `supported`.
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (field, equal, value) = if let Some((field, value)) = part.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = part.split_once("==") {
                (field, true, value)
            } else if let Some((field, value)) = part.split_once('=') {
                (field, true, value)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = field_value(object, field);
            (actual == *value) == *equal
        })
    }
}

/// Reads a dotted field path of an object as the string the API server
/// compares, `""` when it is absent.
pub fn field_value(object: &Value, field: &str) -> String {
    let mut current = object;
    for segment in field.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_label_operator_matches() {
        let set = labels(&[("app", "chat"), ("tier", "web")]);
        for (selector, expected) in [
            ("app=chat", true),
            ("app==chat", true),
            ("app!=chat", false),
            ("app in (chat, api)", true),
            ("app notin (chat)", false),
            ("missing notin (x)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=chat,tier in (web)", true),
            ("app=chat,tier=db", false),
            ("", true),
        ] {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&set), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_label_selector_is_rejected() {
        assert!(LabelSelector::parse("app in chat").is_err());
        assert!(LabelSelector::parse("app between (a)").is_err());
    }

    #[test]
    fn field_selector_checks_support() {
        let object = serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        let selector = FieldSelector::parse(
            "metadata.name=a,status.phase!=Pending",
            &["metadata.name", "status.phase"],
        )
        .unwrap();
        assert!(selector.matches(&object));
        assert!(FieldSelector::parse("spec.foo=a", &["metadata.name"]).is_err());
    }
}
