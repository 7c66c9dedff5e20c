//! LLM API formats: recognising them from a request, and reading their
//! requests, stream events and whole responses.

use llmslo_schema::LlmCall;

use super::json::{self, RequestFields};
use super::{EventFacts, anthropic, gemini, ollama, openai, responses};
use crate::ProviderRule;

/// The wire format of an LLM API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    OpenAiChat,
    OpenAiCompletions,
    OpenAiResponses,
    OpenAiEmbeddings,
    AnthropicMessages,
    /// `:generateContent` or, with `streaming`, `:streamGenerateContent`.
    GeminiGenerateContent {
        streaming: bool,
    },
    OllamaChat,
    OllamaGenerate,
}

/// Framing of a streaming response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    Sse,
    Ndjson,
}

impl ApiFormat {
    /// API name reported in `LlmCall::api`.
    pub fn api(self) -> &'static str {
        match self {
            ApiFormat::OpenAiChat => "chat.completions",
            ApiFormat::OpenAiCompletions => "completions",
            ApiFormat::OpenAiResponses => "responses",
            ApiFormat::OpenAiEmbeddings => "embeddings",
            ApiFormat::AnthropicMessages => "messages",
            ApiFormat::GeminiGenerateContent { streaming: false } => "generate_content",
            ApiFormat::GeminiGenerateContent { streaming: true } => "stream_generate_content",
            ApiFormat::OllamaChat => "ollama.chat",
            ApiFormat::OllamaGenerate => "ollama.generate",
        }
    }

    /// OpenTelemetry `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            ApiFormat::OpenAiChat
            | ApiFormat::OpenAiResponses
            | ApiFormat::AnthropicMessages
            | ApiFormat::OllamaChat => "chat",
            ApiFormat::OpenAiCompletions | ApiFormat::OllamaGenerate => "text_completion",
            ApiFormat::OpenAiEmbeddings => "embeddings",
            ApiFormat::GeminiGenerateContent { .. } => "generate_content",
        }
    }

    /// Framing of a streaming response, chosen from its media type:
    /// `text/event-stream` for SSE, `application/x-ndjson` for Ollama.
    pub fn stream_framing(self, content_type: Option<&str>) -> Option<StreamFraming> {
        match content_type? {
            "text/event-stream" => Some(StreamFraming::Sse),
            "application/x-ndjson" | "application/jsonl" => Some(StreamFraming::Ndjson),
            // Ollama streams with application/x-ndjson, but some proxies
            // relabel it, so its streams are read line by line regardless.
            "application/json" if self.is_ollama() => Some(StreamFraming::Ndjson),
            _ => None,
        }
    }

    fn is_ollama(self) -> bool {
        matches!(self, ApiFormat::OllamaChat | ApiFormat::OllamaGenerate)
    }

    /// Model named by the request path: the Gemini model, or the Azure
    /// OpenAI deployment, which Azure uses in place of a model name.
    pub fn model_of_path(self, path: &str) -> Option<String> {
        match self {
            ApiFormat::GeminiGenerateContent { .. } => gemini::model_of_path(path),
            _ => {
                let deployment = path.strip_prefix("/openai/deployments/")?;
                let name = deployment.split('/').next()?;
                (!name.is_empty()).then(|| json::label(name))
            }
        }
    }

    /// Reads `model` and `stream` from a request body into `call`.
    pub fn read_request(self, call: &mut LlmCall, body: &[u8]) {
        let Some(fields) = json::parse::<RequestFields>(body) else {
            return;
        };
        if let Some(model) = fields.model.as_deref().filter(|m| !m.is_empty()) {
            call.request_model = Some(json::label(model));
        }
        call.streaming = match self {
            ApiFormat::GeminiGenerateContent { streaming } => streaming,
            // Ollama streams unless the request sets "stream": false.
            ApiFormat::OllamaChat | ApiFormat::OllamaGenerate => fields.stream.unwrap_or(true),
            ApiFormat::OpenAiEmbeddings => false,
            _ => fields.stream.unwrap_or(false),
        };
    }

    /// Reads one stream event: an SSE event (`name` is its `event:` field)
    /// or an NDJSON line.
    pub fn read_event(self, call: &mut LlmCall, name: &str, data: &[u8]) -> EventFacts {
        match self {
            ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions | ApiFormat::OpenAiEmbeddings => {
                openai::stream_event(call, data)
            }
            ApiFormat::OpenAiResponses => responses::stream_event(call, name, data),
            ApiFormat::AnthropicMessages => anthropic::stream_event(call, name, data),
            ApiFormat::GeminiGenerateContent { .. } => gemini::stream_event(call, data),
            ApiFormat::OllamaChat | ApiFormat::OllamaGenerate => ollama::stream_event(call, data),
        }
    }

    /// Reads a complete non-streaming response body, and returns what it
    /// carried as the facts of one event. Returns `None` when it is not
    /// JSON of the expected shape.
    pub fn read_whole_response(self, call: &mut LlmCall, body: &[u8]) -> Option<EventFacts> {
        match self {
            ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions | ApiFormat::OpenAiEmbeddings => {
                openai::whole_response(call, body)
            }
            ApiFormat::OpenAiResponses => responses::whole_response(call, body),
            ApiFormat::AnthropicMessages => anthropic::whole_response(call, body),
            ApiFormat::GeminiGenerateContent { .. } => gemini::whole_response(call, body),
            ApiFormat::OllamaChat | ApiFormat::OllamaGenerate => ollama::whole_response(call, body),
        }
    }
}

