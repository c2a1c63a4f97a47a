//! Kubernetes objects to what the speaker keeps of them: Services, EndpointSlices and the
//! config ConfigMap, each converted as its watch event arrives (`ferrolb_runtime::cache`), and
//! the EndpointSlices' readiness. Pure functions, no I/O.
//!
//! Must not: talk to the apiserver, keep a field the speaker does not read, or map a Service
//! field differently from the controller (`ferrolb_runtime::service` maps them for both).

use ferrolb_config::{ServiceKey, ServiceView};
use ferrolb_runtime::service::service_view;
pub use ferrolb_runtime::service::ServiceMeta;
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServiceSpec, ServiceStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ObjectMeta;

use crate::world::build;
use crate::world::Readiness;

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

// What the speaker keeps of each watched object. The caches hold something of every Service,
// EndpointSlice and Node in the cluster for as long as it exists, and a full object carries much
// the speaker never reads: `metadata.managedFields` (one JSON tree per field manager), `kubectl
// apply`'s last-applied-configuration annotation (a second copy of the object), a Node's image
// list, and the k8s-openapi structs themselves are large (a Service with empty fields is ~1 KiB).
// So each watch event's object is turned into what the speaker reads before it is cached:
// Services into a small view and the Event reference, EndpointSlices into their Service and
// ready nodes, Nodes and the ConfigMap cut down. The tests below convert objects both ways and
// compare. A new read of a field must be added here too. Nodes are cut down in
// [`super::nodes`].

/// What the speaker keeps of a Service: the view its decisions read and what its `nodeAssigned`
/// Event refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedService {
    pub view: ServiceView,
    pub meta: ServiceMeta,
}

impl CachedService {
    /// The Event reference `Resource::object_ref` would give for the Service.
    pub fn object_ref(&self) -> ObjectReference {
        self.meta.object_ref(&self.view.key)
    }
}

/// A Service as the speaker keeps it. Its view has only what the speaker reads (the key,
/// `spec.type`, `spec.loadBalancerClass`, `spec.externalTrafficPolicy` and the ingress IPs of
/// the status: [`build::assigned_views`], the announcers' elections and advertisements, the
/// config gate's breakage check); the other fields of the view are empty. Those fields are converted
/// by [`service_view`] itself, so they mean what they mean to the controller.
pub fn cached_service(svc: Service) -> CachedService {
    let Service {
        metadata,
        spec,
        status,
    } = svc;
    let spec = spec.map(|s| ServiceSpec {
        type_: s.type_,
        load_balancer_class: s.load_balancer_class,
        external_traffic_policy: s.external_traffic_policy,
        ..ServiceSpec::default()
    });
    let status = status.map(|s| ServiceStatus {
        load_balancer: s.load_balancer,
        ..ServiceStatus::default()
    });
    let meta = ServiceMeta {
        uid: metadata.uid,
        resource_version: metadata.resource_version,
    };
    let small = Service {
        metadata: ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            ..ObjectMeta::default()
        },
        spec,
        status,
    };
    CachedService {
        view: service_view(&small),
        meta,
    }
}

/// What the speaker keeps of an EndpointSlice: its Service (the `kubernetes.io/service-name`
/// label; none without it) and the nodes of its endpoints that count for [`readiness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSlice {
    pub service: Option<ServiceKey>,
    pub ready_nodes: Vec<String>,
}

impl CachedSlice {
    /// The slice as [`build::readiness`] reads it; none without a Service.
    pub fn entry(&self) -> Option<(&ServiceKey, &[String])> {
        Some((self.service.as_ref()?, &self.ready_nodes))
    }
}

/// An EndpointSlice as the speaker keeps it: an endpoint counts when its `conditions.ready` is
/// not false (nil means ready) and it names a node.
pub fn cached_slice(slice: EndpointSlice) -> CachedSlice {
    let EndpointSlice {
        metadata,
        endpoints,
        ..
    } = slice;
    let service = metadata
        .labels
        .and_then(|mut l| l.remove(SERVICE_NAME_LABEL))
        .map(|name| ServiceKey::new(metadata.namespace.unwrap_or_default(), name));
    let mut ready_nodes: Vec<String> = endpoints
        .into_iter()
        .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|ep| ep.node_name)
        .collect();
    ready_nodes.sort();
    ready_nodes.dedup();
    ready_nodes.shrink_to_fit();
    CachedSlice {
        service,
        ready_nodes,
    }
}

