//! The Kubernetes objects the integration tests create and read back: the config ConfigMap,
//! LoadBalancer Services (typed or from JSON, with or without a status already written), Nodes,
//! EndpointSlices; waiting for an ingress address or an Event.
//!
//! Must not: start processes (see [`super::controller`], [`super::speaker_lab`]) or decide
//! whether a test passed (it returns what it read; the waits fail only on their deadline).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::{APPS, WAIT};

/// Applies (server-side) the ConfigMap `config` in `ns` holding `config` under its `config` key.
pub async fn apply_config(client: &Client, ns: &str, config: &str) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("config".into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("config".to_string(), config.to_string())])),
        ..ConfigMap::default()
    };
    api.patch(
        "config",
        &PatchParams::apply("ferrolb-test").force(),
        &Patch::Apply(&cm),
    )
    .await
    .context("apply ConfigMap config")?;
    Ok(())
}

/// A config of layer2 pools `(name, range)`, in order.
pub fn pool_config(pools: &[(&str, &str)]) -> String {
    let mut s = String::from("address-pools:\n");
    for (name, range) in pools {
        s.push_str(&format!(
            "- name: {name}\n  protocol: layer2\n  addresses:\n  - {range}\n"
        ));
    }
    s
}

/// What [`create_lb`] varies: ports (default TCP 80), annotations, `spec.loadBalancerIP`.
#[derive(Debug, Default)]
pub struct Svc<'a> {
    pub ports: &'a [(i32, &'a str)],
    pub annotations: &'a [(&'a str, &'a str)],
    pub load_balancer_ip: Option<&'a str>,
}

/// Creates the LoadBalancer Service `ns/name` (selector `app: NAME`).
pub async fn create_lb(client: &Client, ns: &str, name: &str, svc: Svc<'_>) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let ports = if svc.ports.is_empty() {
        &[(80, "TCP")][..]
    } else {
        svc.ports
    };
    let obj = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                svc.annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            load_balancer_ip: svc.load_balancer_ip.map(String::from),
            ports: Some(
                ports
                    .iter()
                    .map(|(port, proto)| ServicePort {
                        name: Some(format!("p{port}")),
                        port: *port,
                        protocol: Some(proto.to_string()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("create Service {ns}/{name}"))?;
    Ok(())
}

/// The `status.loadBalancer.ingress` IPs of `ns/name` now.
pub async fn ingress(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = api.get(name).await?;
    Ok(svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect())
}

/// Waits until `ns/name` has an ingress IP; returns its IPs.
pub async fn wait_ingress(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let ips = ingress(client, ns, name).await?;
        if !ips.is_empty() {
            return Ok(ips);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{ns}/{name} got no ingress IP within {WAIT:?}")
}

/// Wait until `status.loadBalancer.ingress` of `name` equals `want`.
pub async fn wait_ingress_eq(
    client: &Client,
    ns: &str,
    name: &str,
    want: &[&str],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = ingress(client, ns, name).await?;
        if last == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{ns}/{name}: ingress {last:?}, want {want:?}")
}

/// Wait for an Event with `reason` about the object `regarding` in `ns`; returns its note.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    regarding: &str,
    reason: &str,
) -> anyhow::Result<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let events = api.list(&ListParams::default()).await?;
        if let Some(ev) = events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
        }) {
            return Ok(ev);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no {reason} Event about {ns}/{regarding} within {WAIT:?}")
}

/// Every ferrolb Service's ingress IPs in `ns`, by name.
pub async fn all_ingress(
    client: &Client,
    ns: &str,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|s| {
            let ips = s
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect();
            (s.metadata.name.unwrap_or_default(), ips)
        })
        .collect())
}

/// Creates a LoadBalancer Service in `ns` from a JSON `spec` fragment (merged over type and
/// selector) with `annotations`.
pub async fn create_lb_json(
    client: &Client,
    ns: &str,
    name: &str,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    let mut full = serde_json::json!({"type": "LoadBalancer", "selector": {"app": name},
                                      "ports": [{"port": 80, "protocol": "TCP"}]});
    for (k, v) in spec.as_object().context("spec is an object")? {
        full[k] = v.clone();
    }
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": full,
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("create Service {ns}/{name}"))?;
    Ok(())
}

/// A Node object with an InternalIP and a Ready condition (there is no kubelet).
pub async fn create_node(client: &Client, name: &str, ip: &str) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))?;
    api.create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("create Node {name}"))?;
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("Node {name} status"))?;
    Ok(())
}

/// A LoadBalancer Service in `apps` whose status already holds `ip` (written directly, as the
/// controller would).
pub async fn create_lb_with_ip(
    client: &Client,
    name: &str,
    policy: &str,
    ip: &str,
) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), APPS);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": APPS},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                 "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]},
    }))?;
    api.create(&PostParams::default(), &svc).await?;
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// The endpoints of an EndpointSlice, one per `(node, ready)`.
pub fn endpoints_json(eps: &[(&str, bool)]) -> serde_json::Value {
    serde_json::Value::Array(
        eps.iter()
            .enumerate()
            .map(|(i, (node, ready))| {
                serde_json::json!({"addresses": [format!("198.51.100.{}", 50 + i)],
                                   "nodeName": node, "conditions": {"ready": ready}})
            })
            .collect(),
    )
}

/// Creates or replaces the EndpointSlice of Service `svc` in `apps`.
pub async fn set_endpoints(client: &Client, svc: &str, eps: &[(&str, bool)]) -> anyhow::Result<()> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), APPS);
    let name = format!("{svc}-slice");
    let obj = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": APPS,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints_json(eps),
        "ports": [{"port": 80, "protocol": "TCP"}],
    });
    api.patch(
        &name,
        &PatchParams::apply("ferrolb-test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("apply EndpointSlice {name}"))?;
    Ok(())
}

/// Waits for an Event `reason` about `apps/<regarding>` whose note contains `text`.
pub async fn wait_event_note(
    client: &Client,
    regarding: &str,
    reason: &str,
    text: &str,
) -> anyhow::Result<Event> {
    wait_event_note_in(client, APPS, regarding, reason, text).await
}

/// Waits for an Event `reason` about `ns/<regarding>` whose note contains `text`.
pub async fn wait_event_note_in(
    client: &Client,
    ns: &str,
    regarding: &str,
    reason: &str,
    text: &str,
) -> anyhow::Result<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let events = api.list(&ListParams::default()).await?;
        if let Some(ev) = events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
                && e.note.as_deref().is_some_and(|n| n.contains(text))
        }) {
            return Ok(ev);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no {reason} Event about {ns}/{regarding} mentioning {text:?} within {WAIT:?}")
}

/// Sets (or removes, with `None`) a label on a Node.
pub async fn label_node(
    client: &Client,
    node: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
