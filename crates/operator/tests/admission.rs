//! Who may subscribe to which view, in a cluster: a projected ServiceAccount token verified by
//! TokenReview (through kube-rs's tower-test mock of the API server), the team taken from the
//! pod's namespace, the stream closed when the token expires; and the exact status patch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{Request, Response};
use llmroute_operator::auth::{Authenticator, TokenReviewer};
use llmroute_operator::metrics::Metrics;
use llmroute_operator::publish::Publisher;
use llmroute_operator::state::Shared;
use llmroute_operator::stream::{Admission, Discovery};
use llmroute_proto::v1;
use llmroute_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use llmroute_proto::v1::routing_discovery_server::RoutingDiscoveryServer;
use llmroute_proto::v1::{control_message, sidecar_message};
use llmroute_snapshot::ResourceStore;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Mock = tower_test::mock::Handle<Request<kube::client::Body>, Response<kube::client::Body>>;

/// A JWT-shaped token expiring at `exp` (the API server verifies it; the operator only reads
/// the expiry after a successful review).
fn token(name: &str, exp: u64) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.sig-{name}", b64(&json!({"alg": "RS256"})), b64(&json!({"exp": exp, "sub": name})))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Answers TokenReviews: `answers` maps a token to its review status; asserts the request.
fn api_server(mut handle: Mock, answers: BTreeMap<String, Value>, reviews: Arc<std::sync::atomic::AtomicUsize>) {
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(request.uri().path(), "/apis/authentication.k8s.io/v1/tokenreviews");
            let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
            let review: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(review["spec"]["audiences"], json!(["llmroute"]), "the audience is asked for");
            reviews.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            let status =
                answers.get(token).cloned().unwrap_or(json!({"authenticated": false, "error": "invalid token"}));
            let mut out = review.clone();
            out["status"] = status;
            send.send_response(
                Response::builder().status(201).body(kube::client::Body::from(out.to_string().into_bytes())).unwrap(),
            );
        }
    });
}

fn pod_of(namespace: &str, audiences: &[&str]) -> Value {
    json!({"authenticated": true, "audiences": audiences,
           "user": {"username": format!("system:serviceaccount:{namespace}:app"),
                    "extra": {"authentication.kubernetes.io/pod-name": [format!("{namespace}-pod-1")]}}})
}

struct Server {
    addr: std::net::SocketAddr,
    reviews: Arc<std::sync::atomic::AtomicUsize>,
    shared: Arc<Shared>,
}

async fn server(answers: BTreeMap<String, Value>) -> Server {
    server_with(answers, 1000.0).await
}

