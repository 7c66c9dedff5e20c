//! Classification of outbound calls into components (provider,
//! embeddings, retrieval, guardrail, DNS, other), with user rules first,
//! and the names of the components that are not calls: connection
//! handshakes and the service's own time.

use llmslo_schema::{Exchange, Protocol};

/// LLM calls that generate text, images or tool calls.
pub const PROVIDER: &str = "provider";
/// LLM embeddings API calls.
pub const EMBEDDINGS: &str = "embeddings";
/// Database, cache and vector-database queries.
pub const RETRIEVAL: &str = "retrieval";
/// Policy engines, moderation and guardrail services.
pub const GUARDRAIL: &str = "guardrail";
pub const DNS: &str = "dns";
/// TCP handshakes of outbound connections.
pub const CONNECT: &str = "connect";
/// Waits on TCP loss recovery: handshakes that waited for the service to
/// retransmit its SYN, and the parts of calls that waited for lost data
/// to be sent again, by the service or by its peer.
pub const NETWORK: &str = "network";
/// Outbound calls that match no other component.
pub const OTHER: &str = "other";
/// Run-queue waits of the service's threads inside its own time.
pub const RUN_QUEUE: &str = "run_queue";
/// The part of those waits estimated as CFS throttling of the container.
pub const CPU_THROTTLING: &str = "cpu_throttling";
/// The rest of the service's own time: on-CPU work and waits the probe
/// does not see.
pub const SERVICE: &str = "service";

/// Components that are parts of the service's own time rather than
/// outbound calls.
pub const OWN_TIME: [&str; 3] = [RUN_QUEUE, CPU_THROTTLING, SERVICE];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentRuleError {
    #[error(
        "invalid --component rule {rule:?}: expected COMPONENT=HOST[:PORT][/PATH-PREFIX], \
         for example guardrail=policy.internal:8181/v1/data"
    )]
    Syntax { rule: String },
    #[error(
        "invalid --component rule {rule:?}: component name {name:?} may contain only \
         lowercase letters, digits, '_' and '-'"
    )]
    Name { rule: String, name: String },
    #[error(
        "invalid --component rule {rule:?}: {name:?} is the service's own time, which \
         no outbound call can belong to; pick another name"
    )]
    Reserved { rule: String, name: String },
    #[error("invalid --component rule {rule:?}: port {port:?} is not a number from 1 to 65535")]
    Port { rule: String, port: String },
}

/// A user rule that assigns matching outbound calls to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRule {
    pub component: String,
    /// Host name or IP address; `*` matches any host and `*.example.com`
    /// matches its subdomains.
    pub host: String,
    pub port: Option<u16>,
    /// Path prefix of HTTP calls; empty matches every call.
    pub path_prefix: String,
}

impl ComponentRule {
    /// Parses `COMPONENT=HOST[:PORT][/PATH-PREFIX]`.
    ///
    /// # Errors
    ///
    /// [`ComponentRuleError`] naming the rule and the expected form.
    pub fn parse(rule: &str) -> Result<Self, ComponentRuleError> {
        let syntax = || ComponentRuleError::Syntax {
            rule: rule.to_owned(),
        };
        let (name, target) = rule.split_once('=').ok_or_else(syntax)?;
        let name = name.trim();
        let target = target.trim();
        if name.is_empty() || target.is_empty() {
            return Err(syntax());
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(ComponentRuleError::Name {
                rule: rule.to_owned(),
                name: name.to_owned(),
            });
        }
        if OWN_TIME.contains(&name) {
            return Err(ComponentRuleError::Reserved {
                rule: rule.to_owned(),
                name: name.to_owned(),
            });
        }

        let (authority, path_prefix) = match target.find('/') {
            Some(slash) => (&target[..slash], target[slash..].to_owned()),
            None => (target, String::new()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                let parsed = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ComponentRuleError::Port {
                        rule: rule.to_owned(),
                        port: port.to_owned(),
                    })?;
                (host, Some(parsed))
            }
            _ => (authority, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(syntax());
        }
        Ok(Self {
            component: name.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            path_prefix,
        })
    }

