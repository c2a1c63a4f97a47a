use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Community, LargeCommunity, Protocol};
use crate::{parse, parse_with_warnings, ConfigError, InputForm};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn problems(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("invalid")
        .iter()
        .map(ConfigError::to_string)
        .collect()
}

/// MetalLB's documentation, "Layer 2 configuration" (pool and advertisement, unchanged).
const DOCS_LAYER2: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
spec:
  addresses:
  - 192.168.1.240-192.168.1.250
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
";

#[test]
fn metallb_docs_layer2_reads_as_the_configmap_layer2_pool() {
    let crds = parse_with_warnings(DOCS_LAYER2).expect("valid");
    assert_eq!(crds.form, InputForm::CustomResources);
    let cm = parse(
        "address-pools:\n- name: first-pool\n  protocol: layer2\n  addresses: [192.168.1.240-192.168.1.250]\n",
    )
    .expect("valid");
    assert_eq!(crds.config, cm);
}

/// MetalLB's documentation, "BGP configuration" and "Advanced BGP configuration" (communities,
/// local preference, node selectors, peers), as one file.
const DOCS_BGP: &str = "
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: sample
  namespace: metallb-system
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 10.0.0.1
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: peer2
  namespace: metallb-system
spec:
  myASN: 64500
  peerASN: 64502
  peerAddress: 10.0.0.2
  nodeSelectors:
  - matchLabels:
      rack: frontend
    matchExpressions:
    - key: network-speed
      operator: NotIn
      values: [slow]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: communities
  namespace: metallb-system
spec:
  communities:
  - name: NO_ADVERTISE
    value: 65535:65282
  - name: big
    value: large:4200000000:1:2
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: bgp-pool
  namespace: metallb-system
  labels:
    zone: east
spec:
  addresses:
  - 198.51.100.0/24
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: local
  namespace: metallb-system
spec:
  ipAddressPools:
  - bgp-pool
  aggregationLength: 32
  localPref: 100
  communities:
  - NO_ADVERTISE
  - big
  - 64500:7
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: external
  namespace: metallb-system
spec:
  ipAddressPoolSelectors:
  - matchLabels:
      zone: east
  aggregationLength: 24
  peers: [peer2]
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: NodeA
";

#[test]
fn metallb_docs_bgp_with_communities_selectors_and_peers() {
    let cfg = parse(DOCS_BGP).expect("valid");
    assert_eq!(
        cfg.peers
            .iter()
            .map(|p| p.name.as_deref())
            .collect::<Vec<_>>(),
        vec![Some("peer2"), Some("sample")]
    );
    assert_eq!(cfg.peers[1].hold_time.as_secs(), 90);
    let pool = cfg.pool("bgp-pool").expect("the pool");
    assert_eq!(pool.protocol, Protocol::Bgp);
    let [external, local] = pool.bgp_advertisements.as_slice() else {
        panic!("two advertisements: {:?}", pool.bgp_advertisements);
    };
    // Objects are read in name order: "external" before "local".
    assert_eq!(external.aggregation_length, 24);
    assert_eq!(external.peers, vec!["peer2".to_string()]);
    assert_eq!(local.local_pref, Some(100));
    assert_eq!(
        local.communities,
        vec![Community::new(65535, 65282), Community::new(64500, 7)]
    );
    assert_eq!(
        local.large_communities,
        vec![LargeCommunity {
            global_admin: 4_200_000_000,
            local_data1: 1,
            local_data2: 2
        }]
    );
    let node_a = labels(&[("kubernetes.io/hostname", "NodeA")]);
    let node_b = labels(&[("kubernetes.io/hostname", "NodeB")]);
    assert!(external.applies_to(&cfg.peers[0], &node_a));
    assert!(!external.applies_to(&cfg.peers[1], &node_a), "only peer2");
    assert!(!external.applies_to(&cfg.peers[0], &node_b), "only NodeA");
    assert!(local.applies_to(&cfg.peers[1], &node_b));
    assert_eq!(cfg.communities.len(), 1);
    assert_eq!(cfg.large_communities.len(), 1);
}

#[test]
fn a_pool_no_advertisement_selects_is_not_announced_and_one_both_select_is_announced_both_ways() {
    let text = "
apiVersion: v1
kind: List
items:
- apiVersion: metallb.io/v1beta1
  kind: IPAddressPool
  metadata: {name: quiet}
  spec: {addresses: [192.0.2.0/28]}
- apiVersion: metallb.io/v1beta1
  kind: IPAddressPool
  metadata: {name: both}
  spec: {addresses: [192.0.2.16/28]}
- apiVersion: metallb.io/v1beta1
  kind: L2Advertisement
  metadata: {name: l2}
  spec: {ipAddressPools: [both], interfaces: [eth1]}
- apiVersion: metallb.io/v1beta1
  kind: BGPAdvertisement
  metadata: {name: b}
  spec: {ipAddressPools: [both]}
";
    let cfg = parse(text).expect("valid");
    let quiet = cfg.pool("quiet").expect("pool");
    assert_eq!(quiet.protocol, Protocol::Unannounced);
    assert!(!quiet.protocol.layer2() && !quiet.protocol.bgp());
    assert_eq!(quiet.layer2_interfaces_on(&BTreeMap::new()), None);
    let both = cfg.pool("both").expect("pool");
    assert_eq!(both.protocol, Protocol::Layer2AndBgp);
    assert_eq!(
        both.layer2_interfaces_on(&BTreeMap::new()),
        Some(vec!["eth1".to_string()])
    );
    assert_eq!(both.bgp_advertisements.len(), 1);
}

