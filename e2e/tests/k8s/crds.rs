//! MetalLB's custom resources against a real kube-apiserver 1.20.2: `manifests/base/crds.yaml`
//! applied, MetalLB's documented objects (addresses in the documentation ranges) configure the
//! controller, wrong objects are rejected at apply by the schemas or refused with their object,
//! field and value named, a breaking change is refused exactly as a ConfigMap one (and loads once
//! the offending Service is gone), both sources present and disagreeing is an error, a
//! MetalLB 0.12 ConfigMap and `ferrolb config convert` of it give the same addresses, and
//! speakers announce as the advertisements say (layer2 only from the selected node; BGP with the
//! communities, large ones included, only from the selected node).

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::Context;
use ferrolb_crds::types::{ConfigurationState, IPAddressPool, ServiceBGPStatus, ServiceL2Status};
use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{
    all_ingress, apply_config, create_lb, create_lb_with_ip, label_node, set_endpoints,
    wait_event_note_in, wait_ingress, Svc,
};
use ferrolb_e2e::k8s::speaker_lab::{SpeakerLab, BGP_BIRD};
use ferrolb_e2e::k8s::{self, setup, TestEnv, WAIT};
use ferrolb_e2e::prereq::{require, Need::Program};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams};
use kube::Api;

/// Polls `read` until `ok` holds for what it returns (or the wait ends: the last value shown).
async fn until<T: std::fmt::Debug, F, Fut>(
    what: &str,
    read: F,
    ok: impl Fn(&T) -> bool,
) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = read().await?;
        if ok(&v) {
            return Ok(v);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{what}: still {v:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `(node, namespace/service, interfaces or peers)` of a status object.
type Row = (String, String, Vec<String>);

/// Every ServiceL2Status and ServiceBGPStatus in `ns`.
async fn statuses(client: &kube::Client, ns: &str) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let l2 = Api::<ServiceL2Status>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.status)
        .map(|s| {
            let items = s.interfaces.into_iter().map(|i| i.name).collect();
            (
                s.node,
                format!("{}/{}", s.service_namespace, s.service_name),
                items,
            )
        })
        .collect();
    let bgp = Api::<ServiceBGPStatus>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.status)
        .map(|s| {
            (
                s.node,
                format!("{}/{}", s.service_namespace, s.service_name),
                s.peers,
            )
        })
        .collect();
    Ok((l2, bgp))
}

/// ConfigurationState `name` in `ns`, once its `result` is `want`.
async fn state_result(
    client: &kube::Client,
    ns: &str,
    name: &str,
    want: &str,
) -> anyhow::Result<ConfigurationState> {
    let api: Api<ConfigurationState> = Api::namespaced(client.clone(), ns);
    let got = until(
        &format!("ConfigurationState {name} {want}"),
        || async { Ok(api.get_opt(name).await?) },
        |s| {
            s.as_ref()
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.result.as_deref())
                == Some(want)
        },
    )
    .await?;
    got.context("read")
}

