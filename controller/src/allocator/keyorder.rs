//! Putting Service views in key order (namespace, then name) for the restart path, with each key
//! once (the last view of a key given).
//!
//! Comparing keys directly reads two strings per view on every comparison; with 100k views, which
//! do not fit in the cache, that is mostly memory stalls (about 7–13 ms even for views already in
//! order, far more for the hash-map order an informer gives). Here each view's key is read once,
//! into a small sort entry holding the first bytes of its namespace and name as big-endian
//! integers; entries compare on those, and go back to the strings only when the prefixes are equal
//! and do not hold the whole key (long names with a common start).
//!
//! Must not: know about pools, addresses or Services' requests.

use std::cmp::Ordering;

use ferrolb_config::{ServiceKey, ServiceView};

/// [`Entry::ns_len`] / [`Entry::name_len`] for a string longer than its prefix.
const LONG: u8 = u8::MAX;

/// One view's place in the sort: its key's prefixes and its index in the input.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The name's first 16 bytes, big-endian, zero-padded.
    name: u128,
    /// The namespace's first 8 bytes, big-endian, zero-padded.
    ns: u64,
    /// Index of the view in the input (last among equal keys wins).
    at: u32,
    /// The namespace's length when it fits its prefix, else [`LONG`].
    ns_len: u8,
    /// The name's length when it fits its prefix, else [`LONG`].
    name_len: u8,
}

/// The first `N` bytes of `s` as a big-endian integer (zero-padded) and its length, or [`LONG`].
fn prefix<const N: usize>(s: &str) -> ([u8; N], u8) {
    let mut out = [0u8; N];
    let n = s.len().min(N);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    let len = if s.len() <= N { s.len() as u8 } else { LONG };
    (out, len)
}

impl Entry {
    fn of(at: u32, v: &ServiceView) -> Entry {
        let (ns, ns_len) = prefix::<8>(&v.key.namespace);
        let (name, name_len) = prefix::<16>(&v.key.name);
        Entry {
            name: u128::from_be_bytes(name),
            ns: u64::from_be_bytes(ns),
            at,
            ns_len,
            name_len,
        }
    }
}

/// Compares two strings whose zero-padded prefixes are `pa` and `pb` (with lengths as in
/// [`Entry`]): a strict difference between the prefixes orders the strings (a shorter string
/// pads with zeros, which sort first, as a prefix of a longer one does); equal prefixes decide
/// only when both strings fit them and have one length, otherwise the strings are read.
fn cmp_part<T: Ord>(pa: T, pb: T, la: u8, lb: u8, a: impl FnOnce() -> Ordering) -> Ordering {
    match pa.cmp(&pb) {
        Ordering::Equal if la == lb && la != LONG => Ordering::Equal,
        Ordering::Equal => a(),
        o => o,
    }
}

/// Key order of two entries (namespace, then name), ignoring their input position.
fn cmp_keys(x: &Entry, y: &Entry, views: &[ServiceView]) -> Ordering {
    cmp_part(x.ns, y.ns, x.ns_len, y.ns_len, || {
        text(views, x, y, |k| &k.namespace)
    })
    .then_with(|| {
        cmp_part(x.name, y.name, x.name_len, y.name_len, || {
            text(views, x, y, |k| &k.name)
        })
    })
}

/// Compares one part of two keys by their text. Kept out of line: inlined, the compiler may read
/// the views (to have the strings' addresses ready) on every comparison, even when the prefixes
/// decide, and the views are what this module avoids reading.
#[inline(never)]
#[cold]
fn text(views: &[ServiceView], x: &Entry, y: &Entry, part: fn(&ServiceKey) -> &String) -> Ordering {
    part(&views[x.at as usize].key).cmp(part(&views[y.at as usize].key))
}

