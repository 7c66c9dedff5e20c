//! Socket lookups: which fds of a process are IP sockets, and their
//! addresses, from the socket itself or from the tables of the process's
//! network namespace in `/proc`.

use std::{
    collections::HashMap,
    fs,
    net::SocketAddr,
    time::{Duration, Instant},
};

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

impl SocketInfo {
    /// Returns whether this is a TCP socket that is neither listening nor
    /// connected, such as one still in its handshake.
    fn is_connecting_tcp(&self) -> bool {
        self.transport == Transport::Tcp && !self.listening && self.peer.is_none()
    }
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

/// How long a reading of `/proc/cgroups` is trusted. Reading it costs
/// about twice as much as the socket query it allows.
const GATE_MAX_AGE: Duration = Duration::from_secs(1);

/// Looks up the sockets of target processes.
///
/// Queries each socket itself where duplicating the fd changes nothing, at
/// a cost independent of how many sockets the node has. Reading the
/// tables is the fallback, because the kernel walks every bucket of its
/// TCP hash table for each read: a lookup in the four tables took 2.4 ms
/// on a 24 GiB host with three sockets.
#[derive(Debug, Default)]
pub struct SocketLookup {
    /// The last reading of [`duplication_is_inert`], and when it was made.
    gate: Option<(Instant, bool)>,
}

impl SocketLookup {
    /// Looks one fd up; used when a connection starts or first carries
    /// bytes.
    pub fn resolve(&mut self, pid: u32, fd: i32) -> Option<SocketInfo> {
        if self.may_duplicate() {
            match query_socket(pid, fd) {
                Ok(info) => return info,
                Err(error) => tracing::trace!(
                    %error, pid, fd, "failed to duplicate the fd; reading the socket tables instead"
                ),
            }
        }
        let inode = socket_inode(pid, fd)?;
        SocketTables::load(pid).get(inode)
    }

    /// Returns [`duplication_is_inert`], read again after
    /// [`GATE_MAX_AGE`], because a net_cls or net_prio group may be
    /// created during the window.
    fn may_duplicate(&mut self) -> bool {
        let now = Instant::now();
        match self.gate {
            Some((read_at, inert)) if now.duration_since(read_at) < GATE_MAX_AGE => inert,
            _ => {
                let inert = duplication_is_inert();
                self.gate = Some((now, inert));
                inert
            }
        }
    }
}

/// Returns whether a socket duplicated into the probe stays as it was.
///
/// Receiving a socket fd sets the socket's net_cls class id and net_prio
/// index to those of the receiver: the kernel's `__receive_sock`, written
/// for fds passed with SCM_RIGHTS, runs for every received fd. Where those
/// cgroup v1 controllers have groups besides the root, that could change
/// how the target's traffic is classified, so the probe does not duplicate
/// there.
fn duplication_is_inert() -> bool {
    fs::read_to_string("/proc/cgroups").is_ok_and(|table| only_root_network_groups(&table))
}

/// Returns whether `/proc/cgroups` shows that every process shares the
/// root group of net_cls and net_prio. That is the case where they are on
/// no cgroup v1 hierarchy (hierarchy 0): cgroup v2 cannot enable them, and
/// their `num_cgroups` then counts every v2 group. It is also the case
/// where their v1 hierarchy has only the root, or the kernel lacks them.
fn only_root_network_groups(table: &str) -> bool {
    table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .all(|line| {
            // subsys_name, hierarchy, num_cgroups, enabled
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["net_cls" | "net_prio", hierarchy, groups, ..] => {
                    *hierarchy == "0" || groups.parse::<u64>().is_ok_and(|n| n <= 1)
                }
                ["net_cls" | "net_prio", ..] => false,
                _ => true,
            }
        })
}

