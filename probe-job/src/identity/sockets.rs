//! Socket lookups in `/proc`: which fds of a process are IP sockets, and
//! their addresses from the process's network namespace tables.

use std::{collections::HashMap, fs, net::SocketAddr};

use llmslo_wire::Transport;
use procfs::{
    net::TcpState,
    process::{FDTarget, Process},
};

/// An IP socket as `/proc/PID/net/{tcp,tcp6,udp,udp6}` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub transport: Transport,
    pub local: SocketAddr,
    /// `None` for listening TCP sockets and unconnected UDP sockets.
    pub peer: Option<SocketAddr>,
    pub listening: bool,
}

/// IP sockets of one network namespace, by inode.
#[derive(Debug, Default)]
pub struct SocketTables {
    by_inode: HashMap<u64, SocketInfo>,
}

impl SocketTables {
    /// Reads the socket tables of the network namespace of `pid`. Tables
    /// that cannot be read (IPv6 disabled, process gone) are skipped.
    pub fn load(pid: u32) -> Self {
        let mut tables = Self::default();
        let Ok(process) = Process::new(pid as i32) else {
            return tables;
        };
        for entries in [process.tcp(), process.tcp6()].into_iter().flatten() {
            for entry in entries {
                let listening = entry.state == TcpState::Listen;
                tables.by_inode.insert(
                    entry.inode,
                    SocketInfo {
                        transport: Transport::Tcp,
                        local: entry.local_address,
                        peer: (!listening).then_some(entry.remote_address),
                        listening,
                    },
                );
            }
        }
        for entries in [process.udp(), process.udp6()].into_iter().flatten() {
            for entry in entries {
                let connected = entry.remote_address.port() != 0;
                tables.by_inode.insert(
                    entry.inode,
                    SocketInfo {
                        transport: Transport::Udp,
                        local: entry.local_address,
                        peer: connected.then_some(entry.remote_address),
                        listening: false,
                    },
                );
            }
        }
        tables
    }

    pub fn get(&self, inode: u64) -> Option<SocketInfo> {
        self.by_inode.get(&inode).copied()
    }
}

/// Returns the inode of the socket behind `fd` of `pid`, or `None` when the
/// fd is closed or not a socket.
pub fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let target = target.to_str()?;
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Looks one fd up; used when a connection starts or first carries bytes.
pub fn resolve(pid: u32, fd: i32) -> Option<SocketInfo> {
    let inode = socket_inode(pid, fd)?;
    SocketTables::load(pid).get(inode)
}

/// Lists the fds of `pid` that are connected IP sockets: TCP sockets that
/// are not listening and UDP sockets with a peer.
pub fn connected_sockets(pid: u32) -> Vec<(i32, SocketInfo)> {
    let Ok(process) = Process::new(pid as i32) else {
        return Vec::new();
    };
    let Ok(fds) = process.fd() else {
        return Vec::new();
    };
    let inodes: Vec<(i32, u64)> = fds
        .flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some((fd.fd, inode)),
            _ => None,
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }

    let tables = SocketTables::load(pid);
    let mut sockets: Vec<(i32, SocketInfo)> = inodes
        .into_iter()
        .filter_map(|(fd, inode)| Some((fd, tables.get(inode)?)))
        .filter(|(_, info)| !info.listening && info.peer.is_some())
        .collect();
    sockets.sort_by_key(|(fd, _)| *fd);
    sockets
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd as _,
    };

    use super::*;

    #[test]
    fn own_tcp_connection_is_listed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();

        let pid = std::process::id();
        let sockets = connected_sockets(pid);
        let (_, info) = sockets
            .iter()
            .find(|(fd, _)| *fd == client.as_raw_fd())
            .expect("client socket listed");
        assert_eq!(info.transport, Transport::Tcp);
        assert_eq!(info.local, client.local_addr().unwrap());
        assert_eq!(info.peer, Some(listener.local_addr().unwrap()));
        assert!(
            !sockets.iter().any(|(fd, _)| *fd == listener.as_raw_fd()),
            "listening socket must not be listed"
        );

        let resolved = resolve(pid, listener.as_raw_fd()).unwrap();
        assert!(resolved.listening);
    }

    #[test]
    fn non_socket_fd_has_no_inode() {
        let file = fs::File::open("/proc/self/status").unwrap();
        assert_eq!(socket_inode(std::process::id(), file.as_raw_fd()), None);
    }
}
