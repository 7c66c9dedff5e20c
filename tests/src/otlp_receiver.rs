//! An OTLP receiver on loopback for the export tests: OTLP/gRPC (tonic)
//! and OTLP/HTTP with protobuf bodies (hyper), both decoding into the
//! official protobuf types of the `opentelemetry-proto` crate.
//!
//! It keeps every request with the transport it came over and the
//! request headers, so tests can check spans, metrics and headers field
//! by field.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
    metrics::v1::Metric,
    trace::v1::Span,
};
use prost::Message as _;
use tokio::sync::oneshot;

/// Transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// One export request and how it arrived.
#[derive(Debug, Clone)]
pub struct Received<T> {
    pub transport: Transport,
    /// Request headers (gRPC metadata), lowercase names.
    pub headers: HashMap<String, String>,
    pub request: T,
}

#[derive(Default)]
struct Store {
    traces: Vec<Received<ExportTraceServiceRequest>>,
    metrics: Vec<Received<ExportMetricsServiceRequest>>,
}

type Shared = Arc<Mutex<Store>>;

/// A span with its resource and scope, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub transport: Transport,
    pub resource: HashMap<String, AnyValue>,
    pub scope_name: String,
    pub span: Span,
}

impl ReceivedSpan {
    /// Returns the span attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.span.attributes, key)
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            any_value::Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }

    pub fn double(&self, key: &str) -> Option<f64> {
        match self.attribute(key)? {
            any_value::Value::DoubleValue(value) => Some(*value),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.attribute(key)? {
            any_value::Value::BoolValue(value) => Some(*value),
            _ => None,
        }
    }

    pub fn resource_string(&self, key: &str) -> Option<&str> {
        match self.resource.get(key)?.value.as_ref()? {
            any_value::Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

/// A metric with its resource, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    pub transport: Transport,
    pub resource: HashMap<String, AnyValue>,
    pub scope_name: String,
    pub metric: Metric,
}

/// Returns the attribute `key` of an OTLP attribute list.
pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Traces(Shared);
struct Metrics(Shared);

fn metadata_map(metadata: &tonic::metadata::MetadataMap) -> HashMap<String, String> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = metadata_map(request.metadata());
        self.0.lock().unwrap().traces.push(Received {
            transport: Transport::Grpc,
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = metadata_map(request.metadata());
        self.0.lock().unwrap().metrics.push(Received {
            transport: Transport::Grpc,
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Handles `POST /v1/traces` and `POST /v1/metrics` with
/// `application/x-protobuf` bodies, as the OTLP/HTTP specification asks.
async fn handle_http(
    store: Shared,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(response)
    };
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let path = request.uri().path().to_owned();
    if request.method() != hyper::Method::POST || content_type != "application/x-protobuf" {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    }
    let Ok(body) = request.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    let body = body.to_bytes();
    match path.as_str() {
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(decoded) => {
                store.lock().unwrap().traces.push(Received {
                    transport: Transport::Http,
                    headers,
                    request: decoded,
                });
                reply(
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
        },
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(decoded) => {
                store.lock().unwrap().metrics.push(Received {
                    transport: Transport::Http,
                    headers,
                    request: decoded,
                });
                reply(
                    StatusCode::OK,
                    ExportMetricsServiceResponse::default().encode_to_vec(),
                )
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
        },
        _ => reply(StatusCode::NOT_FOUND, Vec::new()),
    }
}

/// The receiver, running on its own thread until dropped.
pub struct OtlpReceiver {
    pub grpc_port: u16,
    pub http_port: u16,
    store: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Starts both endpoints on free loopback ports.
    pub fn start() -> Self {
        let store: Shared = Arc::default();
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let grpc_port = grpc.local_addr().unwrap().port();
        let http_port = http.local_addr().unwrap().port();
        grpc.set_nonblocking(true).unwrap();
        http.set_nonblocking(true).unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();

        let thread_store = store.clone();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime starts");
            runtime.block_on(serve(thread_store, grpc, http, stopped));
        });
        Self {
            grpc_port,
            http_port,
            store,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn trace_requests(&self) -> Vec<Received<ExportTraceServiceRequest>> {
        self.store.lock().unwrap().traces.clone()
    }

    pub fn metric_requests(&self) -> Vec<Received<ExportMetricsServiceRequest>> {
        self.store.lock().unwrap().metrics.clone()
    }

    /// Every span received so far, with its resource and scope.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut spans = Vec::new();
        for received in self.trace_requests() {
            for resource_spans in received.request.resource_spans {
                let resource = attribute_map(
                    resource_spans
                        .resource
                        .map(|r| r.attributes)
                        .unwrap_or_default(),
                );
                for scope_spans in resource_spans.scope_spans {
                    let scope_name = scope_spans.scope.map(|s| s.name).unwrap_or_default();
                    for span in scope_spans.spans {
                        spans.push(ReceivedSpan {
                            transport: received.transport,
                            resource: resource.clone(),
                            scope_name: scope_name.clone(),
                            span,
                        });
                    }
                }
            }
        }
        spans
    }

    /// Every metric received so far, with its resource and scope.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        let mut metrics = Vec::new();
        for received in self.metric_requests() {
            for resource_metrics in received.request.resource_metrics {
                let resource = attribute_map(
                    resource_metrics
                        .resource
                        .map(|r| r.attributes)
                        .unwrap_or_default(),
                );
                for scope_metrics in resource_metrics.scope_metrics {
                    let scope_name = scope_metrics.scope.map(|s| s.name).unwrap_or_default();
                    for metric in scope_metrics.metrics {
                        metrics.push(ReceivedMetric {
                            transport: received.transport,
                            resource: resource.clone(),
                            scope_name: scope_name.clone(),
                            metric,
                        });
                    }
                }
            }
        }
        metrics
    }

    /// Waits until at least `count` spans arrived.
    pub fn wait_for_spans(&self, count: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn attribute_map(attributes: Vec<KeyValue>) -> HashMap<String, AnyValue> {
    attributes
        .into_iter()
        .filter_map(|kv| Some((kv.key, kv.value?)))
        .collect()
}

async fn serve(
    store: Shared,
    grpc: std::net::TcpListener,
    http: std::net::TcpListener,
    stopped: oneshot::Receiver<()>,
) {
    let grpc = tokio::net::TcpListener::from_std(grpc).expect("the gRPC listener registers");
    let http = tokio::net::TcpListener::from_std(http).expect("the HTTP listener registers");
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();

    let grpc_server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Traces(store.clone())))
        .add_service(MetricsServiceServer::new(Metrics(store.clone())))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(grpc), async {
            let _ = grpc_stopped.await;
        });
    let grpc_task = tokio::spawn(grpc_server);

    let http_task = tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = http.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handle_http(store.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let _ = stopped.await;
    let _ = stop_grpc.send(());
    http_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
}

/// Returns a loopback address where nothing listens, for failure tests.
pub fn closed_port_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}
