//! Leader election on a coordination.k8s.io Lease (kube-lease-manager). Only the leader writes.
//!
//! Must not: do anything but hold or wait for the lease and report the state on a channel.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ControllerError, ControllerOptions};

/// Start competing for the lease; the receiver says whether this replica leads now. Dropping the
/// receiver releases the lease (the task then ends).
pub async fn start(
    client: Client,
    opts: &ControllerOptions,
) -> Result<
    (
        watch::Receiver<bool>,
        JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    ),
    ControllerError,
> {
    let duration = opts.lease_duration.as_secs().max(2);
    // Renew a third of the duration before it expires.
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &opts.lease_name)
        .with_namespace(&opts.namespace)
        .with_identity(&opts.identity)
        .with_duration(duration)
        .with_grace(grace)
        .with_field_manager(super::FIELD_MANAGER)
        .build()
        .await
        .map_err(|source| ControllerError::Lease {
            namespace: opts.namespace.clone(),
            name: opts.lease_name.clone(),
            source,
        })?;
    Ok(manager.watch().await)
}
