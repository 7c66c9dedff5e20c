//! The HTTP side of the simulated API server: routing, authorization,
//! get/list/watch/create/delete, pod logs and discovery.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Method, Request, Response, StatusCode, body::Frame, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Shared, controller, discovery,
    resources::Resource,
    selectors::{FieldSelector, LabelSelector},
    status::{self, ApiStatus},
    store::{RequestRecord, labels_of},
    tables, validation,
};

pub type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status_response(error: ApiStatus) -> Response<Body> {
    json_response(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.body,
    )
}

fn text_response(text: String) -> Response<Body> {
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// A request for a resource, parsed from its path.
struct ResourcePath {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

pub async fn handle(
    shared: Arc<Shared>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = parse_query(request.uri().query().unwrap_or_default());
    let wants_table = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"));
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };

    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let not_found = || {
        status_response(ApiStatus {
            code: 404,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource", "reason": "NotFound",
                "details": {}, "code": 404}),
        })
    };
    let (group, rest) = match segments.as_slice() {
        ["version"] => return Ok(json_response(StatusCode::OK, &discovery::version())),
        ["api"] => return Ok(json_response(StatusCode::OK, &discovery::api_versions())),
        ["apis"] => return Ok(json_response(StatusCode::OK, &discovery::api_group_list())),
        ["api", "v1"] => {
            return Ok(discovery::api_resource_list("")
                .map_or_else(not_found, |d| json_response(StatusCode::OK, &d)));
        }
        ["apis", group] => {
            return Ok(discovery::api_group(group)
                .map_or_else(not_found, |d| json_response(StatusCode::OK, &d)));
        }
        ["apis", group, "v1"] => {
            return Ok(discovery::api_resource_list(group)
                .map_or_else(not_found, |d| json_response(StatusCode::OK, &d)));
        }
        ["openapi", "v3"] => {
            return Ok(json_response(StatusCode::OK, &discovery::openapi_v3_root()));
        }
        ["openapi", "v3", rest @ ..] => {
            return Ok(discovery::openapi_v3_group_version(&rest.join("/"))
                .map_or_else(not_found, |d| json_response(StatusCode::OK, &d)));
        }
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return Ok(not_found()),
    };
    let Some(target) = parse_resource_path(group, rest) else {
        return Ok(not_found());
    };

    let verb = match (&method, &target.name) {
        (&Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            "watch"
        }
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, None) => "create",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        _ => {
            return Ok(status_response(status::method_not_allowed(
                "the server does not allow this method on the requested resource".into(),
            )));
        }
    };
    let record = RequestRecord {
        verb: verb.to_string(),
        api_group: group.to_string(),
        resource: match &target.subresource {
            Some(subresource) => format!("{}/{subresource}", target.resource.plural()),
            None => target.resource.plural().to_string(),
        },
        namespace: target.namespace.clone().unwrap_or_default(),
    };
    let (denied, delay) = shared.with_state(|state| {
        state.requests.push(record.clone());
        let qualified = match group {
            "" => record.resource.clone(),
            group => format!("{}.{group}", record.resource),
        };
        let matches = |rule: &super::store::Denial| rule.verb == verb && rule.resource == qualified;
        let denied = state
            .knobs
            .denials
            .iter()
            .any(matches)
            .then(|| state.knobs.user.clone());
        let delay = state
            .knobs
            .delays
            .iter()
            .find(|(rule, _)| matches(rule))
            .map(|(_, delay)| *delay);
        (denied, delay)
    });
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(user) = denied {
        return Ok(status_response(status::forbidden(
            target.resource,
            target.subresource.as_deref(),
            target.name.as_deref(),
            verb,
            target.namespace.as_deref(),
            &user,
        )));
    }

    let response = match verb {
        "get" if target.subresource.as_deref() == Some("log") => {
            get_log(&shared, &target, &query).await
        }
        "get" if target.subresource.is_none() => get(&shared, &target),
        "list" => list(&shared, &target, &query, wants_table),
        "watch" => watch(&shared, &target, &query),
        "create" if target.subresource.is_none() => create(&shared, &target, &query, &body),
        "delete" if target.subresource.is_none() => delete(&shared, &target, &query, &body),
        _ => Err(status::method_not_allowed(format!(
            "{verb} is not supported on {} by the simulated API server",
            record.resource
        ))),
    };
    Ok(response.unwrap_or_else(status_response))
}

