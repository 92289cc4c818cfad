//! A fake Kubernetes API server: plain HTTP/1.1 on `127.0.0.1:0`, in-memory
//! state, real Kubernetes JSON (objects with `apiVersion`/`kind`/`metadata`,
//! `Status` objects for errors), so the `kube` client talks to it unchanged.
//!
//! ```text
//! test ──add_namespace / add_pod / add_token──▶ State ◀── handle() ◀── HTTP ◀── kube::Client
//!      ◀──requests() / token_reviews() / secret_data()──┘
//! ```
//!
//! Served: `POST /apis/authentication.k8s.io/v1/tokenreviews`;
//! `GET /api/v1/namespaces[/{ns}]`; `GET …/pods[/{name}]` (list with
//! `fieldSelector`, `limit`, `continue`), also across namespaces
//! (`GET /api/v1/pods`); `GET`/`POST …/secrets` and
//! `…/configmaps`, `GET`/`PUT …/{secrets,configmaps}/{name}`. Semantics kept:
//! `404 NotFound`, `POST` of an existing name → `409 AlreadyExists`, `PUT`
//! with a stale `resourceVersion` → `409 Conflict`, a global
//! `resourceVersion` bumped on every write, creation refused in a missing
//! (`404`) or terminating (`403`) namespace.
//!
//! Test hooks: [`FakeApiServer::fail_next`] answers the next request with an
//! error status; [`FakeApiServer::on_next_secret_post_conflict`] and
//! [`FakeApiServer::on_next_config_map_put_conflict`] make "another replica"
//! write just before the next matching request is handled, so races are
//! exercised deterministically, without sleeps.
//!
//! The server's task (and every connection task) stops on
//! [`FakeApiServer::shutdown`] or when the server is dropped.

mod handle;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The timestamp the fake puts on every object.
const TIMESTAMP: &str = "2025-01-01T00:00:00Z";

/// What the fake's TokenReview says about one token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewResult {
    /// `status.authenticated`.
    pub authenticated: bool,
    /// `status.user.username`, e.g. `system:serviceaccount:ns:sa`.
    pub user: String,
    /// `status.user.extra`.
    pub extra: BTreeMap<String, Vec<String>>,
    /// The audiences the token is valid for. When the review asks for
    /// audiences, the answer carries the intersection, and an empty
    /// intersection is unauthenticated (as the API server does); an empty
    /// list here is returned as is (a server that ignores audiences).
    pub audiences: Vec<String>,
    /// `status.error`.
    pub error: Option<String>,
}

impl ReviewResult {
    /// An authenticated service-account token, without pod or node binding.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            authenticated: true,
            user: format!("system:serviceaccount:{namespace}:{name}"),
            ..Self::default()
        }
    }

    /// An authenticated token of any user name.
    pub fn user(username: &str) -> Self {
        Self {
            authenticated: true,
            user: username.to_owned(),
            ..Self::default()
        }
    }

    /// A token the API server refuses, with `error` as `status.error`.
    pub fn rejected(error: &str) -> Self {
        Self {
            error: Some(error.to_owned()),
            ..Self::default()
        }
    }

    /// Binds the token to a pod (`authentication.kubernetes.io/pod-name` and `pod-uid`).
    pub fn with_pod(mut self, name: &str, uid: &str) -> Self {
        self.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![name.into()],
        );
        self.extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![uid.into()],
        );
        self
    }

    /// Binds the token to a node (`authentication.kubernetes.io/node-name`).
    pub fn with_node(mut self, node: &str) -> Self {
        self.extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            vec![node.into()],
        );
        self
    }

    /// Sets the audiences the token is valid for.
    pub fn with_audiences(mut self, audiences: &[&str]) -> Self {
        self.audiences = audiences.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

/// One request the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (empty if none).
    pub query: String,
}

/// The kinds of namespaced objects the fake stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    ConfigMap,
    Pod,
    Secret,
}

impl Kind {
    fn from_resource(resource: &str) -> Option<Self> {
        match resource {
            "configmaps" => Some(Self::ConfigMap),
            "pods" => Some(Self::Pod),
            "secrets" => Some(Self::Secret),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Pod => "Pod",
            Self::Secret => "Secret",
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmaps",
            Self::Pod => "pods",
            Self::Secret => "secrets",
        }
    }
}

