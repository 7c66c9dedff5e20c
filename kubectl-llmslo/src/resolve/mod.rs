//! resolve step (not implemented yet).