    fn matches(&self, endpoint: &Endpoint<'_>) -> bool {
        let host_matches = if self.host == "*" {
            true
        } else if let Some(suffix) = self.host.strip_prefix("*.") {
            endpoint.hosts().any(|host| {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            })
        } else {
            endpoint.hosts().any(|host| host == self.host)
        };
        let port_matches = self.port.is_none() || self.port == endpoint.port;
        let path_matches = self.path_prefix.is_empty()
            || endpoint
                .path
                .is_some_and(|path| path.starts_with(&self.path_prefix));
        host_matches && port_matches && path_matches
    }
}

/// Destination of an outbound call, as far as the probe saw it.
struct Endpoint<'a> {
    server_name: Option<String>,
    peer_host: Option<String>,
    port: Option<u16>,
    path: Option<&'a str>,
}

impl Endpoint<'_> {
    fn hosts(&self) -> impl Iterator<Item = &str> {
        self.server_name
            .as_deref()
            .into_iter()
            .chain(self.peer_host.as_deref())
    }
}

fn endpoint_of(exchange: &Exchange) -> Endpoint<'_> {
    let (peer_host, peer_port) = exchange
        .connection
        .peer
        .as_deref()
        .map(split_host_port)
        .unwrap_or((None, None));
    let (server_name, server_port) = exchange
        .connection
        .server_name
        .as_deref()
        .map(split_host_port)
        .unwrap_or((None, None));
    Endpoint {
        server_name: server_name.map(|h| h.to_ascii_lowercase()),
        peer_host,
        port: peer_port.or(server_port),
        path: exchange.http.as_ref().map(|http| http.path.as_str()),
    }
}

/// Splits `host:port`, `[v6]:port`, or a bare host.
pub fn split_host_port(text: &str) -> (Option<String>, Option<u16>) {
    if let Some((host, tail)) = text.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (Some(host.to_owned()), port);
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (Some(host.to_owned()), Some(port)),
            Err(_) => (Some(text.to_owned()), None),
        },
        _ => (Some(text.to_owned()), None),
    }
}

/// Returns the component of an outbound exchange.
///
/// The first matching user rule wins. Without one, DNS queries are `dns`.
/// PostgreSQL and Redis calls and HTTP calls to known vector-database APIs
/// are `retrieval`, and moderation and policy APIs are `guardrail`. LLM
/// calls are `embeddings` for the embeddings operation and `provider`
/// otherwise. Everything else is `other`.
pub fn classify(exchange: &Exchange, rules: &[ComponentRule]) -> String {
    let endpoint = endpoint_of(exchange);
    if let Some(rule) = rules.iter().find(|rule| rule.matches(&endpoint)) {
        return rule.component.clone();
    }

    if exchange.dns.is_some() || exchange.protocol == Protocol::Dns {
        return DNS.to_owned();
    }
    if exchange.db.is_some() || matches!(exchange.protocol, Protocol::Postgres | Protocol::Redis) {
        return RETRIEVAL.to_owned();
    }
    if let Some(path) = endpoint.path
        && is_guardrail_path(path, endpoint.port, endpoint.server_name.as_deref())
    {
        return GUARDRAIL.to_owned();
    }
    if let Some(llm) = &exchange.llm {
        return if llm.operation == "embeddings" || llm.api.contains("embed") {
            EMBEDDINGS.to_owned()
        } else {
            PROVIDER.to_owned()
        };
    }
    if let Some(path) = endpoint.path
        && is_vector_search_path(path, endpoint.server_name.as_deref())
    {
        return RETRIEVAL.to_owned();
    }
    OTHER.to_owned()
}