/// Duplicates `fd` of `pid` into the probe (`pidfd_getfd`, Linux 5.6, which
/// needs the right to ptrace the process) and reads the socket's type and
/// addresses. `Ok(None)` for fds that are not TCP or UDP sockets over IP;
/// `Err` when the fd cannot be duplicated, where the tables may still know
/// it. Callers check [`SocketLookup::may_duplicate`] first. The duplicate lives
/// for a few system calls; should the target close its fd in that time,
/// the socket closes when the probe drops it.
fn query_socket(pid: u32, fd: i32) -> rustix::io::Result<Option<SocketInfo>> {
    use rustix::{
        net::{AddressFamily, SocketType, getpeername, getsockname, ipproto, sockopt},
        process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open},
    };

    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(rustix::io::Errno::SRCH)?;
    let process = pidfd_open(pid, PidfdFlags::empty())?;
    let socket = pidfd_getfd(&process, fd, PidfdGetfdFlags::empty())?;
    let is_ip = matches!(
        sockopt::socket_domain(&socket),
        Ok(AddressFamily::INET | AddressFamily::INET6)
    );
    if !is_ip {
        return Ok(None);
    }
    let transport = match (
        sockopt::socket_type(&socket),
        sockopt::socket_protocol(&socket),
    ) {
        (Ok(SocketType::STREAM), Ok(Some(ipproto::TCP))) => Transport::Tcp,
        (Ok(SocketType::DGRAM), Ok(Some(ipproto::UDP))) => Transport::Udp,
        _ => return Ok(None),
    };
    let Some(local) = getsockname(&socket)
        .ok()
        .and_then(|address| SocketAddr::try_from(address).ok())
    else {
        return Ok(None);
    };
    let listening = transport == Transport::Tcp && sockopt::socket_acceptconn(&socket)?;
    // Unconnected UDP sockets, listening sockets and TCP sockets whose
    // handshake has not completed have no peer to report.
    let peer = getpeername(&socket)
        .ok()
        .flatten()
        .and_then(|address| SocketAddr::try_from(address).ok());
    if sockopt::socket_linger(&socket).is_ok_and(|linger| linger.is_some_and(|t| !t.is_zero())) {
        // Should the target close its fd meanwhile, dropping the duplicate
        // is the socket's last close, which lingers while unsent data
        // remains: that wait must not stall the event loop.
        std::thread::spawn(move || drop(socket));
    }
    Ok(Some(SocketInfo {
        transport,
        local: without_scope(local),
        peer: peer.map(without_scope),
        listening,
    }))
}

/// Drops the IPv6 scope id, which the socket tables and the addresses of
/// the probe's other records do not carry.
fn without_scope(mut address: SocketAddr) -> SocketAddr {
    if let SocketAddr::V6(v6) = &mut address {
        v6.set_scope_id(0);
    }
    address
}

impl SocketLookup {
    /// Lists the fds of `pid` that are connected IP sockets: TCP sockets that
    /// are not listening and UDP sockets with a peer.
    pub fn connected_sockets(&mut self, pid: u32) -> Vec<(i32, SocketInfo)> {
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

        // The tables are read only if some socket cannot be queried itself.
        let inert = self.may_duplicate();
        let mut tables = None;
        let mut sockets: Vec<(i32, SocketInfo)> = inodes
            .into_iter()
            .filter_map(|(fd, inode)| {
                let queried = inert
                    .then(|| query_socket(pid, fd).ok())
                    .flatten()
                    // A TCP socket still in its handshake has no peer for
                    // getpeername, but the tables list the address it connects to.
                    .filter(|info| !info.is_some_and(|info| info.is_connecting_tcp()));
                let info = queried.unwrap_or_else(|| {
                    tables
                        .get_or_insert_with(|| SocketTables::load(pid))
                        .get(inode)
                })?;
                Some((fd, info))
            })
            .filter(|(_, info)| !info.listening && info.peer.is_some())
            .collect();
        sockets.sort_by_key(|(fd, _)| *fd);
        sockets
    }
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
        let sockets = SocketLookup::default().connected_sockets(pid);
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