fn parse_resource_path(group: &str, rest: &[&str]) -> Option<ResourcePath> {
    let (namespace, plural, name, subresource) = match rest {
        ["namespaces", namespace] => (None, "namespaces", Some(*namespace), None),
        ["namespaces", namespace, plural, tail @ ..]
            if !group.is_empty() || *plural != "finalize" =>
        {
            (
                Some(*namespace),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
            )
        }
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => return None,
    };
    let resource = Resource::find(group, plural)?;
    if resource.namespaced() != namespace.is_some() && name.is_some() {
        return None;
    }
    Some(ResourcePath {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut output = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        output.push(byte);
                        index += 3;
                        continue;
                    }
                    Err(_) => output.push(b'%'),
                }
            }
            b'+' => output.push(b' '),
            byte => output.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&output).into_owned()
}

fn get(shared: &Shared, target: &ResourcePath) -> Result<Response<Body>, ApiStatus> {
    let name = target.name.as_deref().unwrap_or_default();
    let namespace = target.namespace.as_deref().unwrap_or_default();
    shared
        .get(target.resource, namespace, name)
        .map(|object| json_response(StatusCode::OK, &object))
        .ok_or_else(|| status::not_found(target.resource, name))
}

fn selectors(
    target: &ResourcePath,
    query: &BTreeMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiStatus> {
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(status::bad_request)?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        target.resource.field_selectors(),
    )
    .map_err(|message| status::bad_request(format!("unable to parse requirement: {message}")))?;
    Ok((labels, fields))
}

fn list(
    shared: &Shared,
    target: &ResourcePath,
    query: &BTreeMap<String, String>,
    wants_table: bool,
) -> Result<Response<Body>, ApiStatus> {
    let (labels, fields) = selectors(target, query)?;
    let (objects, resource_version) = shared.with_state(|state| {
        (
            state.list(target.resource, target.namespace.as_deref()),
            state.resource_version(),
        )
    });
    let items: Vec<Value> = objects
        .into_iter()
        .filter(|object| labels.matches(&labels_of(object)) && fields.matches(object))
        .collect();
    if wants_table {
        return Ok(json_response(
            StatusCode::OK,
            &tables::table(target.resource, &items, resource_version),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", target.resource.kind()),
            "apiVersion": target.resource.api_version(),
            "metadata": {"resourceVersion": resource_version.to_string()},
            "items": items,
        }),
    ))
}