/// MetalLB's "Layer 2 configuration" and "Advanced AddressPool configuration" examples, in
/// `ns`, addresses moved into the documentation ranges; the second pool's namespace selector
/// picks namespace `team`.
fn docs(ns: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: {ns}
spec:
  addresses:
  - 192.0.2.240-192.0.2.250
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: ippool-ns-service-alloc-sample
  namespace: {ns}
spec:
  addresses:
    - 198.51.100.0/24
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces:
      - namespace-a
      - namespace-b
    namespaceSelectors:
      - matchLabels:
          foo: bar
    serviceSelectors:
      - matchExpressions:
          - {{key: app, operator: In, values: [bar]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: example
  namespace: {ns}
"
    )
}

async fn start(ns: &str) -> anyhow::Result<(TestEnv, kube::Client)> {
    let (env, client) = setup(ns).await?;
    let crds = ferrolb_e2e::workspace_root().join("manifests/base/crds.yaml");
    env.apply_manifest(&crds).await?;
    Ok((env, client))
}

/// `kubectl apply`'s answer to `yaml`: the apiserver's refusal, or `None` when applied.
async fn refused(env: &TestEnv, yaml: &str) -> Option<String> {
    env.apply_yaml(yaml).await.err().map(|e| format!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_config_assigns_refuses_breaking_and_wrong_changes_and_conflicts() -> anyhow::Result<()>
{
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let ns = "flb-crds";
    let (env, client) = start(ns).await?;
    // The schemas reject wrong types, operators and ranges at apply.
    for (what, bad) in [
        ("a port out of range", "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: p, namespace: flb-crds}\nspec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1, peerPort: 70000}\n"),
        ("a wrong operator", "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l, namespace: flb-crds}\nspec: {nodeSelectors: [{matchExpressions: [{key: a, operator: Near}]}]}\n"),
        ("no addresses", "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: e, namespace: flb-crds}\nspec: {addresses: []}\n"),
        ("a string for a number", "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b, namespace: flb-crds}\nspec: {aggregationLength: twenty}\n"),
    ] {
        assert!(refused(&env, bad).await.is_some(), "{what} was accepted");
    }
    env.apply_yaml(&docs(ns)).await?;
    env.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: labelled, labels: {foo: bar}}\n",
    )
    .await?;
    let ctl = Controller::start(&env, ns, &[])?;
    ctl.wait_ready().await?;

    // A Service anywhere: the first pool; one with app=bar in a selected namespace: the pinned
    // pool (avoidBuggyIPs skips .0); the new annotation name picks a pool.
    create_lb(&client, ns, "web", Svc::default()).await?;
    assert_eq!(wait_ingress(&client, ns, "web").await?, vec!["192.0.2.240"]);
    let pinned = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bar", "namespace": "labelled", "labels": {"app": "bar"}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
    });
    Api::<Service>::namespaced(client.clone(), "labelled")
        .create(&Default::default(), &serde_json::from_value(pinned)?)
        .await?;
    assert_eq!(
        wait_ingress(&client, "labelled", "bar").await?,
        vec!["198.51.100.1"]
    );
    create_lb(
        &client,
        ns,
        "asks",
        Svc {
            annotations: &[("metallb.io/address-pool", "first-pool")],
            ..Svc::default()
        },
    )
    .await?;
    assert_eq!(
        wait_ingress(&client, ns, "asks").await?,
        vec!["192.0.2.241"]
    );
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 0.0)
        .await?;
    // Status: the configuration is valid, the pools count what they hand out.
    state_result(&client, ns, "controller", "Valid").await?;
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), ns);
    let counts = |name: &'static str| {
        let pools = pools.clone();
        async move {
            Ok(pools
                .get(name)
                .await?
                .status
                .map(|s| (s.assigned_ipv4, s.available_ipv4, s.assigned_ipv6)))
        }
    };
    until(
        "first-pool counts",
        || counts("first-pool"),
        |c| *c == Some((2, 9, 0)),
    )
    .await?;
    until(
        "pinned pool counts",
        || counts("ippool-ns-service-alloc-sample"),
        |c| *c == Some((1, 253, 0)),
    )
    .await?;

    // A value the schema cannot judge: refused, the object, field and value named in a Warning
    // Event on that object; nothing assigned moves.
    env.apply_yaml(&docs(ns).replace("192.0.2.240-192.0.2.250", "192.0.2.0/33"))
        .await?;
    let field = format!("IPAddressPool {ns}/first-pool spec.addresses[0] = \"192.0.2.0/33\"");
    wait_event_note_in(&client, ns, "first-pool", "ConfigStale", &field).await?;
    let invalid = state_result(&client, ns, "controller", "Invalid").await?;
    let summary = invalid
        .status
        .and_then(|s| s.error_summary)
        .unwrap_or_default();
    assert!(summary.contains(&field), "{summary}");
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 1.0)
        .await?;
    assert_eq!(wait_ingress(&client, ns, "web").await?, vec!["192.0.2.240"]);

    // A breaking change (the pool no longer holds web's address): refused like a ConfigMap's,
    // loaded once web is gone.
    env.apply_yaml(&docs(ns).replace("192.0.2.240-192.0.2.250", "192.0.2.241-192.0.2.250"))
        .await?;
    let broken = format!("it would break service {ns}/web ip 192.0.2.240");
    wait_event_note_in(&client, ns, "first-pool", "ConfigStale", &broken).await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 1.0)
        .await?;
    Api::<Service>::namespaced(client.clone(), ns)
        .delete("web", &DeleteParams::default())
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 0.0)
        .await?;
    assert_eq!(
        wait_ingress(&client, ns, "asks").await?,
        vec!["192.0.2.241"]
    );

    // A ConfigMap that means something else beside the objects: an error, the configuration in
    // force stays; deleting the ConfigMap settles it.
    apply_config(
        &client,
        ns,
        "address-pools:\n- {name: other, protocol: layer2, addresses: [203.0.113.0/28]}\n",
    )
    .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 1.0)
        .await?;
    wait_event_note_in(&client, ns, "config", "ConfigStale", "both ConfigMap").await?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .delete("config", &DeleteParams::default())
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool", 0.0)
        .await?;
    Ok(())
}