/// The views `keep` accepts, in key order, each key once: of kept views with one key, the last
/// in `views`. `keep` sees every view once, in input order.
pub(super) fn in_key_order(
    views: &[ServiceView],
    mut keep: impl FnMut(&ServiceView) -> bool,
) -> Vec<&ServiceView> {
    let at = |i: usize| u32::try_from(i).expect("fewer than 2^32 Services");
    let mut entries: Vec<Entry> = views
        .iter()
        .enumerate()
        .filter(|(_, v)| keep(v))
        .map(|(i, v)| Entry::of(at(i), v))
        .collect();
    // Input position breaks ties: a total order, so the unstable sort's result is determined.
    entries.sort_unstable_by(|x, y| cmp_keys(x, y, views).then(x.at.cmp(&y.at)));
    let mut out: Vec<&ServiceView> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let last_of_key = entries
            .get(i + 1)
            .is_none_or(|next| cmp_keys(e, next, views) != Ordering::Equal);
        if last_of_key {
            out.push(&views[e.at as usize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(ns: &str, name: &str, marker: u16) -> ServiceView {
        let mut v = ServiceView::new_load_balancer(ServiceKey::new(ns, name));
        // Tells views of one key apart.
        v.ports = vec![ferrolb_config::ServicePort {
            protocol: "TCP".into(),
            port: marker,
        }];
        v
    }

    /// Views of `keys`, marked 1, 2, … in order.
    fn views(keys: &[(&str, &str)]) -> Vec<ServiceView> {
        keys.iter()
            .zip(1..)
            .map(|((ns, name), marker)| view(ns, name, marker))
            .collect()
    }

    /// The markers of `vs`, in order.
    fn marks(vs: &[&ServiceView]) -> Vec<u16> {
        vs.iter().map(|v| v.ports[0].port).collect()
    }

    /// The plain way: a stable sort by key, then the last view of each key.
    fn naive(views: &[ServiceView]) -> Vec<&ServiceView> {
        let mut sorted: Vec<&ServiceView> = views.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out: Vec<&ServiceView> = Vec::new();
        for v in sorted {
            match out.last_mut() {
                Some(last) if last.key == v.key => *last = v,
                _ => out.push(v),
            }
        }
        out
    }

    #[test]
    fn orders_by_namespace_then_name_and_keeps_the_last_view_of_a_key() {
        let vs = views(&[
            ("b", "x"),
            ("a", "y"),
            ("a", "x"),
            ("b", "x"),
            ("ab", "a"),
            ("a", "x"),
        ]);
        let got: Vec<(&str, &str, u16)> = in_key_order(&vs, |_| true)
            .iter()
            .map(|v| {
                (
                    v.key.namespace.as_str(),
                    v.key.name.as_str(),
                    v.ports[0].port,
                )
            })
            .collect();
        assert_eq!(
            got,
            [("a", "x", 6), ("a", "y", 2), ("ab", "a", 5), ("b", "x", 4)]
        );
        assert!(in_key_order(&[], |_| true).is_empty());
        // Views left out do not count, not even as the last view of a key.
        let odd = in_key_order(&vs, |v| v.ports[0].port % 2 == 1);
        assert_eq!(marks(&odd), [3, 5, 1]);
    }

    #[test]
    fn long_keys_and_zero_bytes_are_told_apart_by_their_text() {
        // Equal prefixes: the strings decide. A zero byte must not pass for the padding.
        let vs = views(&[
            ("namespace-long-b", "n"),
            ("namespace-long-a", "n"),
            ("ns", "service-with-a-long-name-2"),
            ("ns", "service-with-a-long-name-10"),
            ("ns", "ab\0"),
            ("ns", "ab"),
            ("ns\0", "a"),
            ("ns", "service-with-a-long-name-2"),
        ]);
        let got = marks(&in_key_order(&vs, |_| true));
        assert_eq!(got, marks(&naive(&vs)));
        assert_eq!(got, [2, 1, 6, 5, 4, 8, 7]);
    }

    proptest! {
        #[test]
        fn same_as_a_stable_sort_then_the_last_of_each_key(
            keys in prop::collection::vec(
                ("[ab\\x00]{0,10}", "[ab\\x00]{0,18}"), 0..60)
        ) {
            let keys: Vec<(&str, &str)> = keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let vs = views(&keys);
            prop_assert_eq!(marks(&in_key_order(&vs, |_| true)), marks(&naive(&vs)));
        }
    }
}
