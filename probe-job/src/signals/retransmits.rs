//! TCP retransmissions of target connections, counted per process and
//! peer, and the loss recoveries of each connection: data the target sent
//! again, and gaps in received data that the peer filled.

use std::{collections::BTreeMap, net::SocketAddr};

use llmslo_schema::{LossRecovery, LossRecoveryKind, RetransmitCount};

/// Retransmission times kept per process and peer, for SYNs and for other
/// segments each; later ones are counted in `segments` only.
pub const MAX_TIMES_PER_PEER: usize = 10_000;

/// Loss recoveries kept per window; later ones are counted only.
pub const MAX_LOSS_RECOVERIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Retransmits {
    by_peer: BTreeMap<(u32, SocketAddr), RetransmitCount>,
    recoveries: Vec<LossRecovery>,
    /// Recoveries beyond [`MAX_LOSS_RECOVERIES`].
    pub recoveries_dropped: u64,
    /// Retransmissions on a connection that no target owned any more: the
    /// event raced the connection's close in user space.
    pub unattributed: u64,
}

/// The connection a loss recovery happened on.
#[derive(Debug, Clone, Copy)]
pub struct Socket {
    pub pid: u32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl Retransmits {
    /// Counts one retransmitted segment of `pid`'s connection to `peer` at
    /// `at_ns`, a SYN when `syn`; `pid` is `None` when the connection
    /// could not be tied to a target.
    pub fn add(&mut self, pid: Option<u32>, peer: SocketAddr, at_ns: u64, syn: bool) {
        let Some(pid) = pid else {
            self.unattributed += 1;
            return;
        };
        let count = self
            .by_peer
            .entry((pid, peer))
            .or_insert_with(|| RetransmitCount {
                pid,
                peer: peer.to_string(),
                segments: 0,
                at_ns: Vec::new(),
                syn_at_ns: Vec::new(),
            });
        count.segments += 1;
        let times = if syn {
            &mut count.syn_at_ns
        } else {
            &mut count.at_ns
        };
        if times.len() < MAX_TIMES_PER_PEER {
            times.push(at_ns);
        }
    }

    /// Records a loss recovery on `socket` from `from_ns` to `to_ns`.
    pub fn add_recovery(
        &mut self,
        socket: Socket,
        kind: LossRecoveryKind,
        from_ns: u64,
        to_ns: u64,
    ) {
        if self.recoveries.len() == MAX_LOSS_RECOVERIES {
            self.recoveries_dropped += 1;
            return;
        }
        self.recoveries.push(LossRecovery {
            pid: socket.pid,
            local: socket.local.to_string(),
            peer: socket.peer.to_string(),
            kind,
            from_ns,
            to_ns,
        });
    }

    /// Returns the counts per process and peer, and the loss recoveries.
    pub fn finish(self) -> (Vec<RetransmitCount>, Vec<LossRecovery>) {
        (self.by_peer.into_values().collect(), self.recoveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_process_and_peer() {
        let mut retransmits = Retransmits::default();
        let peer: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let other: SocketAddr = "[fd00::2]:80".parse().unwrap();
        retransmits.add(Some(7), peer, 5, true);
        retransmits.add(Some(7), peer, 10, false);
        retransmits.add(Some(7), peer, 20, false);
        retransmits.add(Some(8), peer, 30, false);
        retransmits.add(Some(7), other, 40, false);
        retransmits.add(None, peer, 50, false);

        assert_eq!(retransmits.unattributed, 1);
        let (counts, _) = retransmits.finish();
        assert_eq!(counts.len(), 3);
        let first = counts
            .iter()
            .find(|count| count.pid == 7 && count.peer == "10.0.0.2:443")
            .unwrap();
        assert_eq!(first.segments, 3);
        assert_eq!(first.at_ns, vec![10, 20]);
        assert_eq!(first.syn_at_ns, vec![5]);
        assert!(counts.iter().any(|count| count.peer == "[fd00::2]:80"));
    }

    #[test]
    fn times_beyond_limit_are_counted_only() {
        let mut retransmits = Retransmits::default();
        let peer: SocketAddr = "10.0.0.2:443".parse().unwrap();
        for at_ns in 0..MAX_TIMES_PER_PEER as u64 + 5 {
            retransmits.add(Some(1), peer, at_ns, false);
        }
        let (counts, _) = retransmits.finish();
        assert_eq!(counts[0].segments, MAX_TIMES_PER_PEER as u64 + 5);
        assert_eq!(counts[0].at_ns.len(), MAX_TIMES_PER_PEER);
    }

    #[test]
    fn recoveries_are_bounded() {
        let mut retransmits = Retransmits::default();
        let socket = Socket {
            pid: 1,
            local: "10.0.0.1:40000".parse().unwrap(),
            peer: "10.0.0.2:443".parse().unwrap(),
        };
        for at_ns in 0..MAX_LOSS_RECOVERIES as u64 + 2 {
            retransmits.add_recovery(socket, LossRecoveryKind::Refilled, at_ns, at_ns + 1);
        }
        assert_eq!(retransmits.recoveries_dropped, 2);
        let (_, recoveries) = retransmits.finish();
        assert_eq!(recoveries.len(), MAX_LOSS_RECOVERIES);
        assert_eq!(recoveries[0].local, "10.0.0.1:40000");
        assert_eq!(recoveries[0].peer, "10.0.0.2:443");
    }
}