fn watch(
    shared: &Arc<Shared>,
    target: &ResourcePath,
    query: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiStatus> {
    let (labels, fields) = selectors(target, query)?;
    let requested: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|seconds| seconds.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let resource = target.resource;
    let namespace = target.namespace.clone();
    let matches = move |object: &Value| {
        let in_namespace = namespace
            .as_deref()
            .is_none_or(|namespace| object["metadata"]["namespace"].as_str() == Some(namespace));
        in_namespace && labels.matches(&labels_of(object)) && fields.matches(object)
    };

    // Read the backlog and subscribe under one lock, so that no change
    // falls between them. Duplicates are dropped by resource version.
    let (backlog, mut receiver, gone) = shared.with_state(|state| {
        let receiver = shared.changes.subscribe();
        if requested != 0 && requested < state.compacted_below {
            return (
                Vec::new(),
                receiver,
                Some(status::gone(requested, state.compacted_below)),
            );
        }
        let backlog: Vec<(String, Value, u64)> = if requested == 0 {
            state
                .list(resource, None)
                .into_iter()
                .map(|object| ("ADDED".to_string(), object, state.resource_version()))
                .collect()
        } else {
            state
                .changes_since(resource, requested)
                .into_iter()
                .map(|change| {
                    (
                        change.change_type.as_str().to_string(),
                        change.object.clone(),
                        change.resource_version,
                    )
                })
                .collect()
        };
        (backlog, receiver, None)
    });

    let (sender, lines) = mpsc::channel::<Bytes>(64);
    let mut epoch = shared.watch_epoch.subscribe();
    epoch.mark_unchanged();
    tokio::spawn(async move {
        let line = |type_: &str, object: &Value| {
            let mut text =
                serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
            text.push(b'\n');
            Bytes::from(text)
        };
        if let Some(gone) = gone {
            let _ = sender.send(line("ERROR", &gone.body)).await;
            return;
        }
        let mut last_sent = requested;
        for (type_, object, resource_version) in backlog {
            if matches(&object) && sender.send(line(&type_, &object)).await.is_err() {
                return;
            }
            last_sent = last_sent.max(resource_version);
        }
        let expiry = tokio::time::sleep(timeout);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                change = receiver.recv() => {
                    let Ok(change) = change else {
                        // Lagged or closed: end the stream, so that the
                        // client restarts its watch from its last version.
                        return;
                    };
                    if change.resource != resource || change.resource_version <= last_sent {
                        continue;
                    }
                    last_sent = change.resource_version;
                    if matches(&change.object) && sender.send(line(change.change_type.as_str(), &change.object)).await.is_err() {
                        return;
                    }
                }
                _ = &mut expiry => return,
                _ = epoch.changed() => return,
                _ = sender.closed() => return,
            }
        }
    });

    let stream = futures::stream::unfold(lines, |mut lines| async move {
        lines
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), lines))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn create(
    shared: &Arc<Shared>,
    target: &ResourcePath,
    query: &BTreeMap<String, String>,
    body: &Bytes,
) -> Result<Response<Body>, ApiStatus> {
    let mut object: Value = serde_json::from_slice(body).map_err(|error| {
        status::bad_request(format!(
            "the body of the request was in an unknown format: {error}"
        ))
    })?;
    if !object.is_object() {
        return Err(status::bad_request(
            "the body of the request must be a JSON object".into(),
        ));
    }
    if let Some(namespace) = &target.namespace {
        if !shared.with_state(|state| state.namespace_exists(namespace)) {
            return Err(status::namespace_not_found(namespace));
        }
        object["metadata"]["namespace"] = json!(namespace);
    }

    if target.resource == Resource::Jobs {
        let typed = serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(object.clone())
            .map_err(|error| {
                status::bad_request(format!(
                    "Job in version \"v1\" cannot be handled as a Job: {error}"
                ))
            })?;
        if query
            .get("fieldValidation")
            .is_some_and(|mode| mode == "Strict")
        {
            let known = serde_json::to_value(&typed).unwrap_or_default();
            let unknown = unknown_fields(&object, &known, "");
            if !unknown.is_empty() {
                let fields: Vec<String> = unknown
                    .iter()
                    .map(|field| format!("unknown field {field:?}"))
                    .collect();
                return Err(status::bad_request(format!(
                    "strict decoding error: {}",
                    fields.join(", ")
                )));
            }
        }
        let causes = validation::validate_job(&object);
        if !causes.is_empty() {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            return Err(status::invalid(Resource::Jobs, &name, &causes));
        }
    }

    let namespace = target.namespace.clone().unwrap_or_default();
    let created = shared.with_state_and_publish(|state| {
        if object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
            && let Some(prefix) = object["metadata"]["generateName"].as_str()
        {
            object["metadata"]["name"] = json!(format!("{prefix}{}", state.name_suffix()));
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state.get(target.resource, &namespace, &name).is_some() {
            return Err(status::already_exists(target.resource, &name));
        }
        if target.resource == Resource::Jobs {
            let uid = state.new_uid();
            object["metadata"]["uid"] = json!(uid);
            object["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let labels = &mut object["spec"]["template"]["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["batch.kubernetes.io/controller-uid"] = json!(uid);
            labels["controller-uid"] = json!(uid);
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["job-name"] = json!(name);
            object["status"] = json!({});
        }
        let change = state.insert(target.resource, object.clone());
        Ok((change.object.clone(), vec![change]))
    })?;

    if target.resource == Resource::Jobs {
        let name = created["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        tokio::spawn(controller::run_job(shared.clone(), namespace, name));
    }
    Ok(json_response(StatusCode::CREATED, &created))
}

fn delete(
    shared: &Arc<Shared>,
    target: &ResourcePath,
    query: &BTreeMap<String, String>,
    body: &Bytes,
) -> Result<Response<Body>, ApiStatus> {
    let name = target.name.clone().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let propagation = options["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| query.get("propagationPolicy").cloned());
    let Some(object) = shared.get(target.resource, &namespace, &name) else {
        return Err(status::not_found(target.resource, &name));
    };
    match target.resource {
        Resource::Jobs => {
            // The default policy of batch/v1 Jobs orphans their pods.
            let propagation = propagation.unwrap_or_else(|| "Orphan".into());
            let deleted =
                controller::delete_job(shared, &namespace, &name, &propagation).unwrap_or(object);
            Ok(json_response(StatusCode::OK, &deleted))
        }
        Resource::Pods => {
            tokio::spawn(controller::delete_pod(
                shared.clone(),
                namespace.clone(),
                name.clone(),
            ));
            let mut marked = object;
            marked["metadata"]["deletionTimestamp"] = json!(super::store::now_rfc3339());
            Ok(json_response(StatusCode::OK, &marked))
        }
        _ => {
            shared.remove(target.resource, &namespace, &name);
            Ok(json_response(StatusCode::OK, &object))
        }
    }
}

async fn get_log(
    shared: &Arc<Shared>,
    target: &ResourcePath,
    query: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiStatus> {
    let namespace = target.namespace.clone().unwrap_or_default();
    let pod_name = target.name.clone().unwrap_or_default();
    let pod = shared
        .get(Resource::Pods, &namespace, &pod_name)
        .ok_or_else(|| status::not_found(Resource::Pods, &pod_name))?;
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|container| container["name"].as_str().map(str::to_string))
        .collect();
    let container = match query.get("container") {
        Some(container) if containers.contains(container) => container.clone(),
        Some(container) => {
            return Err(status::bad_request(format!(
                "container {container} is not valid for pod {pod_name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(status::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if query
        .get("previous")
        .is_some_and(|previous| previous == "true")
    {
        return Err(status::bad_request(format!(
            "previous terminated container {container:?} in pod {pod_name:?} not found"
        )));
    }
    let status = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|status| status["name"] == container.as_str())
        .cloned()
        .unwrap_or_default();
    if let Some(reason) = status["state"]["waiting"]["reason"].as_str() {
        return Err(status::bad_request(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {reason}"
        )));
    }
    if status.is_null() {
        return Err(status::bad_request(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: ContainerCreating"
        )));
    }

    let key = (namespace, pod_name, container);
    let mut text = shared.with_state(|state| state.logs.get(&key).cloned().unwrap_or_default());
    if query.get("follow").is_some_and(|follow| follow == "true") {
        // Wait for the container to end, then send the whole log.
        while shared
            .processes
            .lock()
            .unwrap()
            .contains_key(&(key.0.clone(), key.1.clone()))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        text = shared.with_state(|state| state.logs.get(&key).cloned().unwrap_or_default());
    }
    if let Some(tail) = query
        .get("tailLines")
        .and_then(|tail| tail.parse::<usize>().ok())
    {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(tail);
        text = lines[start..]
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
    }
    if let Some(limit) = query
        .get("limitBytes")
        .and_then(|limit| limit.parse::<usize>().ok())
    {
        text.truncate(limit);
    }
    Ok(text_response(text))
}

/// Paths of the fields of `sent` that the typed round trip `known` lost,
/// which are the fields the API does not define.
fn unknown_fields(sent: &Value, known: &Value, path: &str) -> Vec<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (sent, known) {
        (Value::Object(sent), Value::Object(known)) => sent
            .iter()
            .flat_map(|(key, value)| match known.get(key) {
                Some(known_value) => unknown_fields(value, known_value, &join(key)),
                None if value.is_null() => Vec::new(),
                None => vec![join(key)],
            })
            .collect(),
        (Value::Array(sent), Value::Array(known)) => sent
            .iter()
            .zip(known)
            .enumerate()
            .flat_map(|(index, (value, known_value))| {
                unknown_fields(value, known_value, &format!("{path}[{index}]"))
            })
            .collect(),
        _ => Vec::new(),
    }
}
