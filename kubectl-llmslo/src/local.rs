//! Probing processes on this host with a child llmslo-probe (not implemented yet).
