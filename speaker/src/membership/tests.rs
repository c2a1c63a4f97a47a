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

/// Sends one memberlist `dead` message accusing `node` to `to` over UDP, encrypted with `key`
/// (`None`: plaintext), exactly as a member would gossip it.
async fn send_forged_dead(to: SocketAddr, node: &str, key: Option<&[u8]>) {
    use memberlist::proto::{Dead, EncryptionAlgorithm, Message, ProtoEncoder, SecretKey};
    use std::sync::Arc;
    let msgs = [Message::<Arc<str>, SocketAddr>::Dead(Dead::new(
        // Far above any real incarnation, so a member that trusted it would act on it.
        1000,
        Arc::from(node),
        Arc::from("forger"),
    ))];
    let mut enc = ProtoEncoder::new(1400).with_messages(msgs);
    if let Some(k) = key {
        enc = enc.with_encryption(
            EncryptionAlgorithm::NoPadding,
            SecretKey::from(super::secret::derive_key(k)),
        );
    }
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for payload in enc.encode() {
        sock.send_to(payload.unwrap().as_slice(), to).await.unwrap();
    }
}

/// Watches `rx` for `limit` and returns true if `node` was ever missing from it.
async fn ever_missing(
    mut rx: watch::Receiver<BTreeSet<String>>,
    node: &str,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !rx.borrow_and_update().contains(node) {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

/// A process without the shared secret cannot forge a live member's death: a `dead` message
/// about `fd-b`, sent straight to `fd-a` encrypted with another key, or unencrypted, changes
/// nothing. The same message encrypted with the cluster's key does make `fd-a` drop `fd-b` (until
/// `fd-b` refutes it), which shows the forged message is well-formed and only the key stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_secret_cannot_forge_a_death() {
    let a = MemberlistMembership::start(cfg("fd-a", &[], SECRET))
        .await
        .unwrap();
    let b = MemberlistMembership::start(cfg("fd-b", &[a.address()], SECRET))
        .await
        .unwrap();
    let both = names(&["fd-a", "fd-b"]);
    wait_for(&mut a.live(), &both, Duration::from_secs(5)).await;
    wait_for(&mut b.live(), &both, Duration::from_secs(5)).await;

    let watch_a = tokio::spawn(ever_missing(a.live(), "fd-b", Duration::from_secs(3)));
    for _ in 0..20 {
        send_forged_dead(a.address(), "fd-b", Some(b"wrong-secret")).await;
        send_forged_dead(a.address(), "fd-b", None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !watch_a.await.unwrap(),
        "a forged death without the secret made fd-a drop fd-b"
    );
    assert_eq!(*a.live().borrow(), both);
    println!("membership: 40 forged dead messages (wrong key, plaintext) changed nothing");

    // Control: the same accusation with the right key is believed.
    let watch_a = tokio::spawn(ever_missing(a.live(), "fd-b", Duration::from_secs(3)));
    send_forged_dead(a.address(), "fd-b", Some(SECRET)).await;
    assert!(
        watch_a.await.unwrap(),
        "control: a dead message with the right key was not acted on (forged format wrong?)"
    );
    // fd-b refutes (a higher incarnation) and is back.
    let back = wait_for(&mut a.live(), &both, Duration::from_secs(5)).await;
    println!(
        "membership: control with the right key: fd-b dropped, back after {} ms",
        back.as_millis()
    );
}