async fn server_with(answers: BTreeMap<String, Value>, rate: f64) -> Server {
    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    let client = kube::Client::new(service, "default");
    let reviews = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    api_server(handle, answers, reviews.clone());
    let shared = Arc::new(Shared::new(Metrics::new().unwrap()));
    shared.namespace_teams.send_replace(Arc::new(BTreeMap::from([
        ("team-a-apps".to_string(), "team-a".to_string()),
        ("team-b-apps".to_string(), "team-b".to_string()),
    ])));
    Publisher::new(shared.clone(), None).publish(&ResourceStore::default(), Instant::now());
    let admission = Admission {
        auth: Arc::new(Authenticator::Cluster(Box::new(TokenReviewer::new(client, "llmroute")))),
        new_streams_per_second: rate,
        max_age: None,
        max_streams: usize::MAX,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = RoutingDiscoveryServer::new(Discovery::new(shared.clone(), admission));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Server { addr, reviews, shared }
}

/// Subscribes with `token` asking for `team`: the first message, or the refusal.
async fn subscribe(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    team: &str,
) -> Result<tonic::Streaming<v1::ControlMessage>, tonic::Status> {
    let mut client = RoutingDiscoveryClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    let hello = v1::Hello { team: team.into(), protocol: v1::Protocol::V1 as i32, ..Default::default() };
    tx.send(v1::SidecarMessage { kind: Some(sidecar_message::Kind::Hello(hello)) }).await.unwrap();
    std::mem::forget(tx);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    Ok(client.stream_routes(request).await?.into_inner())
}

async fn first_view(stream: &mut tonic::Streaming<v1::ControlMessage>) -> v1::ViewPush {
    loop {
        match stream.message().await.unwrap().unwrap().kind {
            Some(control_message::Kind::View(v)) => return v,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn an_admitted_pod_gets_its_namespaces_team_view_and_the_review_is_cached() {
    let good = token("good", now() + 3600);
    let s = server(BTreeMap::from([(good.clone(), pod_of("team-a-apps", &["llmroute"]))])).await;
    // No team asked: the namespace's team is served.
    let mut stream = subscribe(s.addr, Some(&good), "").await.unwrap();
    assert_eq!(first_view(&mut stream).await.team, "team-a");
    // The same team asked explicitly: fine, and the review is cached.
    let mut again = subscribe(s.addr, Some(&good), "team-a").await.unwrap();
    assert_eq!(first_view(&mut again).await.team, "team-a");
    assert_eq!(s.reviews.load(std::sync::atomic::Ordering::SeqCst), 1, "a valid token is reviewed once");
    // The registry knows the pod from the review, not from the hello.
    let teams = s.shared.registry.teams();
    assert_eq!(teams["team-a"].connected, 2);
}

#[tokio::test]
async fn denied_wrong_audience_missing_token_and_another_teams_view_are_refused() {
    let denied = token("denied", now() + 3600);
    let other_audience = token("aud", now() + 3600);
    let team_a = token("a", now() + 3600);
    let unlabelled = token("unlabelled", now() + 3600);
    let node = token("node", now() + 3600);
    let s = server(BTreeMap::from([
        (other_audience.clone(), pod_of("team-a-apps", &["https://kubernetes.default.svc"])),
        (team_a.clone(), pod_of("team-a-apps", &["llmroute"])),
        (unlabelled.clone(), pod_of("default", &["llmroute"])),
        (
            node.clone(),
            json!({"authenticated": true, "audiences": ["llmroute"], "user": {"username": "system:node:n1"}}),
        ),
    ]))
    .await;
    let refusal = |r: Result<_, tonic::Status>| r.err().map(|s| (s.code(), s.message().to_owned())).unwrap();
    let (code, message) = refusal(subscribe(s.addr, Some(&denied), "team-a").await);
    assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
    let (code, message) = refusal(subscribe(s.addr, Some(&other_audience), "team-a").await);
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(message.contains("audience"), "{message}");
    let (code, _) = refusal(subscribe(s.addr, None, "team-a").await);
    assert_eq!(code, tonic::Code::Unauthenticated);
    // A pod of team-a asking for team-b's view (which holds team-b's credentials).
    let (code, message) = refusal(subscribe(s.addr, Some(&team_a), "team-b").await);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(message.contains("belongs to team \"team-a\""), "{message}");
    let (code, message) = refusal(subscribe(s.addr, Some(&unlabelled), "").await);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(message.contains("llmroute.dev/team"), "{message}");
    let (code, _) = refusal(subscribe(s.addr, Some(&node), "").await);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(s.shared.registry.teams().is_empty(), "a refused stream was registered");
}

#[tokio::test]
async fn the_stream_ends_when_its_token_expires() {
    let short = token("short", now() + 2);
    let s = server(BTreeMap::from([(short.clone(), pod_of("team-a-apps", &["llmroute"]))])).await;
    let mut stream = subscribe(s.addr, Some(&short), "").await.unwrap();
    first_view(&mut stream).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream outlived its token");
    assert_eq!(ended, Some(tonic::Code::Unauthenticated));
}

#[tokio::test]
async fn new_streams_beyond_the_admission_rate_are_told_to_come_back() {
    let good = token("good", now() + 3600);
    let s = server_with(BTreeMap::from([(good.clone(), pod_of("team-a-apps", &["llmroute"]))]), 2.0).await;
    let mut refused = 0;
    let mut held = Vec::new();
    for _ in 0..6 {
        match subscribe(s.addr, Some(&good), "").await {
            Ok(stream) => held.push(stream),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                refused += 1;
            }
        }
    }
    assert!(refused >= 3, "{refused} of 6 refused at 2/s");
    assert_eq!(s.shared.metrics.streams_refused.get(), refused);
    // A second later the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(subscribe(s.addr, Some(&good), "").await.is_ok());
}
