//! The Kubernetes side of the end-to-end harness (tests in `e2e/tests/k8s/`): a real control
//! plane ([`testenv`]), the `ferrolb controller` process ([`controller`]), the objects tests
//! create and read back ([`objects`]) and the speaker lab, `ferrolb speaker`s in node namespaces
//! ([`speaker_lab`]).
//!
//! Must not: reach anything but its own apiserver on 127.0.0.1 and the namespaces it creates.

pub mod controller;
pub mod objects;
pub mod speaker_lab;
pub mod testenv;

use std::time::Duration;

pub use testenv::{build_binaries, client_for, free_port, TestEnv};

use crate::prereq::Need;

/// How long the harness waits for the apiserver, the controller or a speaker to get somewhere.
pub const WAIT: Duration = Duration::from_secs(30);

/// The namespace of ferrolb's ConfigMap, Lease and ServiceAccounts in the speaker tests.
pub const SPEAKER_NS: &str = "metallb-system";

/// The namespace of the speaker tests' Services.
pub const APPS: &str = "apps";

/// The Service CIDR of tests with more than 254 Services at once: virtual addresses in etcd
/// only (nothing configures or routes them), 4 094 of them. Not larger: the apiserver rewrites
/// the whole allocation bitmap in etcd on every Service create and delete (a /12's is 128 KiB),
/// which filled etcd's 2 GiB quota within 7 minutes of the unpaced 10k churn soak.
pub const SOAK_SERVICE_CIDR: &str = "10.128.0.0/20";

/// What a test with a [`TestEnv`] needs (the programs `e2e/k8s/start-testenv.sh` and the build
/// script run), followed by `extra`.
pub fn needs(extra: &[Need]) -> Vec<Need> {
    let mut all = vec![
        Need::Program("openssl"),
        Need::Program("curl"),
        Need::Program("flock"),
    ];
    all.extend_from_slice(extra);
    all
}

/// What a test with a [`speaker_lab::SpeakerLab`] needs: [`needs`], root (namespaces), `socat`
/// (the forwarders), `arping` (the client's probes), followed by `extra`.
pub fn lab_needs(extra: &[Need]) -> Vec<Need> {
    let mut all = needs(&[Need::Root, Need::Program("socat"), Need::Program("arping")]);
    all.extend_from_slice(extra);
    all
}

/// A fresh [`TestEnv`] with the namespace `ns`, and its admin client.
pub async fn setup(ns: &str) -> anyhow::Result<(TestEnv, kube::Client)> {
    let env = TestEnv::start().await?;
    let client = env.client();
    env.namespace(ns).await?;
    Ok((env, client))
}
