//! Fixtures shared by the integration tests.

pub mod binaries;
pub mod capture;
pub mod cgroup;
pub mod cgroup_tree;
pub mod kube_sim;
pub mod lock;
pub mod net;
pub mod otlp_receiver;
pub mod probe;
pub mod process;
pub mod python;
pub mod signals;
pub mod stack;
pub mod tls;
pub mod workspace;
