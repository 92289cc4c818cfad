//! Request routing and the Kubernetes semantics of the fake API server.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Kind, RecordedRequest, State};

type Answer = (StatusCode, Value);

/// Answers one request.
pub(super) async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let recorded = RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
    };
    let (status, value) = {
        let mut state = state.lock().expect("fake API server state");
        state.requests.push(recorded.clone());
        answer(&mut state, &recorded, authorization.as_deref(), &body)
    };
    let body = serde_json::to_vec(&value).expect("serialise a JSON value");
    Ok(Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response"))
}

fn answer(
    state: &mut State,
    request: &RecordedRequest,
    authorization: Option<&str>,
    body: &[u8],
) -> Answer {
    if let Some(code) = state.fail_next.take() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return failure(status, "injected failure", None);
    }
    if let Some(required) = &state.required_bearer
        && authorization != Some(format!("Bearer {required}").as_str())
    {
        return failure(StatusCode::UNAUTHORIZED, "Unauthorized", None);
    }
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let method = request.method.as_str();
    match (method, segments.as_slice()) {
        ("POST", ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            token_review(state, body)
        }
        ("GET", ["api", "v1", "namespaces"]) => {
            let items: Vec<Value> = state.namespaces.values().cloned().collect();
            list(state, "NamespaceList", items, &request.query)
        }
        // Cluster-wide lists (`GET /api/v1/pods?fieldSelector=spec.nodeName=…`,
        // as a node agent lists the pods on its node).
        ("GET", ["api", "v1", resource]) => match Kind::from_resource(resource) {
            Some(kind) => list_kind(state, kind, None, &request.query),
            None => not_found(resource, ""),
        },
        ("GET", ["api", "v1", "namespaces", ns]) => match state.namespaces.get(*ns) {
            Some(namespace) => (StatusCode::OK, namespace.clone()),
            None => not_found("namespaces", ns),
        },
        (_, ["api", "v1", "namespaces", ns, resource, rest @ ..]) => {
            let Some(kind) = Kind::from_resource(resource) else {
                return not_found(resource, "");
            };
            match (method, rest) {
                ("GET", []) => list_kind(state, kind, Some(ns), &request.query),
                ("POST", []) if kind != Kind::Pod => create(state, kind, ns, body),
                ("GET", [name]) => {
                    match state
                        .objects
                        .get(&(kind, (*ns).to_owned(), (*name).to_owned()))
                    {
                        Some(object) => (StatusCode::OK, object.clone()),
                        None => not_found(kind.resource(), name),
                    }
                }
                ("PUT", [name]) if kind != Kind::Pod => replace(state, kind, ns, name, body),
                _ => failure(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "the fake does not serve this",
                    None,
                ),
            }
        }
        _ => failure(
            StatusCode::NOT_FOUND,
            "the server could not find the requested resource",
            None,
        ),
    }
}

fn token_review(state: &mut State, body: &[u8]) -> Answer {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return failure(StatusCode::BAD_REQUEST, "the body is not JSON", None);
    };
    state.token_reviews += 1;
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let requested: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let result = state.tokens.get(token).cloned().unwrap_or_default();
    let audiences: Vec<String> = if requested.is_empty() || result.audiences.is_empty() {
        result.audiences.clone()
    } else {
        result
            .audiences
            .iter()
            .filter(|a| requested.contains(a))
            .cloned()
            .collect()
    };
    let audience_mismatch =
        !requested.is_empty() && !result.audiences.is_empty() && audiences.is_empty();
    let status = if result.authenticated && !audience_mismatch {
        json!({
            "authenticated": true,
            "user": {
                "username": result.user,
                "uid": "00000000-0000-4000-8000-00000000beef",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": result.extra,
            },
            "audiences": audiences,
        })
    } else {
        let error = if audience_mismatch {
            format!(
                "[token audiences {:?} is invalid for the target audiences {requested:?}]",
                result.audiences
            )
        } else {
            result
                .error
                .unwrap_or_else(|| "[invalid bearer token]".to_owned())
        };
        json!({ "user": {}, "error": error })
    };
    // Like the real API server, the answer echoes the spec, token included.
    (
        StatusCode::CREATED,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": { "creationTimestamp": null },
            "spec": review["spec"],
            "status": status,
        }),
    )
}

/// Lists `kind` in `ns`, or in every namespace when `ns` is `None`.
fn list_kind(state: &State, kind: Kind, ns: Option<&str>, query: &str) -> Answer {
    let selector = query_param(query, "fieldSelector").unwrap_or_default();
    let mut requirements = Vec::new();
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (f, v, true)
        } else {
            return failure(
                StatusCode::BAD_REQUEST,
                &format!("invalid field selector {term:?}"),
                None,
            );
        };
        let pointer = match field {
            "metadata.name" => "/metadata/name",
            "metadata.namespace" => "/metadata/namespace",
            "spec.nodeName" if kind == Kind::Pod => "/spec/nodeName",
            "spec.serviceAccountName" if kind == Kind::Pod => "/spec/serviceAccountName",
            "status.phase" if kind == Kind::Pod => "/status/phase",
            _ => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    &format!("field label not supported: {field}"),
                    None,
                );
            }
        };
        requirements.push((pointer, value.to_owned(), equal));
    }
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| n == ns))
        .map(|(_, object)| object)
        .filter(|object| {
            requirements.iter().all(|(pointer, value, equal)| {
                let actual = object
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (actual == value) == *equal
            })
        })
        .cloned()
        .collect();
    list(state, &format!("{}List", kind.name()), items, query)
}