/// Destination of a request, from its head.
pub struct RequestTarget<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub method: &'a str,
    pub path: &'a str,
}

/// Names the provider and API format of a request, or `None` when it is not
/// an LLM API call. A matching user rule names the provider, and the path
/// always names the format.
pub fn identify(target: &RequestTarget<'_>, rules: &[ProviderRule]) -> Option<(String, ApiFormat)> {
    if !target.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let format = format_of_path(target.path)?;
    let rule = rules.iter().find(|rule| rule_matches(rule, target));
    let provider = match rule {
        Some(rule) => rule.provider.clone(),
        None => provider_of(target.host, target.path, format).to_owned(),
    };
    Some((provider, format))
}

fn format_of_path(path: &str) -> Option<ApiFormat> {
    let path = path.trim_end_matches('/');

    // Gemini methods follow the model after a colon.
    if let Some((_, method)) = path.rsplit_once(':') {
        return match method {
            "generateContent" => Some(ApiFormat::GeminiGenerateContent { streaming: false }),
            "streamGenerateContent" => Some(ApiFormat::GeminiGenerateContent { streaming: true }),
            _ => None,
        };
    }

    let last_two = {
        let mut parts = path.rsplit('/');
        let last = parts.next().unwrap_or_default();
        let before = parts.next().unwrap_or_default();
        (before, last)
    };
    match last_two {
        ("api", "chat") => Some(ApiFormat::OllamaChat),
        ("api", "generate") => Some(ApiFormat::OllamaGenerate),
        ("chat", "completions") => Some(ApiFormat::OpenAiChat),
        (_, "completions") => Some(ApiFormat::OpenAiCompletions),
        (_, "responses") => Some(ApiFormat::OpenAiResponses),
        (_, "embeddings") => Some(ApiFormat::OpenAiEmbeddings),
        (_, "messages") => Some(ApiFormat::AnthropicMessages),
        _ => None,
    }
}

fn provider_of(host: Option<&str>, path: &str, format: ApiFormat) -> &'static str {
    let host = host.unwrap_or_default();
    match format {
        ApiFormat::OpenAiChat
        | ApiFormat::OpenAiCompletions
        | ApiFormat::OpenAiResponses
        | ApiFormat::OpenAiEmbeddings => {
            if host == "api.openai.com" {
                "openai"
            } else if host.ends_with(".openai.azure.com")
                || host.ends_with(".cognitiveservices.azure.com")
                || path.starts_with("/openai/deployments/")
                || path.starts_with("/openai/v1/")
            {
                "azure_openai"
            } else {
                "openai_compatible"
            }
        }
        ApiFormat::AnthropicMessages => "anthropic",
        ApiFormat::GeminiGenerateContent { .. } => "gemini",
        ApiFormat::OllamaChat | ApiFormat::OllamaGenerate => "ollama",
    }
}