/// Per Service, the nodes hosting at least one ready endpoint ([`cached_slice`]): slices are
/// matched to their Service by the `kubernetes.io/service-name` label.
pub fn readiness<'a>(slices: impl IntoIterator<Item = &'a CachedSlice>) -> Readiness {
    build::readiness(slices.into_iter().filter_map(CachedSlice::entry))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{assigned_services, ready, slice, svc};
    use super::*;
    use crate::world::build::assigned_views;
    use crate::world::AssignedService;
    use ferrolb_config::is_ours;
    use ferrolb_runtime::cache::Cache;
    use kube::runtime::watcher::Event;
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    /// A Service as the apiserver sends it after `kubectl apply` and a status write: managed
    /// fields of two managers, the last-applied annotation, every spec field set.
    fn full_service(cluster_ips: bool) -> Service {
        let mut v = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "8d0c7c2e-0000-4000-8000-000000000001",
                "resourceVersion": "4711",
                "generation": 3,
                "creationTimestamp": "2026-11-29T10:00:00Z",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"}}",
                    "metallb.universe.tf/address-pool": "l2",
                    "metallb.universe.tf/allow-shared-ip": "k1",
                    "example.com/owner": "team-a"
                },
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                     "time": "2026-11-29T10:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                                             "f:selector": {}, "f:type": {}}}},
                    {"manager": "ferrolb-controller", "operation": "Update", "apiVersion": "v1",
                     "time": "2026-11-29T10:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}}
                ]
            },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "ferrolb",
                "clusterIP": "198.51.100.9",
                "ipFamilies": ["IPv6", "IPv4"],
                "ipFamilyPolicy": "RequireDualStack",
                "loadBalancerIP": "192.0.2.100",
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Cluster",
                "healthCheckNodePort": 31000,
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "allocateLoadBalancerNodePorts": true,
                "externalIPs": ["203.0.113.7"],
                "loadBalancerSourceRanges": ["192.0.2.0/24"],
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080, "appProtocol": "http"},
                    {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns", "nodePort": 30053},
                    {"name": "noproto", "port": 8443, "targetPort": 8443}
                ]
            },
            "status": {
                "loadBalancer": {"ingress": [
                    {"ip": "192.0.2.100", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                    {"hostname": "lb.example.com"},
                    {"ip": "2001:db8::64"}
                ]},
                "conditions": [{"type": "Ready", "status": "True", "reason": "x", "message": "y",
                                "lastTransitionTime": "2026-11-29T10:00:01Z"}]
            }
        });
        if cluster_ips {
            v["spec"]["clusterIPs"] = serde_json::json!(["2001:db8::1", "198.51.100.9"]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_cached_service_keeps_what_the_speaker_reads_and_its_event_reference() {
        use kube::Resource;
        let mut variants = vec![full_service(true), full_service(false)];
        let mut other = full_service(true);
        other.spec.as_mut().unwrap().load_balancer_class = Some("someone-else".into());
        other.spec.as_mut().unwrap().external_traffic_policy = None;
        variants.push(other);
        let mut cip = full_service(false);
        cip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        cip.status = None;
        variants.push(cip);
        let mut bare = svc("bare", &[], "Cluster");
        bare.spec = None;
        variants.push(bare);
        for full in variants {
            let want = service_view(&full);
            let got = cached_service(full.clone());
            let v = &got.view;
            // What the speaker reads is what the controller's conversion gives ...
            assert_eq!(v.key, want.key);
            assert_eq!(v.is_load_balancer, want.is_load_balancer);
            assert_eq!(v.load_balancer_class, want.load_balancer_class);
            assert_eq!(v.external_traffic_policy, want.external_traffic_policy);
            assert_eq!(v.ingress_ips, want.ingress_ips);
            for class in ["ferrolb", "someone-else", ""] {
                assert_eq!(is_ours(v, class), is_ours(&want, class));
                let ips = |a: Vec<AssignedService>| -> Vec<(ServiceKey, Vec<IpAddr>)> {
                    a.into_iter().map(|s| (s.key, s.ips)).collect()
                };
                assert_eq!(
                    ips(assigned_views([v], class)),
                    ips(assigned_views([&want], class))
                );
            }
            // ... and the Event points at the same object.
            assert_eq!(got.object_ref(), full.object_ref(&()));
            // The rest is not kept.
            assert!(v.annotations.is_empty() && v.labels.is_empty() && v.selector.is_empty());
            assert!(v.ports.is_empty() && v.cluster_ips.is_empty() && v.ip_families.is_empty());
            assert_eq!(v.load_balancer_ip, None);
        }
        let full = full_service(true);
        let got = cached_service(full.clone());
        assert_eq!(
            got.view.ingress_ips.len(),
            2,
            "the hostname entry has no IP"
        );
        assert_eq!(got.meta.resource_version.as_deref(), Some("4711"));
        assert_eq!(
            assigned_views([&got.view], "ferrolb")[0].ips,
            service_view(&full).ingress_ips
        );
    }

    #[test]
    fn a_cached_slice_keeps_its_service_and_the_nodes_that_count() {
        let full: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-x1",
                "namespace": "shop",
                "resourceVersion": "12",
                "labels": {"kubernetes.io/service-name": "web",
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                     "uid": "8d0c7c2e-0000-4000-8000-000000000001"}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                                   "apiVersion": "discovery.k8s.io/v1", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:endpoints": {}}}]
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.51.100.1"], "nodeName": "node-c",
                 "conditions": {"ready": true, "serving": true, "terminating": false},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
                 "zone": "z1"},
                {"addresses": ["198.51.100.2"], "nodeName": "node-b",
                 "conditions": {"ready": false}},
                {"addresses": ["198.51.100.3"], "nodeName": "node-a"},
                {"addresses": ["198.51.100.5"], "nodeName": "node-a"},
                {"addresses": ["198.51.100.4"], "conditions": {"ready": true}}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let web = ServiceKey::new("shop", "web");
        assert_eq!(
            cached_slice(full.clone()),
            CachedSlice {
                service: Some(web.clone()),
                ready_nodes: vec!["node-a".into(), "node-c".into()],
            }
        );
        let mut unlabelled = full.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(cached_slice(unlabelled.clone()).service, None);
        let mut none_ready = full.clone();
        none_ready.metadata.labels = Some(BTreeMap::from([(
            SERVICE_NAME_LABEL.to_string(),
            "idle".to_string(),
        )]));
        none_ready
            .endpoints
            .retain(|e| e.node_name.as_deref() == Some("node-b"));
        let r = ready(&[
            full,
            unlabelled,
            none_ready,
            slice("web", &[("node-d", Some(true))]),
        ]);
        assert!(["node-a", "node-c"].iter().all(|n| r.ready_on(&web, n)));
        assert!(!r.ready_on(&web, "node-b"));
        assert!(!r.ready_on(&web, "node-d"), "another namespace's slice");
        assert!(r.ready_on(&ServiceKey::new("default", "web"), "node-d"));
        assert!(!r.ready_anywhere(&ServiceKey::new("shop", "idle")));
    }

    #[test]
    fn only_our_load_balancers_with_addresses() {
        let mut other_class = svc("other", &["192.0.2.101"], "Cluster");
        other_class.spec.as_mut().unwrap().load_balancer_class = Some("someone-else".into());
        let mut cluster_ip = svc("cip", &["192.0.2.102"], "Cluster");
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let mut mine = svc("mine", &["192.0.2.103"], "Cluster");
        mine.spec.as_mut().unwrap().load_balancer_class = Some("ferrolb".into());
        let all = [
            svc("web", &["192.0.2.100", "2001:db8::1"], "Local"),
            svc("pending", &[], "Cluster"),
            other_class,
            cluster_ip,
            mine,
        ];
        let got = assigned_services(&all, "ferrolb");
        let names: Vec<&str> = got.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(names, vec!["mine", "web"]);
        assert_eq!(
            got[1].ips,
            vec![
                "192.0.2.100".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(
            got[1].external_traffic_policy,
            ferrolb_config::TrafficPolicy::Local
        );
    }

    #[test]
    fn readiness_by_node_from_slices() {
        let mut unlabelled = slice("x", &[("node-c", None)]);
        unlabelled.metadata.labels = None;
        let r = ready(&[
            slice("web", &[("node-a", Some(true)), ("node-b", Some(false))]),
            // A second slice of the same Service; nil `ready` means ready.
            slice("web", &[("node-c", None)]),
            slice("idle", &[("node-a", Some(false))]),
            unlabelled,
        ]);
        let web = ServiceKey::new("default", "web");
        assert!(r.ready_on(&web, "node-a"));
        assert!(!r.ready_on(&web, "node-b"));
        assert!(r.ready_on(&web, "node-c"));
        let idle = ServiceKey::new("default", "idle");
        assert!(!r.ready_anywhere(&idle));
        assert!(!r.ready_anywhere(&ServiceKey::new("default", "x")));
    }

    fn service(name: &str, rv: &str, ip: &str) -> Service {
        use k8s_openapi::api::core::v1::{
            LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
        };
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..LoadBalancerIngress::default()
                    }]),
                }),
                ..ServiceStatus::default()
            }),
        }
    }

    #[test]
    fn the_service_cache_keeps_each_service_converted_as_it_arrives() {
        let mut cache: Cache<Service, CachedService> = Cache::new(cached_service);
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(service("a", "1", "192.0.2.1")));
        cache.apply(Event::InitApply(service("b", "1", "192.0.2.2")));
        assert!(cache.apply(Event::InitDone));
        let ips = |c: &Cache<Service, CachedService>| -> Vec<String> {
            c.items()
                .values()
                .flat_map(|s| s.view.ingress_ips.iter().map(|ip| ip.to_string()))
                .collect()
        };
        assert_eq!(ips(&cache), vec!["192.0.2.1", "192.0.2.2"]);
        assert_eq!(
            cache.items()["default/a"].object_ref().name.as_deref(),
            Some("a")
        );
        // An update replaces the kept view; a deleted Service's goes.
        assert!(cache.apply(Event::Apply(service("a", "2", "192.0.2.9"))));
        assert!(cache.apply(Event::Delete(service("b", "1", "192.0.2.2"))));
        assert!(cache.apply(Event::Apply(service("c", "3", "192.0.2.3"))));
        assert_eq!(ips(&cache), vec!["192.0.2.9", "192.0.2.3"]);
        assert_eq!(
            cache.items()["default/a"].meta.resource_version.as_deref(),
            Some("2")
        );
        let assigned = assigned_views(cache.items().values().map(|s| &s.view), "");
        assert_eq!(assigned.len(), 2);
        cache.apply(Event::Delete(service("a", "2", "")));
        cache.apply(Event::Delete(service("c", "3", "")));
        assert!(
            cache.items().is_empty(),
            "nothing kept for deleted Services"
        );
    }
}
