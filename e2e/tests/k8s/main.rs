//! Integration tests against a real kube-apiserver v1.20.2 + etcd (`ferrolb_e2e::k8s`, started
//! per test by `TestEnv`): the real `ferrolb` binary runs as `controller` or `speaker` with the
//! test's kubeconfig; tests drive it by creating Services, EndpointSlices, Nodes and ConfigMaps
//! and read back Service status, Events, Leases, metrics, ARP answers and BGP routes.
//!
//! One test binary (each links kube; keep it at one), one module per subject. The harness
//! (TestEnv, the controller process, object helpers, the speaker lab) is in `e2e/src/k8s/`.
//! Filters match the module path too: `cargo test -p ferrolb-e2e --test k8s manifests_`.

mod churn;
mod controller;
mod crds;
mod hostile;
mod konvoy;
mod manifests;
mod resilience;
mod secrets;
mod speaker;
