//! Discovery documents: `/api`, `/apis`, the group versions and
//! `/version`, enough for kubectl to map kinds and short names.

use serde_json::{Value, json};

use super::resources::{ALL, Resource};

pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_document(group: &str) -> Value {
    json!({
        "name": group,
        "versions": [{"groupVersion": format!("{group}/v1"), "version": "v1"}],
        "preferredVersion": {"groupVersion": format!("{group}/v1"), "version": "v1"},
    })
}

pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group_document("apps"), group_document("batch")],
    })
}

pub fn api_group(group: &str) -> Option<Value> {
    if !["apps", "batch"].contains(&group) {
        return None;
    }
    let mut document = group_document(group);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Some(document)
}

/// The resources of one group version; `None` for a version not served.
pub fn api_resource_list(group: &str) -> Option<Value> {
    let resources: Vec<Resource> = ALL
        .into_iter()
        .filter(|resource| resource.group() == group)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut entries: Vec<Value> = Vec::new();
    for resource in &resources {
        entries.push(json!({
            "name": resource.plural(),
            "singularName": resource.kind().to_ascii_lowercase(),
            "namespaced": resource.namespaced(),
            "kind": resource.kind(),
            "verbs": resource.verbs(),
            "shortNames": resource.short_names(),
        }));
        if *resource == Resource::Pods {
            entries.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let group_version = match group {
        "" => "v1".to_string(),
        group => format!("{group}/v1"),
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-llmslo-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group_version_path(group: &str) -> String {
    match group {
        "" => "api/v1".into(),
        group => format!("apis/{group}/v1"),
    }
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_v3_root() -> Value {
    let paths: serde_json::Map<String, Value> = ["", "apps", "batch"]
        .into_iter()
        .map(|group| {
            let path = group_version_path(group);
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=llmslo-sim")}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/<group version>`: the operations of each kind with the
/// query parameters that kubectl checks before it lets the server validate
/// fields (`fieldValidation` on PATCH). Schemas are left out.
pub fn openapi_v3_group_version(path: &str) -> Option<Value> {
    let group = match path {
        "api/v1" => "",
        "apis/apps/v1" => "apps",
        "apis/batch/v1" => "batch",
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    for resource in ALL.into_iter().filter(|resource| resource.group() == group) {
        let scope = if resource.namespaced() {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let gvk = json!({"group": group, "version": "v1", "kind": resource.kind()});
        let parameters = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let operation = |id: &str| {
            json!({
                "operationId": format!("{id}{}", resource.kind()),
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": id,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(
            format!(
                "/{}/{scope}{}",
                group_version_path(group),
                resource.plural()
            ),
            json!({"post": operation("create")}),
        );
        paths.insert(
            format!(
                "/{}/{scope}{}/{{name}}",
                group_version_path(group),
                resource.plural()
            ),
            json!({"patch": operation("patch"), "put": operation("replace")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {},
    }))
}
