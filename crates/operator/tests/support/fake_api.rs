//! An in-process Kubernetes API server behind `kube::Client::new` (the tower seam kube-rs
//! tests use): lists, watches (streamed), gets, creates, patches (apply, merge, strategic as
//! merge; server-side apply conflicts on a Lease's holder), deletes and TokenReviews, on JSON
//! kept in memory. Every request is recorded for assertions.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

struct Watcher {
    collection: String,
    namespace: Option<String>,
    selector: Option<String>,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
}

#[derive(Default)]
struct State {
    /// collection ("apis/g/v/plural" or "api/v1/plural") -> (namespace, name) -> object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    rv: u64,
    watchers: Vec<Watcher>,
    requests: Vec<Recorded>,
    /// token -> TokenReview status.
    reviews: HashMap<String, Value>,
    /// Collections whose lists wait until released.
    held: BTreeSet<String>,
    /// (collection, ns, name) -> field manager owning spec.holderIdentity.
    holders: HashMap<(String, String, String), String>,
}

/// The fake API server.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    released: watch::Sender<u64>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

fn matches(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector else { return true };
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => !labels[term].is_null(),
    })
}

/// A parsed API path.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = match *parts.first()? {
        "api" => (format!("api/{}", parts.get(1)?), &parts[2..]),
        "apis" => (format!("apis/{}/{}", parts.get(1)?, parts.get(2)?), &parts[3..]),
        _ => return None,
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Target {
        collection: format!("{prefix}/{}", rest.first()?),
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        subresource: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeApi {
    pub fn new() -> Self {
        Self { state: Arc::default(), released: watch::Sender::new(0) }
    }

    /// A client talking to this server.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Stores `object` (as the API server would after a write), notifying watchers.
    pub fn put(&self, collection: &str, mut object: Value) {
        let mut s = self.state.lock().unwrap();
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let existing = s.objects.get(collection).and_then(|c| c.get(&(ns.clone(), name.clone()))).cloned();
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let generation = match &existing {
            Some(e) if e["spec"] != object["spec"] => e["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
            Some(e) => e["metadata"]["generation"].as_i64().unwrap_or(1),
            None => 1,
        };
        object["metadata"]["generation"] = generation.into();
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = format!("uid-{ns}-{name}").into();
        }
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        let kind = if existing.is_some() { "MODIFIED" } else { "ADDED" };
        s.objects.entry(collection.to_owned()).or_default().insert((ns, name), object.clone());
        Self::notify(&mut s, collection, kind, &object);
    }

    /// Deletes an object, notifying watchers.
    pub fn remove(&self, collection: &str, namespace: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        let gone = s.objects.get_mut(collection).and_then(|c| c.remove(&(namespace.to_owned(), name.to_owned())));
        if let Some(object) = gone {
            s.rv += 1;
            Self::notify(&mut s, collection, "DELETED", &object);
        }
    }

    fn notify(s: &mut State, collection: &str, kind: &str, object: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        let ns = object["metadata"]["namespace"].as_str();
        s.watchers.retain(|w| {
            if w.collection != collection
                || (w.namespace.is_some() && w.namespace.as_deref() != ns)
                || !matches(object, w.selector.as_deref())
            {
                return !w.tx.is_closed();
            }
            w.tx.try_send(Ok(Frame::data(line.clone()))).is_ok()
        });
    }

    /// An object as stored.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects.get(collection)?.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests with `method` whose path ends with `suffix`.
    pub fn writes(&self, method: &str, contains: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path.contains(contains)).collect()
    }

    /// Answers TokenReviews of `token` with `status`.
    pub fn review(&self, token: &str, status: Value) {
        self.state.lock().unwrap().reviews.insert(token.to_owned(), status);
    }

    /// Lists of `collection` wait until [`Self::release`].
    pub fn hold(&self, collection: &str) {
        self.state.lock().unwrap().held.insert(collection.to_owned());
    }

    /// Lets held lists answer.
    pub fn release(&self, collection: &str) {
        self.state.lock().unwrap().held.remove(collection);
        self.released.send_modify(|n| *n += 1);
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let content_type =
            req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.state.lock().unwrap().requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        let Some(t) = parse(&path) else { return status(StatusCode::NOT_FOUND, "NotFound", "no such path") };
        if t.collection == "apis/authentication.k8s.io/v1/tokenreviews" {
            let token = body["spec"]["token"].as_str().unwrap_or_default();
            let answer = self.state.lock().unwrap().reviews.get(token).cloned();
            let review_status = answer.unwrap_or(json!({"authenticated": false, "error": "invalid bearer token"}));
            let mut out = body.clone();
            out["status"] = review_status;
            return full(StatusCode::CREATED, out);
        }
        match (method.as_str(), &t.name) {
            ("GET", None) if query_param(&query, "watch").as_deref() == Some("true") => self.watch(&t, &query),
            ("GET", None) => self.list(&t, &query).await,
            ("GET", Some(name)) => match self.get(&t.collection, t.namespace.as_deref().unwrap_or_default(), name) {
                Some(o) => full(StatusCode::OK, o),
                None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
            },
            ("POST", None) => {
                let mut object = body;
                if let Some(ns) = &t.namespace {
                    object["metadata"]["namespace"] = ns.clone().into();
                }
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if name.is_empty() && object["metadata"]["generateName"].is_string() {
                    let n = self.state.lock().unwrap().rv;
                    object["metadata"]["name"] =
                        format!("{}{n}", object["metadata"]["generateName"].as_str().unwrap()).into();
                }
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if self.get(&t.collection, t.namespace.as_deref().unwrap_or_default(), &name).is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists", &format!("{name} already exists"));
                }
                self.put(&t.collection, object);
                let stored = self.get(&t.collection, t.namespace.as_deref().unwrap_or_default(), &name);
                full(StatusCode::CREATED, stored.unwrap_or_default())
            }
            ("PATCH", Some(name)) => self.patch(&t, name, &query, &content_type, body),
            ("PUT", Some(name)) => {
                let mut object = body;
                object["metadata"]["namespace"] = t.namespace.clone().map_or(Value::Null, Value::from);
                object["metadata"]["name"] = name.clone().into();
                self.put(&t.collection, object.clone());
                full(
                    StatusCode::OK,
                    self.get(&t.collection, t.namespace.as_deref().unwrap_or_default(), name).unwrap_or_default(),
                )
            }
            ("DELETE", Some(name)) => {
                let ns = t.namespace.clone().unwrap_or_default();
                match self.get(&t.collection, &ns, name) {
                    Some(o) => {
                        self.remove(&t.collection, &ns, name);
                        full(StatusCode::OK, o)
                    }
                    None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported by the fake"),
        }
    }

    async fn list(&self, t: &Target, query: &str) -> Response<Body> {
        let mut released = self.released.subscribe();
        while self.state.lock().unwrap().held.contains(&t.collection) {
            let _ = released.changed().await;
        }
        let selector = query_param(query, "labelSelector");
        let s = self.state.lock().unwrap();
        let items: Vec<Value> = s
            .objects
            .get(&t.collection)
            .into_iter()
            .flatten()
            .filter(|((ns, _), o)| {
                t.namespace.as_ref().is_none_or(|want| want == ns) && matches(o, selector.as_deref())
            })
            .map(|(_, o)| o.clone())
            .collect();
        full(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        )
    }

    fn watch(&self, t: &Target, query: &str) -> Response<Body> {
        let (tx, rx) = mpsc::channel(1024);
        self.state.lock().unwrap().watchers.push(Watcher {
            collection: t.collection.clone(),
            namespace: t.namespace.clone(),
            selector: query_param(query, "labelSelector"),
            tx,
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        r
    }

    fn patch(&self, t: &Target, name: &str, query: &str, content_type: &str, body: Value) -> Response<Body> {
        let ns = t.namespace.clone().unwrap_or_default();
        let manager = query_param(query, "fieldManager").unwrap_or_default();
        let force = query_param(query, "force").as_deref() == Some("true");
        let apply = content_type.contains("apply-patch");
        let existing = self.get(&t.collection, &ns, name);
        let mut object = match (&existing, apply) {
            (Some(o), _) => o.clone(),
            (None, true) if t.subresource.is_none() => {
                json!({"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": {"name": name, "namespace": ns}})
            }
            _ => return status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
        };
        // Server-side apply: the holder of a Lease belongs to the manager that set it.
        let holder = body["spec"]["holderIdentity"].clone();
        let key = (t.collection.clone(), ns.clone(), name.to_owned());
        if t.collection.ends_with("/leases") {
            let mut s = self.state.lock().unwrap();
            let owner = s.holders.get(&key).cloned();
            if apply
                && !force
                && holder.is_string()
                && let Some(owner) = owner.filter(|o| *o != manager)
                && object["spec"]["holderIdentity"].is_string()
                && object["spec"]["holderIdentity"] != holder
            {
                let message = format!("Apply failed with 1 conflict: conflict with \"{owner}\": .spec.holderIdentity");
                return status(StatusCode::CONFLICT, "Conflict", &message);
            }
            if holder.is_string() {
                s.holders.insert(key, manager.clone());
            } else if body["spec"].get("holderIdentity").is_some_and(Value::is_null) {
                s.holders.remove(&key);
            }
        }
        match t.subresource.as_deref() {
            Some("status") => {
                object["status"] = body["status"].clone();
            }
            _ => {
                let mut patch = body;
                if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("name");
                    meta.remove("namespace");
                }
                merge(&mut object, &patch);
            }
        }
        object["metadata"]["name"] = name.into();
        if !ns.is_empty() {
            object["metadata"]["namespace"] = ns.clone().into();
        }
        self.put(&t.collection, object);
        full(StatusCode::OK, self.get(&t.collection, &ns, name).unwrap_or_default())
    }
}
