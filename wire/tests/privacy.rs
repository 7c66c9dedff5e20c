//! No prompt, completion, statement text, query value or secret header
//! value from any fixture appears in the exchanges parsed from it.

mod support;

use std::sync::Arc;

use llmslo_wire::ParserConfig;
use support::{all_payload, fixture_names, load, replay};

/// Every secret in the fixtures contains this marker: prompts, completions,
/// SQL text, query values, and `Authorization`, `api-key`, `x-api-key`,
/// `Cookie` and `Set-Cookie` values.
const MARKER: &str = "SECRET";

#[test]
fn fixtures_leak_no_secret() {
    let names = fixture_names();
    assert!(!names.is_empty(), "no fixtures found");

    for name in names {
        let fixture = load(&name);
        let payload = String::from_utf8_lossy(&all_payload(&fixture.steps)).into_owned();
        let exchanges = replay(
            &fixture.info,
            &fixture.steps,
            Arc::new(ParserConfig::default()),
        );
        let serialized = serde_json::to_string(&exchanges).expect("exchanges serialize");
        assert!(
            !serialized.contains(MARKER),
            "{name}: a secret reached the exchanges: {serialized}"
        );
        assert!(
            !serialized.contains("Bearer") && !serialized.contains("sk-"),
            "{name}: a key reached the exchanges"
        );
        // The check means something only when the fixture carries a secret.
        if payload.contains("Authorization") || payload.contains("messages") {
            assert!(
                payload.contains(MARKER),
                "{name}: fixture has no marked secret"
            );
        }
    }
}