fn rule_matches(rule: &ProviderRule, target: &RequestTarget<'_>) -> bool {
    let host_matches = target
        .host
        .is_some_and(|host| host.eq_ignore_ascii_case(&rule.host));
    let port_matches = rule.port.is_none() || rule.port == target.port;
    host_matches && port_matches && target.path.starts_with(&rule.path_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(host: &'a str, path: &'a str) -> RequestTarget<'a> {
        RequestTarget {
            host: Some(host),
            port: Some(443),
            method: "POST",
            path,
        }
    }

    #[test]
    fn providers_and_formats_by_host_and_path() {
        let cases = [
            (
                "api.openai.com",
                "/v1/chat/completions",
                "openai",
                ApiFormat::OpenAiChat,
            ),
            (
                "api.openai.com",
                "/v1/completions",
                "openai",
                ApiFormat::OpenAiCompletions,
            ),
            (
                "api.openai.com",
                "/v1/responses",
                "openai",
                ApiFormat::OpenAiResponses,
            ),
            (
                "api.openai.com",
                "/v1/embeddings",
                "openai",
                ApiFormat::OpenAiEmbeddings,
            ),
            (
                "res.openai.azure.com",
                "/openai/deployments/gpt4o/chat/completions",
                "azure_openai",
                ApiFormat::OpenAiChat,
            ),
            (
                "res.openai.azure.com",
                "/openai/deployments/emb/embeddings",
                "azure_openai",
                ApiFormat::OpenAiEmbeddings,
            ),
            (
                "vllm.internal",
                "/v1/chat/completions",
                "openai_compatible",
                ApiFormat::OpenAiChat,
            ),
            (
                "litellm",
                "/chat/completions",
                "openai_compatible",
                ApiFormat::OpenAiChat,
            ),
            (
                "api.anthropic.com",
                "/v1/messages",
                "anthropic",
                ApiFormat::AnthropicMessages,
            ),
            (
                "generativelanguage.googleapis.com",
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                "gemini",
                ApiFormat::GeminiGenerateContent { streaming: true },
            ),
            (
                "generativelanguage.googleapis.com",
                "/v1beta/models/gemini-2.0-flash:generateContent",
                "gemini",
                ApiFormat::GeminiGenerateContent { streaming: false },
            ),
            ("localhost", "/api/chat", "ollama", ApiFormat::OllamaChat),
            (
                "localhost",
                "/api/generate",
                "ollama",
                ApiFormat::OllamaGenerate,
            ),
        ];
        for (host, path, provider, format) in cases {
            let (found_provider, found_format) = identify(&target(host, path), &[]).expect(path);
            assert_eq!(found_provider, provider, "{host}{path}");
            assert_eq!(found_format, format, "{host}{path}");
        }
    }

    #[test]
    fn models_from_paths() {
        let gemini = ApiFormat::GeminiGenerateContent { streaming: true };
        assert_eq!(
            gemini
                .model_of_path("/v1beta/models/gemini-2.0-flash:streamGenerateContent")
                .as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            ApiFormat::OpenAiChat
                .model_of_path("/openai/deployments/gpt-4o-prod/chat/completions")
                .as_deref(),
            Some("gpt-4o-prod")
        );
        assert_eq!(
            ApiFormat::OpenAiChat.model_of_path("/v1/chat/completions"),
            None
        );
    }

    #[test]
    fn other_paths_are_not_llm_calls() {
        for path in [
            "/v1/models",
            "/v1/messages/count_tokens",
            "/v1beta/models/gemini-2.0-flash:countTokens",
            "/api/tags",
            "/",
        ] {
            assert!(identify(&target("api.test", path), &[]).is_none(), "{path}");
        }
    }

    #[test]
    fn get_requests_are_not_llm_calls() {
        let mut request = target("api.openai.com", "/v1/chat/completions");
        request.method = "GET";
        assert!(identify(&request, &[]).is_none());
    }

    #[test]
    fn user_rule_names_provider() {
        let rules = [ProviderRule {
            provider: "gateway".to_owned(),
            host: "llm.corp.test".to_owned(),
            port: Some(443),
            path_prefix: "/v1/".to_owned(),
        }];
        let (provider, _) =
            identify(&target("llm.corp.test", "/v1/chat/completions"), &rules).unwrap();
        assert_eq!(provider, "gateway");
        let (provider, _) =
            identify(&target("other.test", "/v1/chat/completions"), &rules).unwrap();
        assert_eq!(provider, "openai_compatible");
        let mut other_port = target("llm.corp.test", "/v1/chat/completions");
        other_port.port = Some(8443);
        let (provider, _) = identify(&other_port, &rules).unwrap();
        assert_eq!(provider, "openai_compatible");
    }
}
