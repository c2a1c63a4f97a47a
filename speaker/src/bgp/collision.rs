//! Connection collision detection (RFC 4271 §6.8) for one peer: which of two connections to keep.
//!
//! Pure: the driver asks when a second connection to the same peer has sent its OPEN, and closes
//! the loser with Cease / connection collision resolution (6/7). Must not: touch sockets.

use std::net::Ipv4Addr;

use super::fsm::State;

/// Who opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This speaker connected to the peer.
    Outgoing,
    /// The peer connected to this speaker's listener.
    Incoming,
}

/// What to do with a new connection whose OPEN arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No other connection has got as far as OpenSent: use the new one.
    Adopt,
    /// Keep the existing connection; close the new one with Cease 6/7.
    KeepExisting,
    /// Close the existing connection with Cease 6/7; use the new one.
    KeepNew,
}

/// Decides between the session's current connection (`existing`: its FSM state and direction,
/// `None` without one) and a new one in direction `new` whose OPEN carried `remote_id`.
///
/// RFC 4271 §6.8: an Established connection always wins; between OpenSent/OpenConfirm and the
/// new one, the connection opened by the speaker with the higher BGP Identifier survives. Two
/// connections in the same direction are not a collision: the older one is kept.
pub fn resolve(
    existing: Option<(State, Direction)>,
    new: Direction,
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
) -> Decision {
    let Some((state, existing_dir)) = existing else {
        return Decision::Adopt;
    };
    match state {
        State::Idle | State::Connect | State::Active => Decision::Adopt,
        State::Established => Decision::KeepExisting,
        State::OpenSent | State::OpenConfirm => {
            if existing_dir == new {
                return Decision::KeepExisting;
            }
            // Compared as unsigned 32-bit integers (host order).
            let winner = if u32::from(local_id) > u32::from(remote_id) {
                Direction::Outgoing
            } else {
                Direction::Incoming
            };
            if winner == existing_dir {
                Decision::KeepExisting
            } else {
                Decision::KeepNew
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use Direction::*;

    const LOW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

    #[test]
    fn no_connection_or_one_not_yet_open_adopts() {
        assert_eq!(resolve(None, Incoming, LOW, HIGH), Adopt);
        for s in [State::Idle, State::Connect, State::Active] {
            for d in [Outgoing, Incoming] {
                assert_eq!(resolve(Some((s, d)), Incoming, LOW, HIGH), Adopt);
                assert_eq!(resolve(Some((s, d)), Outgoing, HIGH, LOW), Adopt);
            }
        }
    }

    #[test]
    fn established_always_wins() {
        for (l, r) in [(LOW, HIGH), (HIGH, LOW)] {
            for d in [Outgoing, Incoming] {
                assert_eq!(
                    resolve(Some((State::Established, d)), Incoming, l, r),
                    KeepExisting
                );
                assert_eq!(
                    resolve(Some((State::Established, d)), Outgoing, l, r),
                    KeepExisting
                );
            }
        }
    }

    #[test]
    fn higher_identifier_keeps_the_connection_it_opened() {
        for s in [State::OpenSent, State::OpenConfirm] {
            // We are higher: our outgoing connection survives.
            assert_eq!(
                resolve(Some((s, Outgoing)), Incoming, HIGH, LOW),
                KeepExisting
            );
            assert_eq!(resolve(Some((s, Incoming)), Outgoing, HIGH, LOW), KeepNew);
            // The peer is higher: its connection (incoming here) survives.
            assert_eq!(resolve(Some((s, Outgoing)), Incoming, LOW, HIGH), KeepNew);
            assert_eq!(
                resolve(Some((s, Incoming)), Outgoing, LOW, HIGH),
                KeepExisting
            );
        }
    }

    #[test]
    fn identifiers_compare_as_unsigned_integers() {
        // 10.0.0.1 < 192.0.2.1 < 200.0.0.1 as u32, whatever the signedness of a byte.
        let a = Ipv4Addr::new(200, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            resolve(Some((State::OpenConfirm, Outgoing)), Incoming, a, b),
            KeepExisting
        );
        assert_eq!(
            resolve(Some((State::OpenConfirm, Outgoing)), Incoming, b, a),
            KeepNew
        );
    }

    #[test]
    fn both_sides_agree_on_the_survivor() {
        // Each speaker runs the same rule from its own point of view; the TCP connection they
        // keep must be the same one.
        for (a, b) in [(LOW, HIGH), (HIGH, LOW)] {
            for s in [State::OpenSent, State::OpenConfirm] {
                // Connection X: opened by A. A sees it Outgoing, B sees it Incoming.
                let a_keeps_x = resolve(Some((s, Outgoing)), Incoming, a, b) == KeepExisting;
                let b_keeps_x = resolve(Some((s, Incoming)), Outgoing, b, a) == KeepExisting;
                assert_eq!(a_keeps_x, b_keeps_x, "{a} vs {b} in {s:?}");
            }
        }
    }

    #[test]
    fn same_direction_keeps_the_older() {
        for s in [State::OpenSent, State::OpenConfirm] {
            for d in [Outgoing, Incoming] {
                assert_eq!(resolve(Some((s, d)), d, LOW, HIGH), KeepExisting);
                assert_eq!(resolve(Some((s, d)), d, HIGH, LOW), KeepExisting);
            }
        }
    }
}