/// Services asking for nothing, for a pool, for an address: what a controller gives them.
async fn assign_all(
    client: &kube::Client,
    ns: &str,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    for name in ["a", "b", "c"] {
        create_lb(client, ns, name, Svc::default()).await?;
    }
    create_lb(
        client,
        ns,
        "pool",
        Svc {
            annotations: &[("metallb.universe.tf/address-pool", "my-ip-space")],
            ..Svc::default()
        },
    )
    .await?;
    create_lb(
        client,
        ns,
        "fixed",
        Svc {
            load_balancer_ip: Some("203.0.113.9"),
            ..Svc::default()
        },
    )
    .await?;
    for name in ["a", "b", "c", "pool", "fixed"] {
        wait_ingress(client, ns, name).await?;
    }
    all_ingress(client, ns).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_and_its_conversion_give_the_same_addresses() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let fixture =
        ferrolb_e2e::workspace_root().join("config/tests/data/valid/metallb-example-config.yaml");
    // First the ConfigMap, alone.
    let ns = "flb-cm";
    let (env, client) = start(ns).await?;
    let text = std::fs::read_to_string(&fixture)?
        .replace("namespace: metallb-system", &format!("namespace: {ns}"));
    let cm = env.state_dir().join("cm.yaml");
    std::fs::write(&cm, &text)?;
    env.apply_manifest(&cm).await?;
    let mut ctl = Controller::start(&env, ns, &["--config-source", "configmap"])?;
    ctl.wait_ready().await?;
    let from_map = assign_all(&client, ns).await?;
    ctl.terminate()?;
    drop(env);

    // Then `config convert` of it, in a fresh cluster.
    let (env, client) = start(ns).await?;
    let out = Command::new(ferrolb_e2e::ferrolb_bin()?)
        .args(["config", "convert", "--namespace", ns])
        .arg(&fixture)
        .output()
        .context("config convert")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.apply_yaml(&String::from_utf8(out.stdout)?).await?;
    let ctl = Controller::start(&env, ns, &["--config-source", "crds"])?;
    ctl.wait_ready().await?;
    let from_crds = assign_all(&client, ns).await?;
    assert_eq!(from_map, from_crds);
    // The lowest address of my-ip-space (its second range sorts first; nothing is sent to it).
    assert_eq!(from_crds["pool"], vec!["192.168.0.150"]);
    assert_eq!(from_crds["a"], vec!["203.0.113.0"]);
    assert_eq!(from_crds["fixed"], vec!["203.0.113.9"]);
    let crs = Api::<Service>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    assert_eq!(crs.items.len(), 5);
    drop(ctl);
    Ok(())
}

/// The speaker lab's configuration as MetalLB's objects: a layer2 pool announced only from nodes
/// labelled `l2: yes`, a BGP pool announced to the router (BIRD) with a community alias and a
/// large community, only from nodes labelled `bgp: yes`.
const LAB: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: l2, namespace: metallb-system}
spec: {addresses: [192.0.2.100-192.0.2.110]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2-on-labelled-nodes, namespace: metallb-system}
spec:
  ipAddressPools: [l2]
  nodeSelectors: [{matchLabels: {l2: 'yes'}}]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bgp, namespace: metallb-system}
spec: {addresses: [203.0.113.10/32]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.254}
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec:
  communities:
  - {name: tagged, value: '64512:7'}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bgp-from-labelled-nodes, namespace: metallb-system}
