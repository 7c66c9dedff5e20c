//! report step (not implemented yet).
