//! Fixtures shared by the integration tests.

pub mod kube_sim;