spec:
  ipAddressPools: [bgp]
  peers: [router]
  communities: [tagged, 'large:64512:1:2']
  nodeSelectors: [{matchLabels: {bgp: 'yes'}}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_speakers_announce_as_the_advertisements_select() -> anyhow::Result<()> {
    if !require(&k8s::lab_needs(&[Program("bird"), Program("birdc")]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let mut lab = SpeakerLab::new(&env, 2).await?;
    let router = lab.add_host("krt", "192.0.2.254/24")?;
    let bird = ferrolb_e2e::routers::Bird::start(&router, &lab.dir, BGP_BIRD)?;
    env.apply_manifest(&ferrolb_e2e::workspace_root().join("manifests/base/crds.yaml"))
        .await?;
    env.apply_yaml(LAB).await?;
    label_node(&client, "node-b", "l2", Some("yes")).await?;
    label_node(&client, "node-a", "bgp", Some("yes")).await?;
    let vip = "192.0.2.100";
    create_lb_with_ip(&client, "web", "Cluster", vip).await?;
    set_endpoints(&client, "web", &[("node-a", true)]).await?;
    let bgp_vip = "203.0.113.10";
    create_lb_with_ip(&client, "bgp-web", "Cluster", bgp_vip).await?;
    set_endpoints(&client, "bgp-web", &[("node-b", true)]).await?;
    lab.start_speaker(0, &[])?;
    lab.start_speaker(1, &[])?;

    // Layer2: only node-b is selected, whatever the hash would choose.
    let b = lab.wait_answered_by(vip, None, WAIT)?;
    assert_eq!(lab.nodes[b].name, "node-b", "{}", lab.logs());
    let mac_b = lab.nodes[1].mac.clone();
    assert_eq!(
        lab.arping(vip, 3)?,
        vec![mac_b.clone(), mac_b.clone(), mac_b]
    );
    lab.wait_metric(0, "metallb_k8s_client_config_loaded_bool", 1.0)?;

    // BGP: node-a announces with both communities; node-b peers but announces nothing.
    let deadline = std::time::Instant::now() + WAIT;
    let routes = loop {
        let r = bird.routes("from_a").unwrap_or_default();
        if r.contains(&format!("{bgp_vip}/32")) {
            break r;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no route from node-a at BIRD\n{}",
            lab.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(routes.contains("BGP.community: (64512,7)"), "{routes}");
    assert!(
        routes.contains("BGP.large_community: (64512, 1, 2)"),
        "{routes}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !bird.established("from_b") {
        anyhow::ensure!(std::time::Instant::now() < deadline, "node-b does not peer");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let from_b = bird.routes("from_b")?;
    assert!(
        !from_b.contains(bgp_vip),
        "node-b is not selected: {from_b}"
    );

    // Status objects: the layer2 answerer and the BGP announcer, each once, and each speaker's
    // ConfigurationState.
    let ns = "metallb-system";
    let l2_on = |node: &'static str| {
        move |(l2, _): &(Vec<Row>, Vec<Row>)| {
            l2.len() == 1 && l2[0].0 == node && l2[0].1 == "apps/web"
        }
    };
    until(
        "ServiceL2Status of node-b",
        || statuses(&client, ns),
        l2_on("node-b"),
    )
    .await?;
    let (_, bgp) = until(
        "ServiceBGPStatus of node-a",
        || statuses(&client, ns),
        |(_, b)| !b.is_empty(),
    )
    .await?;
    assert_eq!(
        bgp,
        vec![(
            "node-a".to_string(),
            "apps/bgp-web".to_string(),
            vec!["router".to_string()]
        )]
    );
    for node in ["node-a", "node-b"] {
        state_result(&client, ns, &format!("speaker-{node}"), "Valid").await?;
    }
    // The advertisement's node moves: the status object moves with it.
    label_node(&client, "node-b", "l2", None).await?;
    label_node(&client, "node-a", "l2", Some("yes")).await?;
    until(
        "ServiceL2Status moved to node-a",
        || statuses(&client, ns),
        l2_on("node-a"),
    )
    .await?;
    // The advertisement goes: its status objects go.
    Api::<ferrolb_crds::types::BGPAdvertisement>::namespaced(client.clone(), ns)
        .delete("bgp-from-labelled-nodes", &DeleteParams::default())
        .await?;
    until(
        "ServiceBGPStatus gone",
        || statuses(&client, ns),
        |(_, b)| b.is_empty(),
    )
    .await?;
    // The Service goes: its layer2 status goes.
    Api::<Service>::namespaced(client.clone(), "apps")
        .delete("web", &DeleteParams::default())
        .await?;
    until(
        "ServiceL2Status gone",
        || statuses(&client, ns),
        |(l2, _)| l2.is_empty(),
    )
    .await?;
    Ok(())
}
