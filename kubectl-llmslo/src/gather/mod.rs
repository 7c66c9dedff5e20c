//! gather step (not implemented yet).
