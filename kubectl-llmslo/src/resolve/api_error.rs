//! API request failures, worded with the verb and resource that failed and
//! what to do about them.

use std::fmt;

/// One API request: what the RBAC rules must allow for it to succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    pub verb: &'static str,
    /// Resource, with its subresource and group as RBAC names them:
    /// `pods`, `pods/log`, `jobs.batch`, `deployments.apps`.
    pub resource: String,
    /// `None` for cluster-scoped resources and requests across namespaces.
    pub namespace: Option<String>,
}

impl ApiCall {
    pub fn new(verb: &'static str, resource: impl Into<String>, namespace: Option<&str>) -> Self {
        Self {
            verb,
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
        }
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(
                formatter,
                "{} {} in namespace {namespace:?}",
                self.verb, self.resource
            ),
            None => write!(formatter, "{} {} (cluster-wide)", self.verb, self.resource),
        }
    }
}

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the API server denied {call}: {message}; apply manifests/rbac.yaml \
         (kubectl apply -f manifests/rbac.yaml) and bind its roles to your user, \
         or ask a cluster admin to"
    )]
    Forbidden {
        call: ApiCall,
        message: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{call} failed: {message}")]
    Rejected {
        call: ApiCall,
        /// HTTP status code of the API server's response.
        code: u16,
        /// `reason` of the `Status`, such as `NotFound` or `Invalid`.
        reason: String,
        message: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "{call} failed: {source}; check that the cluster is reachable with \
         `kubectl get nodes` and the same --context and --kubeconfig"
    )]
    Transport {
        call: ApiCall,
        #[source]
        source: Box<kube::Error>,
    },
}

impl ApiError {
    /// Classifies a kube client error for `call`.
    pub fn from_kube(call: ApiCall, source: kube::Error) -> Self {
        let source = Box::new(source);
        match source.as_ref() {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                call,
                message: status.message.clone(),
                source,
            },
            kube::Error::Api(status) => Self::Rejected {
                call,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
                source,
            },
            _ => Self::Transport { call, source },
        }
    }

    /// Returns the HTTP status of the API server's response, or `None` when
    /// no response arrived.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Forbidden { .. } => Some(403),
            Self::Rejected { code, .. } => Some(*code),
            Self::Transport { .. } => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
}