/// A concurrent write the fake applies just before a matching request.
#[derive(Debug)]
struct Interloper {
    method: &'static str,
    kind: Kind,
    namespace: String,
    name: String,
    object: Value,
}

/// Everything the fake knows.
#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<String, Value>,
    objects: BTreeMap<(Kind, String, String), Value>,
    tokens: HashMap<String, ReviewResult>,
    required_bearer: Option<String>,
    resource_version: u64,
    next_uid: u64,
    page_size: Option<usize>,
    requests: Vec<RecordedRequest>,
    token_reviews: usize,
    fail_next: Option<u16>,
    interlopers: Vec<Interloper>,
}

impl State {
    fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.next_uid)
    }

    /// Stores `object` as `kind` `namespace/name`, filling in server-set
    /// metadata and bumping the resourceVersion; keeps uid and
    /// creationTimestamp of an object it replaces.
    fn store(&mut self, kind: Kind, namespace: &str, name: &str, mut object: Value) -> Value {
        let key = (kind, namespace.to_owned(), name.to_owned());
        let previous = self.objects.get(&key).map(|o| o["metadata"].clone());
        let uid = match previous.as_ref().and_then(|m| m["uid"].as_str()) {
            Some(uid) => uid.to_owned(),
            None => object["metadata"]["uid"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| self.uid()),
        };
        let resource_version = self.bump();
        if kind == Kind::Secret {
            handle::fold_string_data(&mut object);
        }
        object["apiVersion"] = json!("v1");
        object["kind"] = json!(kind.name());
        let metadata = &mut object["metadata"];
        if !metadata.is_object() {
            *metadata = json!({});
        }
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(namespace);
        metadata["uid"] = json!(uid);
        metadata["resourceVersion"] = json!(resource_version);
        metadata["creationTimestamp"] = json!(TIMESTAMP);
        self.objects.insert(key, object.clone());
        object
    }
}