        let resolved = SocketLookup::default()
            .resolve(pid, listener.as_raw_fd())
            .unwrap();
        assert!(resolved.listening);
    }

    #[test]
    fn socket_query_matches_tables() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let unconnected = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        connected
            .connect(unconnected.local_addr().unwrap())
            .unwrap();

        let pid = std::process::id();
        let tables = SocketTables::load(pid);
        for fd in [
            client.as_raw_fd(),
            server.as_raw_fd(),
            listener.as_raw_fd(),
            unconnected.as_raw_fd(),
            connected.as_raw_fd(),
        ] {
            let queried = query_socket(pid, fd).unwrap();
            let listed = tables.get(socket_inode(pid, fd).unwrap());
            assert_eq!(queried, listed, "fd {fd}");
        }
        let client_info = query_socket(pid, client.as_raw_fd()).unwrap().unwrap();
        assert_eq!(client_info.local, client.local_addr().unwrap());
        assert_eq!(client_info.peer, Some(listener.local_addr().unwrap()));
        let udp = |socket: &std::net::UdpSocket| query_socket(pid, socket.as_raw_fd()).unwrap();
        assert_eq!(udp(&unconnected).unwrap().peer, None);
        assert_eq!(udp(&connected).unwrap().peer, unconnected.local_addr().ok());
    }

    #[test]
    fn non_ip_fds_not_resolved() {
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = fs::File::open("/proc/self/status").unwrap();
        let pid = std::process::id();
        assert_eq!(query_socket(pid, unix.as_raw_fd()), Ok(None));
        assert_eq!(query_socket(pid, file.as_raw_fd()), Ok(None));
        let mut lookup = SocketLookup::default();
        assert_eq!(lookup.resolve(pid, unix.as_raw_fd()), None);
        // An fd that is not open cannot be duplicated, and the tables do
        // not list it. A just-closed number would be reused by the pidfd.
        let not_open = 1 << 20;
        assert!(query_socket(pid, not_open).is_err());
        assert_eq!(lookup.resolve(pid, not_open), None);
    }

    #[test]
    fn connecting_socket_is_seeded() {
        use rustix::net::{
            AddressFamily, SocketFlags, SocketType, bind, connect, getsockname, listen, socket,
            socket_with,
        };

        // A listen backlog of 0 admits one connection; the SYN of the next
        // is dropped, which keeps that socket in SYN_SENT.
        let listener = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        bind(
            &listener,
            &std::net::SocketAddrV4::new([127, 0, 0, 1].into(), 0),
        )
        .unwrap();
        listen(&listener, 0).unwrap();
        let address = SocketAddr::try_from(getsockname(&listener).unwrap()).unwrap();
        let _queued = TcpStream::connect(address).unwrap();
        let connecting = socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        connect(&connecting, &address).unwrap_err();

        let pid = std::process::id();
        let peer = SocketLookup::default()
            .connected_sockets(pid)
            .into_iter()
            .find(|(fd, _)| *fd == connecting.as_raw_fd())
            .map(|(_, info)| info.peer);
        assert_eq!(peer, Some(Some(address)));
    }

    #[test]
    fn ipv6_scope_is_dropped() {
        let scoped: SocketAddr = "[fe80::1%2]:443".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(without_scope(scoped).to_string(), "[fe80::1]:443");
        assert_eq!(without_scope(v4), v4);
    }

    #[test]
    fn network_groups_gate_duplication() {
        let header = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t90\t1\n";
        let only_root = format!("{header}net_cls\t0\t1\t1\nnet_prio\t0\t1\t1\n");
        let classes_in_use = format!("{header}net_cls\t6\t42\t1\nnet_prio\t6\t42\t1\n");
        let cgroup_v2 = format!("{header}net_cls\t0\t90\t1\nnet_prio\t0\t90\t1\n");
        let unreadable = format!("{header}net_cls\t6\n");
        assert!(only_root_network_groups(&only_root));
        assert!(only_root_network_groups(header));
        assert!(only_root_network_groups(&cgroup_v2));
        assert!(!only_root_network_groups(&classes_in_use));
        assert!(!only_root_network_groups(&unreadable));
    }

    #[test]
    fn non_socket_fd_has_no_inode() {
        let file = fs::File::open("/proc/self/status").unwrap();
        assert_eq!(socket_inode(std::process::id(), file.as_raw_fd()), None);
    }
}
