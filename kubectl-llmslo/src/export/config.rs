//! The `--otlp-*` flags checked and resolved into one export configuration:
//! the transport, the URLs, TLS and headers.

use std::{fmt, path::PathBuf, time::Duration};

use crate::cli::{DiagnoseArgs, OtlpMode, OtlpProtocol};

/// Collector port of OTLP/gRPC; an endpoint on it without a scheme or
/// `--otlp-protocol` is taken as gRPC.
const GRPC_PORT: u16 = 4317;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "invalid --otlp-endpoint {endpoint:?}: {reason}; use a URL such as \
         http://otel-collector:4318 or grpc://otel-collector:4317"
    )]
    Endpoint { endpoint: String, reason: String },
    #[error(
        "invalid --otlp-header {header:?}: {reason}; write KEY=VALUE, for example \
         authorization=Bearer TOKEN"
    )]
    Header {
        header: String,
        reason: &'static str,
    },
    #[error(
        "--otlp-insecure contradicts the TLS scheme of --otlp-endpoint {endpoint:?}; \
         drop the flag, or write the endpoint with http:// or grpc://"
    )]
    InsecureWithTls { endpoint: String },
    #[error(
        "--otlp-ca is set but --otlp-endpoint {endpoint:?} does not use TLS; use https:// \
         or grpcs://, or drop --otlp-ca"
    )]
    CaWithoutTls { endpoint: String },
    #[error("failed to read the --otlp-ca file {path}: {source}")]
    CaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the --otlp-ca file {path} holds no PEM certificate; give the CA certificate that \
         signs the collector's certificate"
    )]
    CaEmpty { path: PathBuf },
}

/// A resolved OTLP export configuration.
#[derive(Clone)]
pub struct OtlpConfig {
    pub protocol: OtlpProtocol,
    /// The endpoint as given, for messages.
    pub endpoint: String,
    /// `scheme://host[:port]` with the gRPC URL scheme `http` or `https`.
    pub grpc_url: String,
    /// OTLP/HTTP URLs of the two signals.
    pub traces_url: String,
    pub metrics_url: String,
    pub tls: bool,
    /// PEM text of `--otlp-ca`.
    pub ca_pem: Option<Vec<u8>>,
    /// Header names are lowercase; values are secrets and never logged.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub mode: OtlpMode,
}

impl fmt::Debug for OtlpConfig {
    /// Leaves out header values, which often carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("ca", &self.ca_pem.is_some())
            .field("header_names", &header_names)
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .finish()
    }
}

impl OtlpConfig {
    /// Resolves the `--otlp-*` flags; `None` without `--otlp-endpoint`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the flag and its value, for an endpoint that
    /// is not a URL, a header without `=`, contradicting TLS flags, or an
    /// unreadable CA file.
    pub fn from_args(args: &DiagnoseArgs) -> Result<Option<Self>, ConfigError> {
        let Some(endpoint) = &args.otlp_endpoint else {
            return Ok(None);
        };
        let mut config = resolve(
            endpoint,
            args.otlp_protocol,
            args.otlp_insecure,
            &args.otlp_headers,
        )?;
        config.timeout = args.otlp_timeout;
        config.mode = args.otlp_mode;

        if let Some(path) = &args.otlp_ca {
            if !config.tls {
                return Err(ConfigError::CaWithoutTls {
                    endpoint: endpoint.clone(),
                });
            }
            let pem = std::fs::read(path).map_err(|source| ConfigError::CaRead {
                path: path.clone(),
                source,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::CaEmpty { path: path.clone() });
            }
            config.ca_pem = Some(pem);
        }
        Ok(Some(config))
    }

    /// Returns the protocol's name as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Resolves the endpoint, protocol, TLS and headers.
pub(super) fn resolve(
    endpoint: &str,
    protocol: Option<OtlpProtocol>,
    insecure: bool,
    headers: &[String],
) -> Result<OtlpConfig, ConfigError> {
    let invalid = |reason: &str| ConfigError::Endpoint {
        endpoint: without_userinfo(endpoint),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, trimmed),
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(invalid("the host is missing"));
    }
    if authority.contains('@') {
        return Err(invalid(
            "credentials in the URL are not accepted; send them with --otlp-header",
        ));
    }
    if path.contains('?') || path.contains('#') {
        return Err(invalid("a query or fragment is not accepted"));
    }
    let port = port_of(authority).map_err(invalid)?;

    let scheme_tls = match scheme.as_deref() {
        Some("http" | "grpc") => Some(false),
        Some("https" | "grpcs") => Some(true),
        None => None,
        Some(_) => return Err(invalid("the scheme must be http, https, grpc or grpcs")),
    };
    if insecure && scheme_tls == Some(true) {
        return Err(ConfigError::InsecureWithTls {
            endpoint: endpoint.to_owned(),
        });
    }
    let tls = scheme_tls.unwrap_or(!insecure);

    let protocol = protocol.unwrap_or(match (scheme.as_deref(), port) {
        (Some("grpc" | "grpcs"), _) | (_, Some(GRPC_PORT)) => OtlpProtocol::Grpc,
        _ => OtlpProtocol::HttpProtobuf,
    });
    if protocol == OtlpProtocol::Grpc && !path.trim_end_matches('/').is_empty() {
        return Err(invalid("an OTLP/gRPC endpoint takes no path"));
    }