/// A list answer, paged by `limit` (capped by the page size) and `continue`
/// (the offset of the next item).
fn list(state: &State, kind: &str, items: Vec<Value>, query: &str) -> Answer {
    let start: usize = query_param(query, "continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let size = match (limit, state.page_size) {
        (Some(l), Some(p)) => l.min(p),
        (l, p) => l.or(p).unwrap_or(usize::MAX),
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let next = start.saturating_add(page.len());
    let mut metadata = json!({ "resourceVersion": state.resource_version.to_string() });
    if next < total {
        metadata["continue"] = json!(next.to_string());
    }
    (
        StatusCode::OK,
        json!({ "apiVersion": "v1", "kind": kind, "metadata": metadata, "items": page }),
    )
}

/// Applies an interloper registered for `method` on `kind` in `ns`.
fn interlope(state: &mut State, method: &str, kind: Kind, ns: &str, name: Option<&str>) {
    let position = state.interlopers.iter().position(|i| {
        i.method == method
            && i.kind == kind
            && i.namespace == ns
            && name.is_none_or(|n| i.name == n)
    });
    if let Some(position) = position {
        let interloper = state.interlopers.remove(position);
        state.store(kind, ns, &interloper.name, interloper.object);
    }
}

fn create(state: &mut State, kind: Kind, ns: &str, body: &[u8]) -> Answer {
    let Ok(object) = serde_json::from_slice::<Value>(body) else {
        return failure(StatusCode::BAD_REQUEST, "the body is not JSON", None);
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "metadata.name: Required value",
            None,
        );
    };
    if let Err(answer) = check_body_namespace(&object, ns) {
        return answer;
    }
    match state.namespaces.get(ns) {
        None => return not_found("namespaces", ns),
        Some(namespace) if namespace["status"]["phase"] == "Terminating" => {
            let message = format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                kind.resource()
            );
            return failure(StatusCode::FORBIDDEN, &message, Some((kind, &name)));
        }
        Some(_) => {}
    }
    interlope(state, "POST", kind, ns, None);
    if state
        .objects
        .contains_key(&(kind, ns.to_owned(), name.clone()))
    {
        let message = format!("{} \"{name}\" already exists", kind.resource());
        let mut answer = failure(StatusCode::CONFLICT, &message, Some((kind, &name)));
        answer.1["reason"] = json!("AlreadyExists");
        return answer;
    }
    let stored = state.store(kind, ns, &name, object);
    (StatusCode::CREATED, stored)
}

fn replace(state: &mut State, kind: Kind, ns: &str, name: &str, body: &[u8]) -> Answer {
    let Ok(object) = serde_json::from_slice::<Value>(body) else {
        return failure(StatusCode::BAD_REQUEST, "the body is not JSON", None);
    };
    if object["metadata"]["name"].as_str() != Some(name) {
        return failure(
            StatusCode::BAD_REQUEST,
            "the name of the object does not match the name on the URL",
            None,
        );
    }
    if let Err(answer) = check_body_namespace(&object, ns) {
        return answer;
    }
    interlope(state, "PUT", kind, ns, Some(name));
    let Some(current) = state.objects.get(&(kind, ns.to_owned(), name.to_owned())) else {
        return not_found(kind.resource(), name);
    };
    // An update without a resourceVersion is unconditional, as in Kubernetes.
    if let Some(sent) = object["metadata"]["resourceVersion"].as_str()
        && Some(sent) != current["metadata"]["resourceVersion"].as_str()
    {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            kind.resource()
        );
        return failure(StatusCode::CONFLICT, &message, Some((kind, name)));
    }
    let stored = state.store(kind, ns, name, object);
    (StatusCode::OK, stored)
}

fn check_body_namespace(object: &Value, ns: &str) -> Result<(), Answer> {
    match object["metadata"]["namespace"].as_str() {
        Some(body_ns) if body_ns != ns => Err(failure(
            StatusCode::BAD_REQUEST,
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
        )),
        _ => Ok(()),
    }
}

/// Moves a Secret's `stringData` into `data`, as the API server does.
pub(super) fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(strings)) = secret.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    for (key, value) in strings {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
        secret["data"][key] = json!(encoded);
    }
}

fn not_found(resource: &str, name: &str) -> Answer {
    let message = format!("{resource} \"{name}\" not found");
    let mut answer = failure(StatusCode::NOT_FOUND, &message, None);
    answer.1["details"] = json!({ "name": name, "kind": resource });
    answer
}

/// A `Status` failure with the reason Kubernetes uses for `status`.
fn failure(status: StatusCode, message: &str, details: Option<(Kind, &str)>) -> Answer {
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    });
    if let Some((kind, name)) = details {
        body["details"] = json!({ "name": name, "kind": kind.resource() });
    }
    (status, body)
}

/// The percent-decoded value of `key` in a query string.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
