//! analyze step (not implemented yet).
