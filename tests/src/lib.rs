//! Fixtures shared by the integration tests.

pub mod binaries;
pub mod capture;
pub mod cgroup;
pub mod kube_sim;
pub mod net;
pub mod probe;
pub mod process;
pub mod python;
pub mod workspace;
