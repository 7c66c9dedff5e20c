//! plan step (not implemented yet).