#[test]
fn l2_node_selectors_pick_the_announcing_nodes_and_their_interfaces() {
    let text = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p}
spec: {addresses: [192.0.2.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a}
spec:
  interfaces: [eth1]
  nodeSelectors: [{matchLabels: {rack: a}}]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: b}
spec:
  interfaces: [eth2]
  nodeSelectors: [{matchExpressions: [{key: rack, operator: In, values: [a, b]}]}]
";
    let pool = parse(text).expect("valid").pools.remove(0);
    assert_eq!(pool.protocol, Protocol::Layer2);
    assert_eq!(pool.l2_advertisements.len(), 2);
    let on = |rack: &str| pool.layer2_interfaces_on(&labels(&[("rack", rack)]));
    assert_eq!(on("a"), Some(vec!["eth1".to_string(), "eth2".to_string()]));
    assert_eq!(on("b"), Some(vec!["eth2".to_string()]));
    assert_eq!(on("c"), None);
}

#[test]
fn service_allocation_matches_namespaces_by_name_and_label_and_services_by_label() {
    let text = "
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {team: b}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: ns-pool, namespace: metallb-system}
spec:
  addresses: [192.0.2.0/28]
  serviceAllocation:
    priority: 50
    namespaces: [extra]
    namespaceSelectors: [{matchLabels: {team: a}}]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: svc-pool, namespace: metallb-system}
spec:
  addresses: [192.0.2.16/28]
  serviceAllocation:
    serviceSelectors: [{matchExpressions: [{key: tier, operator: In, values: [web]}]}]
";
    let cfg = parse(text).expect("valid");
    let ns = cfg.pool("ns-pool").expect("pool");
    let alloc = ns.service_allocation.as_ref().expect("allocation");
    assert_eq!(alloc.priority, 50);
    assert_eq!(
        alloc.namespaces,
        Some(BTreeSet::from(["extra".to_string(), "team-a".to_string()]))
    );
    assert!(ns.serves_unasked("team-a", &BTreeMap::new()));
    assert!(!ns.serves_unasked("team-b", &BTreeMap::new()));
    let svc = cfg.pool("svc-pool").expect("pool");
    assert!(svc.serves_unasked("any", &labels(&[("tier", "web")])));
    assert!(!svc.serves_unasked("any", &labels(&[("tier", "db")])));
    assert_eq!(svc.protocol, Protocol::Unannounced);
}

#[test]
fn password_secret_dynamic_asn_internal_and_a_lone_keepalive() {
    let text = "
apiVersion: v1
kind: Secret
metadata: {name: bgp-auth, namespace: metallb-system}
type: kubernetes.io/basic-auth
data: {password: aHVudGVyMg==}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: p, namespace: metallb-system}
spec:
  myASN: 64512
  dynamicASN: internal
  peerAddress: 192.0.2.1
  keepaliveTime: 20s
  passwordSecret: {name: bgp-auth, namespace: metallb-system}
  vrf: ''
  disableMP: false
";
    let cfg = parse(text).expect("valid");
    let peer = &cfg.peers[0];
    assert_eq!(peer.peer_asn, 64512);
    assert_eq!(peer.password.as_deref(), Some("hunter2"));
    assert_eq!(
        (peer.hold_time.as_secs(), peer.keepalive_time.as_secs()),
        (60, 20)
    );
}

#[test]
fn every_problem_names_the_object_and_the_field() {
    let text = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a, namespace: metallb-system}
spec:
  addresses: [192.0.2.0/33, 192.0.2.0/28]
  autoassign: false
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b, namespace: metallb-system}
spec:
  addresses: [192.0.2.8-192.0.2.9]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: r, namespace: metallb-system}
spec:
  myASN: 64512
  peerAsn: 64513
  peerAddress: 192.0.2.300
  holdTime: 1s
  vrf: red
  bfdProfile: fast
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: adv, namespace: metallb-system}
spec:
  ipAddressPools: [a, missing]
  aggregationLength: 16
  communities: [no-such-alias]
  peers: [nobody]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  serviceSelectors: [{matchLabels: {a: b}}]