/// Query and search endpoints of vector databases and search engines.
fn is_vector_search_path(path: &str, server_name: Option<&str>) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let last = segments.last().copied().unwrap_or_default();

    // Qdrant: /collections/NAME/points/{search,query,recommend,...}.
    let qdrant = segments.get(1) == Some(&"collections")
        && segments.get(3) == Some(&"points")
        && matches!(
            segments.get(4).copied(),
            Some("search" | "query" | "recommend" | "discover" | "scroll")
        );
    // Weaviate: GraphQL queries and object reads.
    let weaviate = path.starts_with("/v1/graphql") || path.starts_with("/v1/objects");
    // Elasticsearch and OpenSearch: /_search, /INDEX/_search, /_knn_search.
    let elasticsearch = matches!(last, "_search" | "_knn_search" | "_msearch");
    // Chroma: /api/v1/collections/ID/query and the v2 tenant paths.
    let chroma = (path.starts_with("/api/v1/") || path.starts_with("/api/v2/"))
        && segments.contains(&"collections")
        && matches!(last, "query" | "get");
    // Pinecone data plane: POST /query on INDEX-PROJECT.svc.*.pinecone.io.
    let pinecone = server_name.is_some_and(|host| host.ends_with(".pinecone.io"))
        && matches!(path, "/query" | "/vectors/fetch");
    qdrant || weaviate || elasticsearch || chroma || pinecone
}

/// Policy-engine and moderation endpoints.
fn is_guardrail_path(path: &str, port: Option<u16>, server_name: Option<&str>) -> bool {
    // Open Policy Agent's Data API, on any port, and OPA's default port.
    let opa = path.starts_with("/v1/data") || (port == Some(8181) && path.starts_with("/v0/data"));
    // OpenAI's moderation API.
    let moderation = path.ends_with("/moderations");
    // Azure AI Content Safety.
    let content_safety = path.starts_with("/contentsafety/");
    // Lakera Guard.
    let lakera = server_name.is_some_and(|host| host == "api.lakera.ai");
    opa || moderation || content_safety || lakera
}

#[cfg(test)]
mod tests {
    use llmslo_schema::{Connection, DbCall, DnsQuery, HttpExchange, LlmCall};

    use super::*;

    fn http(server: &str, peer: &str, path: &str) -> Exchange {
        Exchange {
            connection: Connection {
                server_name: Some(server.into()),
                peer: Some(peer.into()),
                ..Connection::default()
            },
            http: Some(HttpExchange {
                method: "POST".into(),
                path: path.into(),
                ..HttpExchange::default()
            }),
            ..Exchange::default()
        }
    }

    fn llm(operation: &str) -> LlmCall {
        LlmCall {
            provider: "openai".into(),
            api: "chat.completions".into(),
            operation: operation.into(),
            ..LlmCall::default()
        }
    }

    #[test]
    fn llm_calls_are_provider_or_embeddings() {
        let mut chat = http("api.openai.com", "1.2.3.4:443", "/v1/chat/completions");
        chat.llm = Some(llm("chat"));
        assert_eq!(classify(&chat, &[]), PROVIDER);

        let mut embed = http("api.openai.com", "1.2.3.4:443", "/v1/embeddings");
        embed.llm = Some(LlmCall {
            api: "embeddings".into(),
            ..llm("embeddings")
        });
        assert_eq!(classify(&embed, &[]), EMBEDDINGS);
    }

    #[test]
    fn databases_and_dns_are_recognised() {
        let pg = Exchange {
            protocol: Protocol::Postgres,
            db: Some(DbCall {
                system: "postgresql".into(),
                operation: "SELECT".into(),
            }),
            ..Exchange::default()
        };
        assert_eq!(classify(&pg, &[]), RETRIEVAL);
        let dns = Exchange {
            protocol: Protocol::Dns,
            dns: Some(DnsQuery::default()),
            ..Exchange::default()
        };
        assert_eq!(classify(&dns, &[]), DNS);
    }

