//! `meta.k8s.io/v1` Table responses, which kubectl requests to print
//! `kubectl get` output.

use serde_json::{Value, json};

use super::resources::Resource;

fn column(name: &str, type_: &str, format: &str) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": "", "priority": 0})
}

/// Builds the Table of `objects` with the columns kubectl shows by default.
pub fn table(resource: Resource, objects: &[Value], resource_version: u64) -> Value {
    let columns = match resource {
        Resource::Pods => vec![
            column("Name", "string", "name"),
            column("Ready", "string", ""),
            column("Status", "string", ""),
            column("Restarts", "string", ""),
            column("Node", "string", ""),
        ],
        Resource::Jobs => vec![
            column("Name", "string", "name"),
            column("Status", "string", ""),
            column("Completions", "string", ""),
        ],
        _ => vec![column("Name", "string", "name")],
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let name = object["metadata"]["name"].clone();
            let cells = match resource {
                Resource::Pods => {
                    let statuses = object["status"]["containerStatuses"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let ready = statuses
                        .iter()
                        .filter(|status| status["ready"] == true)
                        .count();
                    let total = object["spec"]["containers"]
                        .as_array()
                        .map(Vec::len)
                        .unwrap_or(0);
                    let waiting = statuses
                        .iter()
                        .find_map(|status| status["state"]["waiting"]["reason"].as_str());
                    let terminated = statuses
                        .iter()
                        .find_map(|status| status["state"]["terminated"]["reason"].as_str());
                    let status = if !object["metadata"]["deletionTimestamp"].is_null() {
                        "Terminating"
                    } else {
                        waiting
                            .or(terminated)
                            .or(object["status"]["phase"].as_str())
                            .unwrap_or("Unknown")
                    };
                    json!([
                        name,
                        format!("{ready}/{total}"),
                        status,
                        0,
                        object["spec"]["nodeName"].as_str().unwrap_or("<none>")
                    ])
                }
                Resource::Jobs => {
                    let conditions = object["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let status = ["Complete", "Failed"]
                        .into_iter()
                        .find(|type_| {
                            conditions.iter().any(|condition| {
                                condition["type"] == *type_ && condition["status"] == "True"
                            })
                        })
                        .unwrap_or("Running");
                    let succeeded = object["status"]["succeeded"].as_i64().unwrap_or(0);
                    json!([name, status, format!("{succeeded}/1")])
                }
                _ => json!([name]),
            };
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}
