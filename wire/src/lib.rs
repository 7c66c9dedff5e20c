//! Incremental parsers for the protocols llmslo reads from sockets.