    #[test]
    fn vector_database_paths_are_retrieval() {
        let cases = [
            ("qdrant", "/collections/docs/points/search"),
            ("qdrant", "/collections/docs/points/query"),
            ("weaviate", "/v1/graphql"),
            ("es", "/docs/_search"),
            ("es", "/_knn_search"),
            ("chroma", "/api/v1/collections/abc/query"),
            (
                "chroma",
                "/api/v2/tenants/t/databases/d/collections/c/query",
            ),
            ("idx-1.svc.us-east1-gcp.pinecone.io", "/query"),
        ];
        for (server, path) in cases {
            assert_eq!(
                classify(&http(server, "10.0.0.1:80", path), &[]),
                RETRIEVAL,
                "{path}"
            );
        }
        assert_eq!(classify(&http("api", "10.0.0.1:80", "/query"), &[]), OTHER);
    }

    #[test]
    fn policy_paths_are_guardrail() {
        assert_eq!(
            classify(&http("opa", "10.0.0.2:8181", "/v1/data/authz/allow"), &[]),
            GUARDRAIL
        );
        let mut moderation = http("api.openai.com", "1.2.3.4:443", "/v1/moderations");
        moderation.llm = Some(llm("chat"));
        assert_eq!(classify(&moderation, &[]), GUARDRAIL);
    }

    #[test]
    fn user_rule_overrides_default() {
        let rule = ComponentRule::parse("guardrail=llm-guard.internal:9000/v1/chat").unwrap();
        let mut call = http(
            "llm-guard.internal",
            "10.0.0.3:9000",
            "/v1/chat/completions",
        );
        call.llm = Some(llm("chat"));
        assert_eq!(classify(&call, std::slice::from_ref(&rule)), GUARDRAIL);
        let other_port = http(
            "llm-guard.internal",
            "10.0.0.3:9001",
            "/v1/chat/completions",
        );
        assert_eq!(classify(&other_port, &[rule]), OTHER);
    }

    #[test]
    fn rule_can_name_a_new_component() {
        let rule = ComponentRule::parse("billing=*.billing.svc").unwrap();
        let call = http("api.billing.svc", "10.0.0.4:80", "/charge");
        assert_eq!(classify(&call, std::slice::from_ref(&rule)), "billing");
        let unrelated = http("billing.svc", "10.0.0.4:80", "/charge");
        assert_eq!(classify(&unrelated, &[rule]), OTHER);
    }

    #[test]
    fn rule_matches_peer_address() {
        let rule = ComponentRule::parse("retrieval=127.0.0.1:6333").unwrap();
        let mut call = http("localhost", "127.0.0.1:6333", "/anything");
        call.connection.server_name = None;
        assert_eq!(classify(&call, &[rule]), RETRIEVAL);
    }

    #[test]
    fn rule_parsing_accepts_forms() {
        let rule = ComponentRule::parse("guardrail=policy.internal:8181/v1/data").unwrap();
        assert_eq!(rule.host, "policy.internal");
        assert_eq!(rule.port, Some(8181));
        assert_eq!(rule.path_prefix, "/v1/data");
        let rule = ComponentRule::parse("retrieval=[::1]:5432").unwrap();
        assert_eq!(rule.host, "::1");
        assert_eq!(rule.port, Some(5432));
        let rule = ComponentRule::parse("other=Example.COM").unwrap();
        assert_eq!(rule.host, "example.com");
        assert_eq!(rule.port, None);
    }

    #[test]
    fn rule_parsing_rejects_bad_input() {
        let message = ComponentRule::parse("guardrail").unwrap_err().to_string();
        assert!(message.contains("COMPONENT=HOST"), "{message}");
        assert!(matches!(
            ComponentRule::parse("Guard Rail=x").unwrap_err(),
            ComponentRuleError::Name { .. }
        ));
        assert!(matches!(
            ComponentRule::parse("service=x").unwrap_err(),
            ComponentRuleError::Reserved { .. }
        ));
        assert!(matches!(
            ComponentRule::parse("guardrail=x:http").unwrap_err(),
            ComponentRuleError::Port { .. }
        ));
        assert!(matches!(
            ComponentRule::parse("guardrail=:80").unwrap_err(),
            ComponentRuleError::Syntax { .. }
        ));
    }
}
