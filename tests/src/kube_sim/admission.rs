//! Pod Security admission: the checks of the `baseline` and `restricted`
//! levels that a probe pod can trip, with the real plugin's wording.

use serde_json::Value;

/// Capabilities the baseline level allows containers to add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Returns the enforced level of a namespace, from its
/// `pod-security.kubernetes.io/enforce` label; `privileged` (no checks)
/// when the label is absent.
pub fn enforced_level(namespace: &Value) -> String {
    namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        .as_str()
        .unwrap_or("privileged")
        .to_string()
}

/// Returns the message that rejects `pod_spec` at `level`, or `None` when
/// the pod is allowed.
pub fn check(level: &str, pod_name: &str, pod_spec: &Value) -> Option<String> {
    if level != "baseline" && level != "restricted" {
        return None;
    }
    let mut violations = baseline_violations(pod_spec);
    if level == "restricted" {
        violations.extend(restricted_violations(pod_spec));
    }
    if violations.is_empty() {
        return None;
    }
    Some(format!(
        "pods {pod_name:?} is forbidden: violates PodSecurity \"{level}:latest\": {}",
        violations.join(", ")
    ))
}

fn containers(pod_spec: &Value) -> impl Iterator<Item = &Value> {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod_spec["initContainers"].as_array().into_iter().flatten())
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn baseline_violations(pod_spec: &Value) -> Vec<String> {
    let mut violations = Vec::new();

    let host_namespaces: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|field| pod_spec[*field] == Value::Bool(true))
        .map(|field| format!("{field}=true"))
        .collect();
    if !host_namespaces.is_empty() {
        violations.push(format!("host namespaces ({})", host_namespaces.join(", ")));
    }

    let privileged: Vec<String> = containers(pod_spec)
        .filter(|container| container["securityContext"]["privileged"] == Value::Bool(true))
        .map(|container| container["name"].as_str().unwrap_or_default().to_string())
        .collect();
    if !privileged.is_empty() {
        violations.push(format!(
            "privileged (container{} {} must not set securityContext.privileged=true)",
            if privileged.len() > 1 { "s" } else { "" },
            quoted(&privileged)
        ));
    }

    let mut capability_messages = Vec::new();
    for container in containers(pod_spec) {
        let added: Vec<String> = container["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|capability| !BASELINE_CAPABILITIES.contains(capability))
            .map(str::to_string)
            .collect();
        if !added.is_empty() {
            capability_messages.push(format!(
                "container {:?} must not include {} in securityContext.capabilities.add",
                container["name"].as_str().unwrap_or_default(),
                quoted(&added)
            ));
        }
    }
    if !capability_messages.is_empty() {
        violations.push(format!(
            "non-default capabilities ({})",
            capability_messages.join("; ")
        ));
    }

    let host_paths: Vec<String> = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|volume| volume.get("hostPath").is_some())
        .map(|volume| volume["name"].as_str().unwrap_or_default().to_string())
        .collect();
    if !host_paths.is_empty() {
        violations.push(format!(
            "hostPath volume{} (volume{} {})",
            if host_paths.len() > 1 { "s" } else { "" },
            if host_paths.len() > 1 { "s" } else { "" },
            quoted(&host_paths)
        ));
    }

    let unconfined: Vec<String> = containers(pod_spec)
        .filter(|container| container["securityContext"]["seccompProfile"]["type"] == "Unconfined")
        .map(|container| container["name"].as_str().unwrap_or_default().to_string())
        .collect();
    if !unconfined.is_empty()
        || pod_spec["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    {
        violations.push(format!(
            "seccompProfile (container{} {} must not set securityContext.seccompProfile.type to \"Unconfined\")",
            if unconfined.len() > 1 { "s" } else { "" },
            quoted(&unconfined)
        ));
    }
    violations
}

fn restricted_violations(pod_spec: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    let mut escalation = Vec::new();
    let mut drop_all = Vec::new();
    let mut non_root = Vec::new();
    for container in containers(pod_spec) {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let security = &container["securityContext"];
        if security["allowPrivilegeEscalation"] != Value::Bool(false) {
            escalation.push(name.clone());
        }
        let drops_all = security["capabilities"]["drop"]
            .as_array()
            .is_some_and(|drop| drop.iter().any(|capability| capability == "ALL"));
        if !drops_all {
            drop_all.push(name.clone());
        }
        if security["runAsNonRoot"] != Value::Bool(true)
            && pod_spec["securityContext"]["runAsNonRoot"] != Value::Bool(true)
        {
            non_root.push(name);
        }
    }
    if !escalation.is_empty() {
        violations.push(format!("allowPrivilegeEscalation != false (containers {} must set securityContext.allowPrivilegeEscalation=false)", quoted(&escalation)));
    }
    if !drop_all.is_empty() {
        violations.push(format!("unrestricted capabilities (containers {} must set securityContext.capabilities.drop=[\"ALL\"])", quoted(&drop_all)));
    }
    if !non_root.is_empty() {
        violations.push(format!(
            "runAsNonRoot != true (containers {} must set securityContext.runAsNonRoot=true)",
            quoted(&non_root)
        ));
    }
    violations
}