    let base = format!(
        "{}://{authority}{}",
        if tls { "https" } else { "http" },
        path.trim_end_matches('/')
    );
    Ok(OtlpConfig {
        protocol,
        endpoint: endpoint.to_owned(),
        grpc_url: format!("{}://{authority}", if tls { "https" } else { "http" }),
        traces_url: format!("{base}/v1/traces"),
        metrics_url: format!("{base}/v1/metrics"),
        tls,
        ca_pem: None,
        headers: headers
            .iter()
            .map(|header| parse_header(header))
            .collect::<Result<_, _>>()?,
        timeout: Duration::from_secs(10),
        mode: OtlpMode::default(),
    })
}

/// Replaces `user:password@` in a URL, so messages never show it.
fn without_userinfo(endpoint: &str) -> String {
    let (prefix, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), endpoint),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{prefix}<redacted>{}", &rest[at..]),
        None => endpoint.to_owned(),
    }
}

/// Returns the port of `host[:port]` or `[ip6][:port]`, if given.
fn port_of(authority: &str) -> Result<Option<u16>, &'static str> {
    let after_host = match authority.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .map(|(_, after)| after)
            .ok_or("an IPv6 address lacks its closing ']'")?,
        None => authority.rfind(':').map_or("", |index| &authority[index..]),
    };
    match after_host.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&port| port > 0)
            .map(Some)
            .ok_or("the port is not a number from 1 to 65535"),
        None if after_host.is_empty() => Ok(None),
        None => Err("unexpected text after the IPv6 address"),
    }
}

/// Parses `KEY=VALUE`; gRPC metadata needs lowercase keys, and HTTP
/// header names are case-insensitive, so the key is lowercased.
fn parse_header(header: &str) -> Result<(String, String), ConfigError> {
    let invalid = |reason| ConfigError::Header {
        header: redact(header),
        reason,
    };
    let (key, value) = header.split_once('=').ok_or_else(|| invalid("no '='"))?;
    let key = key.trim();
    let value = value.trim();
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !key.bytes().all(token) {
        return Err(invalid("the key is not a valid header name"));
    }
    if value.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
        return Err(invalid("the value has control or non-ASCII characters"));
    }
    Ok((key.to_ascii_lowercase(), value.to_owned()))
}

/// Keeps the key of a header flag and hides its value in messages.
fn redact(header: &str) -> String {
    match header.split_once('=') {
        Some((key, _)) => format!("{key}=<redacted>"),
        None => "<redacted>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> OtlpConfig {
        resolve(endpoint, None, false, &[]).unwrap()
    }

    #[test]
    fn scheme_selects_protocol_and_tls() {
        let http = config("http://collector:4318");
        assert_eq!(http.protocol, OtlpProtocol::HttpProtobuf);
        assert!(!http.tls);
        assert_eq!(http.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(http.metrics_url, "http://collector:4318/v1/metrics");

        let grpc = config("grpc://collector:4317");
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
        assert!(!grpc.tls);
        assert_eq!(grpc.grpc_url, "http://collector:4317");

        let grpcs = config("grpcs://collector");
        assert_eq!(grpcs.protocol, OtlpProtocol::Grpc);
        assert!(grpcs.tls);
        assert_eq!(grpcs.grpc_url, "https://collector");

        let https = config("https://otlp.example.com/otlp/");
        assert!(https.tls);
        assert_eq!(https.traces_url, "https://otlp.example.com/otlp/v1/traces");
    }

    #[test]
    fn port_4317_means_grpc() {
        assert_eq!(config("http://collector:4317").protocol, OtlpProtocol::Grpc);
        assert_eq!(config("[::1]:4317").protocol, OtlpProtocol::Grpc);
        let explicit = resolve(
            "http://collector:4317",
            Some(OtlpProtocol::HttpProtobuf),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(explicit.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn bare_endpoint_uses_tls_unless_insecure() {
        assert!(config("collector:4318").tls);
        let plain = resolve("collector:4318", None, true, &[]).unwrap();
        assert!(!plain.tls);
        assert_eq!(plain.traces_url, "http://collector:4318/v1/traces");
    }

    #[test]
    fn invalid_endpoints_are_rejected() {
        let cases = [
            ("http://", "the host is missing"),
            ("ftp://collector", "the scheme must be"),
            ("http://user:secret@collector:4318", "--otlp-header"),
            ("http://collector:99999", "from 1 to 65535"),
            ("http://collector:4318/?key=v", "query"),
            ("grpc://collector:4317/v1", "takes no path"),
            ("http://[::1:4318", "closing ']'"),
        ];
        for (endpoint, expected) in cases {
            let message = resolve(endpoint, None, false, &[]).unwrap_err().to_string();
            assert!(message.contains(expected), "{endpoint}: {message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn insecure_contradicts_tls_scheme() {
        let error = resolve("https://collector", None, true, &[]).unwrap_err();
        assert!(matches!(error, ConfigError::InsecureWithTls { .. }));
    }

    #[test]
    fn headers_are_lowercased_and_checked() {
        let config = resolve(
            "http://c:4318",
            None,
            false,
            &[
                "Authorization=Bearer abc".to_owned(),
                "x-tenant = a".to_owned(),
            ],
        )
        .unwrap();
        assert_eq!(
            config.headers,
            [
                ("authorization".to_owned(), "Bearer abc".to_owned()),
                ("x-tenant".to_owned(), "a".to_owned())
            ]
        );
        for header in ["novalue", "=v", "bad key=v", "k=line\nbreak"] {
            let message = resolve("http://c:4318", None, false, &[header.to_owned()])
                .unwrap_err()
                .to_string();
            assert!(message.contains("invalid --otlp-header"), "{message}");
        }
    }

    #[test]
    fn header_values_stay_out_of_messages_and_debug() {
        let message = resolve("http://c", None, false, &["bad key=s3cret".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(!message.contains("s3cret"), "{message}");
        let config = resolve("http://c", None, false, &["k=s3cret".to_owned()]).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
