//! Labels, annotations and names that identify a run's probe Jobs.

/// `app.kubernetes.io/name` of every object llmslo creates.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
pub const APP_NAME: &str = "llmslo";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const COMPONENT_PROBE: &str = "probe";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "kubectl-llmslo";
pub const RUN_ID_LABEL: &str = "llmslo.dev/run-id";
/// The target as a label value; the annotation of the same key keeps it whole.
pub const TARGET_LABEL: &str = "llmslo.dev/target";
pub const NODE_LABEL: &str = "llmslo.dev/node";
/// The probed containers as `namespace/pod/container=runtime://id` lines.
pub const CONTAINERS_ANNOTATION: &str = "llmslo.dev/containers";

/// Maximum length of a label value and of a DNS-1123 label.
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// Jobs name their pods `<job>-<5 random characters>`; keeping the Job name
/// to this length keeps the pod name a valid DNS-1123 label as well.
pub const MAX_JOB_NAME_LEN: usize = 52;

/// Selects every probe Job that llmslo created, of any run.
pub fn all_runs_selector() -> String {
    format!("{APP_NAME_LABEL}={APP_NAME},{COMPONENT_LABEL}={COMPONENT_PROBE}")
}

/// Selects the probe Jobs (and their pods) of one run.
pub fn run_selector(run_id: &str) -> String {
    format!("{},{RUN_ID_LABEL}={run_id}", all_runs_selector())
}

/// Turns any text into a valid label value: at most 63 characters of
/// `[A-Za-z0-9._-]`, starting and ending with an alphanumeric character.
/// Other characters become `.`; an empty result stays empty, which is valid.
pub fn sanitize_label_value(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.') {
                character
            } else {
                '.'
            }
        })
        .collect();
    let truncated: String = replaced.chars().take(MAX_LABEL_VALUE_LEN).collect();
    truncated
        .trim_matches(|character: char| !character.is_ascii_alphanumeric())
        .to_string()
}

/// Turns a node name into a piece of a DNS-1123 label: lowercase
/// alphanumerics and `-`, at most `max_len` characters.
pub fn dns_label_fragment(text: &str, max_len: usize) -> String {
    let lowered: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character
            } else {
                '-'
            }
        })
        .take(max_len)
        .collect();
    lowered.trim_matches('-').to_string()
}

/// Names the probe Job of one node: `llmslo-<run id>-<node>`, with the node
/// part shortened and made unique by a hash when the name would be too long
/// or the node name had characters a Job name cannot contain.
pub fn job_name(run_id: &str, node: &str) -> String {
    let prefix = format!("llmslo-{run_id}-");
    let room = MAX_JOB_NAME_LEN.saturating_sub(prefix.len());
    let fragment = dns_label_fragment(node, room);
    if fragment == node && !fragment.is_empty() {
        return format!("{prefix}{fragment}");
    }

    // Two nodes could map to the same fragment; the hash of the full name
    // keeps their Jobs apart.
    let hash = format!("{:08x}", fnv1a_32(node.as_bytes()));
    let fragment = dns_label_fragment(node, room.saturating_sub(hash.len() + 1));
    if fragment.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{fragment}-{hash}")
    }
}

/// FNV-1a: a stable hash, so that a run's Job names do not depend on the
/// process's random hash seed.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid_label_value(value: &str) -> bool {
        value.len() <= MAX_LABEL_VALUE_LEN
            && (value.is_empty()
                || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && value.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))))
    }

    #[test]
    fn label_value_replaces_slashes_and_spaces() {
        assert_eq!(
            sanitize_label_value("prod deploy/chat-api"),
            "prod.deploy.chat-api"
        );
    }

    #[test]
    fn label_value_is_trimmed_and_truncated() {
        let value = sanitize_label_value(&format!("/{}/", "a".repeat(100)));
        assert_eq!(value.len(), MAX_LABEL_VALUE_LEN - 1);
        assert!(is_valid_label_value(&value), "{value}");
        let value = sanitize_label_value("-x-");
        assert_eq!(value, "x");
    }

    #[test]
    fn label_value_of_selector_is_valid() {
        let value = sanitize_label_value("-l app in (chat, api),tier!=batch -A");
        assert!(is_valid_label_value(&value), "{value}");
    }

    #[test]
    fn job_name_keeps_plain_node_names() {
        assert_eq!(job_name("ab12cd34", "worker-1"), "llmslo-ab12cd34-worker-1");
    }

    #[test]
    fn job_name_hashes_long_or_odd_node_names() {
        let long = "ip-10-0-12-34.eu-west-1.compute.internal.example.com";
        let name = job_name("ab12cd34", long);
        assert!(name.len() <= MAX_JOB_NAME_LEN, "{name}");
        assert!(name.starts_with("llmslo-ab12cd34-ip-10-0-12-34"), "{name}");
        assert_ne!(name, job_name("ab12cd34", &long.replace("34", "35")));
        let upper = job_name("ab12cd34", "Worker_1");
        assert!(upper.starts_with("llmslo-ab12cd34-worker-1-"), "{upper}");
    }
}
