//! `Status` error bodies as the API server writes them.

use serde_json::{Value, json};

use super::resources::Resource;

/// An error response: HTTP code and `Status` body.
#[derive(Debug, Clone)]
pub struct ApiStatus {
    pub code: u16,
    pub body: Value,
}

fn status(code: u16, reason: &str, message: String, details: Value) -> ApiStatus {
    ApiStatus {
        code,
        body: json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        }),
    }
}

/// `pods "x"` or `jobs.batch "x"`, the way the API server names objects.
fn object_name(resource: Resource, name: &str) -> String {
    format!("{} {name:?}", resource.qualified())
}

pub fn not_found(resource: Resource, name: &str) -> ApiStatus {
    status(
        404,
        "NotFound",
        format!("{} not found", object_name(resource, name)),
        json!({"name": name, "group": resource.group(), "kind": resource.plural()}),
    )
}

pub fn already_exists(resource: Resource, name: &str) -> ApiStatus {
    status(
        409,
        "AlreadyExists",
        format!("{} already exists", object_name(resource, name)),
        json!({"name": name, "group": resource.group(), "kind": resource.plural()}),
    )
}

/// 403 with the authorizer's message.
pub fn forbidden(
    resource: Resource,
    subresource: Option<&str>,
    name: Option<&str>,
    verb: &str,
    namespace: Option<&str>,
    user: &str,
) -> ApiStatus {
    let subject = match name {
        Some(name) => object_name(resource, name),
        None => resource.qualified(),
    };
    let rbac_resource = match subresource {
        Some(subresource) => format!("{}/{subresource}", resource.plural()),
        None => resource.plural().to_string(),
    };
    let scope = match namespace {
        Some(namespace) => format!("in the namespace {namespace:?}"),
        None => "at the cluster scope".to_string(),
    };
    status(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User {user:?} cannot {verb} resource {rbac_resource:?} in API group {:?} {scope}",
            resource.group()
        ),
        json!({"name": name.unwrap_or_default(), "group": resource.group(), "kind": resource.plural()}),
    )
}

/// 422 with one cause per invalid field.
pub fn invalid(resource: Resource, name: &str, causes: &[(String, String)]) -> ApiStatus {
    let rendered: Vec<String> = causes
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect();
    let summary = if rendered.len() == 1 {
        rendered[0].clone()
    } else {
        format!("[{}]", rendered.join(", "))
    };
    let qualified_kind = match resource.group() {
        "" => resource.kind().to_string(),
        group => format!("{}.{group}", resource.kind()),
    };
    status(
        422,
        "Invalid",
        format!("{qualified_kind} {name:?} is invalid: {summary}"),
        json!({
            "name": name,
            "group": resource.group(),
            "kind": resource.kind(),
            "causes": causes.iter().map(|(field, message)| json!({
                "reason": cause_reason(message),
                "message": message,
                "field": field,
            })).collect::<Vec<_>>(),
        }),
    )
}

/// Returns the `reason` of a cause, from the start of its message, the
/// way the API server's field errors begin.
fn cause_reason(message: &str) -> &'static str {
    if message.starts_with("Required value") {
        "FieldValueRequired"
    } else if message.starts_with("Unsupported value") {
        "FieldValueNotSupported"
    } else if message.starts_with("Not found") {
        "FieldValueNotFound"
    } else if message.starts_with("Duplicate value") {
        "FieldValueDuplicate"
    } else if message.starts_with("Forbidden") {
        "FieldValueForbidden"
    } else {
        "FieldValueInvalid"
    }
}

pub fn bad_request(message: String) -> ApiStatus {
    status(400, "BadRequest", message, json!({}))
}

pub fn method_not_allowed(message: String) -> ApiStatus {
    status(405, "MethodNotAllowed", message, json!({}))
}

pub fn namespace_not_found(namespace: &str) -> ApiStatus {
    status(
        404,
        "NotFound",
        format!("namespaces {namespace:?} not found"),
        json!({"name": namespace, "kind": "namespaces"}),
    )
}

/// 410 Gone for a watch from a compacted resource version.
pub fn gone(requested: u64, oldest: u64) -> ApiStatus {
    status(
        410,
        "Expired",
        format!("too old resource version: {requested} ({oldest})"),
        json!({}),
    )
}
