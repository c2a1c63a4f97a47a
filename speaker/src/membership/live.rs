//! Pure bookkeeping of the live set from membership events.
//!
//! Must not: do I/O. This node is always in the set (a speaker is alive to itself).

use std::collections::BTreeSet;

/// One membership change as seen by the gossip layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The node is alive (joined or came back).
    Up(String),
    /// The node left gracefully or was declared dead.
    Down(String),
}

/// Applies `change` to `live`; returns true when the set changed. `me` is never removed.
pub fn apply(live: &mut BTreeSet<String>, me: &str, change: Change) -> bool {
    match change {
        Change::Up(name) => live.insert(name),
        Change::Down(name) if name == me => false,
        Change::Down(name) => live.remove(&name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn up_and_down_change_the_set_once() {
        let mut live = set(&["a"]);
        assert!(apply(&mut live, "a", Change::Up("b".into())));
        assert!(!apply(&mut live, "a", Change::Up("b".into())));
        assert_eq!(live, set(&["a", "b"]));
        assert!(apply(&mut live, "a", Change::Down("b".into())));
        assert!(!apply(&mut live, "a", Change::Down("b".into())));
        assert_eq!(live, set(&["a"]));
    }

    #[test]
    fn self_is_never_removed() {
        let mut live = set(&["a", "b"]);
        assert!(!apply(&mut live, "a", Change::Down("a".into())));
        assert_eq!(live, set(&["a", "b"]));
    }
}
