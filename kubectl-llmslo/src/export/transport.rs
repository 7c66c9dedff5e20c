//! OTLP exporters of `opentelemetry-otlp` for the configured transport:
//! tonic for gRPC, reqwest for HTTP/protobuf, both with rustls and ring.

use std::{collections::HashMap, sync::Arc};

use opentelemetry_otlp::{
    MetricExporter, Protocol, RetryPolicy, SpanExporter, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
    tonic_types::{
        metadata::MetadataMap,
        transport::{Certificate, ClientTlsConfig},
    },
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use super::{ExportError, config::OtlpConfig};
use crate::cli::OtlpProtocol;

/// Builds the span exporter. Build it inside the Tokio runtime: the
/// gRPC channel starts a task on it.
pub fn span_exporter(config: &OtlpConfig) -> Result<SpanExporter, ExportError> {
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => grpc(SpanExporter::builder().with_tonic(), config)?.build(),
        OtlpProtocol::HttpProtobuf => http(
            SpanExporter::builder().with_http(),
            &config.traces_url,
            config,
        )?
        .build(),
    };
    exporter.map_err(|source| ExportError::Build {
        signal: "traces",
        source,
    })
}

/// Builds the metric exporter, like [`span_exporter`].
pub fn metric_exporter(config: &OtlpConfig) -> Result<MetricExporter, ExportError> {
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => grpc(MetricExporter::builder().with_tonic(), config)?.build(),
        OtlpProtocol::HttpProtobuf => http(
            MetricExporter::builder().with_http(),
            &config.metrics_url,
            config,
        )?
        .build(),
    };
    exporter.map_err(|source| ExportError::Build {
        signal: "metrics",
        source,
    })
}

/// Sets up a gRPC exporter builder of either signal.
fn grpc<B>(builder: B, config: &OtlpConfig) -> Result<B, ExportError>
where
    B: WithExportConfig + WithTonicConfig,
{
    let builder = builder
        .with_endpoint(config.grpc_url.clone())
        .with_timeout(config.timeout)
        .with_retry_policy(retry_policy())
        .with_metadata(metadata(config)?);
    Ok(if config.tls {
        builder.with_tls_config(tonic_tls(config))
    } else {
        builder
    })
}

/// Sets up an HTTP/protobuf exporter builder of either signal, which
/// posts to `url`.
fn http<B>(builder: B, url: &str, config: &OtlpConfig) -> Result<B, ExportError>
where
    B: WithExportConfig + WithHttpConfig,
{
    Ok(builder
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(config.timeout)
        .with_retry_policy(retry_policy())
        .with_headers(http_headers(config))
        .with_http_client(http_client(config)?))
}

/// Allows one retry after a short pause, so a collector that restarts gets
/// a second chance and the export still ends within `--otlp-timeout`.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::recommended().with_max_retries(1)
}

fn metadata(config: &OtlpConfig) -> Result<MetadataMap, ExportError> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &config.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ExportError::Header { name: name.clone() })?;
        let value = http::HeaderValue::from_str(value).map_err(|_| ExportError::Header {
            name: name.to_string(),
        })?;
        headers.append(name, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

fn http_headers(config: &OtlpConfig) -> HashMap<String, String> {
    config.headers.iter().cloned().collect()
}

/// Trusts the system's CAs plus `--otlp-ca`.
fn tonic_tls(config: &OtlpConfig) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().with_native_roots();
    match &config.ca_pem {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls,
    }
}

/// Builds a reqwest client whose rustls uses ring, which needs no C
/// toolchain to cross-compile, and trusts the system's CAs plus
/// `--otlp-ca`.
fn http_client(config: &OtlpConfig) -> Result<reqwest::Client, ExportError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "a system CA certificate could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded the system CA certificates");
    if let Some(pem) = &config.ca_pem {
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| ExportError::Ca {
                reason: error.to_string(),
            })?;
            roots.add(certificate).map_err(|error| ExportError::Ca {
                reason: error.to_string(),
            })?;
        }
    }

    // NOTE: rustls 0.23.48 deprecates ring's provider because it lacks
    // post-quantum key exchange. aws-lc-rs has it but needs a C toolchain
    // for every krew target, and kube and tonic here use ring as well.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ExportError::Ca {
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();

    reqwest::Client::builder()
        .timeout(config.timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|error| ExportError::HttpClient {
            reason: error.to_string(),
        })
}
