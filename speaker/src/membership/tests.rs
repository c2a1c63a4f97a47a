//! Loopback tests of the memberlist membership: join, crash detection, graceful leave, secret.
//!
//! Members bind 127.0.0.1 port 0 (no collisions with parallel tests).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{MemberlistConfig, MemberlistMembership, Membership};

const SECRET: &[u8] = b"team-secret";

fn cfg(node: &str, join: &[SocketAddr], secret: &[u8]) -> MemberlistConfig {
    let mut c = MemberlistConfig::new(node, "127.0.0.1:0".parse().unwrap());
    c.join = join.to_vec();
    c.secret = Some(secret.to_vec());
    c
}

fn names(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// Waits until `rx` holds `want`; returns the time it took, or panics after `limit`.
async fn wait_for(
    rx: &mut watch::Receiver<BTreeSet<String>>,
    want: &BTreeSet<String>,
    limit: Duration,
) -> Duration {
    let t0 = Instant::now();
    let ok = matches!(
        tokio::time::timeout(limit, rx.wait_for(|live| live == want)).await,
        Ok(Ok(_))
    );
    assert!(
        ok,
        "live set is {:?}, wanted {:?} within {limit:?}",
        *rx.borrow(),
        want
    );
    t0.elapsed()
}

async fn three(prefix: &str) -> Vec<MemberlistMembership> {
    let a = MemberlistMembership::start(cfg(&format!("{prefix}a"), &[], SECRET))
        .await
        .unwrap();
    let seed = [a.address()];
    let b = MemberlistMembership::start(cfg(&format!("{prefix}b"), &seed, SECRET))
        .await
        .unwrap();
    let c = MemberlistMembership::start(cfg(&format!("{prefix}c"), &seed, SECRET))
        .await
        .unwrap();
    let all = names(&[
        &format!("{prefix}a"),
        &format!("{prefix}b"),
        &format!("{prefix}c"),
    ]);
    for m in [&a, &b, &c] {
        wait_for(&mut m.live(), &all, Duration::from_secs(5)).await;
    }
    vec![a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_join_and_a_crashed_member_is_dropped_within_a_second() {
    let ms = three("crash-").await;
    let survivors = names(&["crash-a", "crash-b"]);
    let (mut la, mut lb) = (ms[0].live(), ms[1].live());
    // Abrupt stop: no leave message, the socket just goes quiet (like SIGKILL).
    ms[2].shutdown().await.unwrap();
    let t0 = Instant::now();
    wait_for(&mut la, &survivors, Duration::from_secs(2)).await;
    let first = t0.elapsed();
    wait_for(&mut lb, &survivors, Duration::from_secs(2)).await;
    let both = t0.elapsed();
    println!(
        "membership: crashed member dropped after {} ms (first), {} ms (both)",
        first.as_millis(),
        both.as_millis()
    );
    assert!(both < Duration::from_secs(2), "detection took {both:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_seen_quickly() {
    let ms = three("leave-").await;
    let survivors = names(&["leave-a", "leave-c"]);
    let (mut la, mut lc) = (ms[0].live(), ms[2].live());
    let t0 = Instant::now();
    ms[1].leave().await.unwrap();
    wait_for(&mut la, &survivors, Duration::from_secs(2)).await;
    wait_for(&mut lc, &survivors, Duration::from_secs(2)).await;
    println!(
        "membership: graceful leave seen by both after {} ms",
        t0.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_secret_never_appears() {
    let a = MemberlistMembership::start(cfg("sec-a", &[], SECRET))
        .await
        .unwrap();
    let seed = [a.address()];
    let b = MemberlistMembership::start(cfg("sec-b", &seed, SECRET))
        .await
        .unwrap();
    let both = names(&["sec-a", "sec-b"]);
    wait_for(&mut a.live(), &both, Duration::from_secs(5)).await;
    let intruder = MemberlistMembership::start(cfg("sec-x", &seed, b"wrong"))
        .await
        .unwrap();
    // Give it several rejoin attempts (one per second) and many gossip rounds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(*a.live().borrow(), both);
    assert_eq!(*b.live().borrow(), both);
    assert_eq!(*intruder.live().borrow(), names(&["sec-x"]));
}