";
    assert_eq!(
        problems(text),
        vec![
            "BGPPeer metallb-system/r spec.vrf = \"red\": ferrolb does not implement vrf: sessions are opened in the node's default VRF only",
            "BGPPeer metallb-system/r spec.peerAsn: unknown field; did you mean `peerASN`?",
            "BGPPeer metallb-system/r spec.peerASN: required: the peer AS number (1 to 4294967295)",
            "BGPPeer metallb-system/r spec.peerAddress = \"192.0.2.300\": not an IP address",
            "BGPPeer metallb-system/r spec.holdTime = \"1s\": must be 0 or at least 3s (rounded down to whole seconds it is 1s)",
            "BGPPeer metallb-system/r spec.bfdProfile = \"fast\": no bfd-profiles entry has this name (and ferrolb has no BFD yet: remove bfd-profile from this peer)",
            "IPAddressPool metallb-system/a spec.autoassign: unknown field; did you mean `autoAssign`?",
            "IPAddressPool metallb-system/a spec.addresses[0] = \"192.0.2.0/33\": invalid prefix length \"33\" (0 to 32)",
            "IPAddressPool metallb-system/b spec.addresses[0] = \"192.0.2.8-192.0.2.9\": overlaps IPAddressPool metallb-system/a spec.addresses[1] (\"192.0.2.0/28\") of pool \"a\"",
            "L2Advertisement metallb-system/l2 spec.serviceSelectors = \"a list\": ferrolb does not implement serviceSelectors: an advertisement announces every Service of its pools; split the pool instead",
            "BGPAdvertisement metallb-system/adv spec.ipAddressPools[1] = \"missing\": no IPAddressPool has this name",
            "BGPAdvertisement metallb-system/adv spec.peers[0] = \"nobody\": no BGPPeer has this name",
            "BGPAdvertisement metallb-system/adv spec.communities[0] = \"no-such-alias\": not an alias of a Community object, and not a community of the form AA:NN",
        ]
    );
}

#[test]
fn objects_are_checked_as_objects() {
    let text = "
apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata: {name: old}
spec: {myASN: 1, peerASN: 2, peerAddress: 192.0.2.1}
---
apiVersion: metallb.io/v1beta1
kind: AddressPool
metadata: {name: legacy}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: twice}
spec: {addresses: [192.0.2.0/30]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: twice}
spec: {addresses: [198.51.100.0/30]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {namespace: x}
spec: {addresses: [203.0.113.0/30]}
---
apiVersion: metallb.io/v1beta1
kind: ServiceL2Status
metadata: {name: ignored}
";
    assert_eq!(
        problems(text),
        vec![
            "<input>[1].kind = \"AddressPool\": not a MetalLB configuration kind (expected one of: IPAddressPool, L2Advertisement, BGPAdvertisement, Community, BGPPeer, BFDProfile)",
            "IPAddressPool <input>[4] metadata.name: required: a name",
        ]
    );
    let fixed = text
        .replace("kind: AddressPool", "kind: IPAddressPool")
        .replace(
            "metadata: {namespace: x}",
            "metadata: {name: named, namespace: x}",
        );
    assert_eq!(
        problems(&fixed),
        vec![
            "IPAddressPool twice metadata.name = \"twice\": defined twice",
            "IPAddressPool legacy spec.addresses: required: at least one CIDR or start-end range"
        ]
    );
}

#[test]
fn skipped_objects_are_warnings_and_a_mixed_input_is_refused() {
    let text =
        format!("{DOCS_LAYER2}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n");
    let parsed = parse_with_warnings(&text).expect("valid");
    assert_eq!(parsed.warnings.len(), 1);
    assert_eq!(parsed.warnings[0].path, "<input>[2].kind");
    let mixed = format!("{DOCS_LAYER2}---\naddress-pools: []\n");
    let e = parse(&mixed).expect_err("refused");
    assert!(e.0[0].reason.contains("both"), "{e}");
}

#[test]
fn bfd_profiles_read_by_the_configmap_rules() {
    let text = "
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 380, transmitInterval: 5, detectMultiplier: 3}
";
    assert_eq!(
        problems(text),
        vec!["BFDProfile metallb-system/fast spec.transmitInterval = \"5\": must be from 10 to 60000 (milliseconds)"]
    );
    let cfg = parse(&text.replace("transmitInterval: 5", "transmitInterval: 270")).expect("valid");
    assert_eq!(cfg.bfd_profiles[0].name, "fast");
    assert_eq!(cfg.bfd_profiles[0].transmit_interval_ms, Some(270));
}

#[test]
fn natural_order_compares_numbers_by_value() {
    use std::cmp::Ordering::*;
    assert_eq!(super::natural("peer2", "peer10"), Less);
    assert_eq!(super::natural("peer10", "peer10"), Equal);
    assert_eq!(super::natural("a", "b"), Less);
    assert_eq!(super::natural("peer01", "peer1"), Equal);
    assert_eq!(super::natural("x9y", "x10a"), Less);
}