/// A fake Kubernetes API server on loopback.
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("fake API server address");
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Connections live in this set: when the accept loop ends, the
            // set is shut down and every connection task with it.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = Arc::clone(&shared);
                        connections.spawn(async move {
                            let service = service_fn(move |request| {
                                handle::handle(Arc::clone(&state), request)
                            });
                            // A client hanging up mid-request is not a test failure.
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            connections.shutdown().await;
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes every connection and waits for the server's
    /// task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("fake API server task");
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake API server state")
    }

    /// Adds an `Active` namespace.
    pub fn add_namespace(&self, name: &str) {
        let mut state = self.state();
        let uid = state.uid();
        let resource_version = state.bump();
        state.namespaces.insert(
            name.to_owned(),
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "uid": uid,
                    "resourceVersion": resource_version,
                    "creationTimestamp": TIMESTAMP,
                },
                "spec": { "finalizers": ["kubernetes"] },
                "status": { "phase": "Active" },
            }),
        );
    }

    /// Marks a namespace as being deleted (`status.phase: Terminating`, a
    /// `deletionTimestamp`); creating objects in it is then refused with 403.
    pub fn terminate_namespace(&self, name: &str) {
        let mut state = self.state();
        let resource_version = state.bump();
        let ns = state
            .namespaces
            .get_mut(name)
            .expect("terminate_namespace: no such namespace");
        ns["status"]["phase"] = json!("Terminating");
        ns["metadata"]["deletionTimestamp"] = json!(TIMESTAMP);
        ns["metadata"]["resourceVersion"] = json!(resource_version);
    }

    /// Adds a pod running as `service_account`; `node` empty means not
    /// scheduled; `phase` is `Pending`, `Running`, `Succeeded`, `Failed`…
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        service_account: &str,
        node: &str,
        phase: &str,
    ) {
        let mut spec = json!({
            "serviceAccountName": service_account,
            "containers": [{ "name": "app", "image": "example.invalid/app:1" }],
        });
        if !node.is_empty() {
            spec["nodeName"] = json!(node);
        }
        let pod = json!({
            "metadata": { "uid": uid },
            "spec": spec,
            "status": { "phase": phase },
        });
        self.state().store(Kind::Pod, namespace, name, pod);
    }

    /// Stores a Pod object as given (e.g. with `metadata.labels` and
    /// `status.containerStatuses`); server-set metadata is filled in, a
    /// `metadata.uid` in `pod` is kept.
    pub fn put_pod(&self, namespace: &str, name: &str, pod: Value) {
        self.state().store(Kind::Pod, namespace, name, pod);
    }

    /// Makes TokenReviews of `token` answer `result`; unknown tokens are
    /// unauthenticated.
    pub fn add_token(&self, token: &str, result: ReviewResult) {
        self.state().tokens.insert(token.to_owned(), result);
    }

    /// Requires `Authorization: Bearer <token>` on every request (401 otherwise).
    pub fn require_bearer(&self, token: &str) {
        self.state().required_bearer = Some(token.to_owned());
    }

    /// Caps list pages at `size` items, so clients must follow `continue`.
    pub fn set_page_size(&self, size: usize) {
        self.state().page_size = Some(size);
    }

    /// Stores a Secret (as if created earlier), `data` values raw (the fake
    /// base64-encodes them).
    pub fn put_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) {
        let secret = secret_object(data);
        self.state().store(Kind::Secret, namespace, name, secret);
    }

    /// A stored Secret, as JSON.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::Secret, namespace, name)
    }

    /// A stored Secret's `data`, base64-decoded.
    pub fn secret_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self.secret(namespace, name)?;
        let data = secret["data"].as_object().cloned().unwrap_or_default();
        Some(
            data.into_iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().expect("Secret data value is a string"))
                        .expect("Secret data value is base64");
                    (k, bytes)
                })
                .collect(),
        )
    }

    /// Stores a ConfigMap (as if created earlier).
    pub fn put_config_map(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let config_map = config_map_object(data);
        self.state()
            .store(Kind::ConfigMap, namespace, name, config_map);
    }

    /// A stored ConfigMap, as JSON.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::ConfigMap, namespace, name)
    }

    /// A stored ConfigMap's `data`.
    pub fn config_map_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let config_map = self.config_map(namespace, name)?;
        let data = config_map["data"].as_object().cloned().unwrap_or_default();
        Some(
            data.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        )
    }

    fn object(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.state().objects.get(&key).cloned()
    }

    /// Every request so far, as `(method, path)`.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state()
            .requests
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect()
    }

    /// Every request so far, with its query.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// How many requests had this method and path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// How many TokenReviews were answered.
    pub fn token_reviews(&self) -> usize {
        self.state().token_reviews
    }

    /// Answers the next request, whatever it is, with `status` and a
    /// `Status` body (reason from the code: `InternalError` for 500, …).
    pub fn fail_next(&self, status: u16) {
        self.state().fail_next = Some(status);
    }

    /// Just before the next `POST` of a Secret in `namespace`, stores
    /// `name` with `data` as if another replica had won the race; the POST
    /// then meets `409 AlreadyExists` if it is for the same name.
    pub fn on_next_secret_post_conflict(
        &self,
        namespace: &str,
        name: &str,
        data: &[(&str, &[u8])],
    ) {
        self.state().interlopers.push(Interloper {
            method: "POST",
            kind: Kind::Secret,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            object: secret_object(data),
        });
    }

    /// Just before the next `PUT` of ConfigMap `namespace/name`, stores
    /// `data` in it (bumping its resourceVersion), so that PUT carries a
    /// stale resourceVersion and meets `409 Conflict`.
    pub fn on_next_config_map_put_conflict(
        &self,
        namespace: &str,
        name: &str,
        data: &[(&str, &str)],
    ) {
        self.state().interlopers.push(Interloper {
            method: "PUT",
            kind: Kind::ConfigMap,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            object: config_map_object(data),
        });
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn secret_object(data: &[(&str, &[u8])]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            ((*k).to_owned(), Value::String(encoded))
        })
        .collect();
    json!({ "metadata": {}, "type": "Opaque", "data": data })
}

fn config_map_object(data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    json!({ "metadata": {}, "data": data })
}
