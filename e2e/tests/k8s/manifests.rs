//! The Kubernetes manifests (`kubectl apply -k manifests/`) against a real kube-apiserver:
//! every manifest applies server-side (schema-checked), the controller works with a real token
//! of its ServiceAccount and nothing more, the speaker's ServiceAccount may do exactly what the
//! speaker does.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{create_lb, wait_event, wait_ingress, Svc};
use ferrolb_e2e::k8s::{self, TestEnv};
use ferrolb_e2e::prereq::require;
use ferrolb_e2e::procfs;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// `Err(403 Forbidden)` expected: anything else (success, another error) fails the test.
fn expect_forbidden<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, kube::Error>,
) -> anyhow::Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => bail!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// The memory figure `limits.memory` of the first container in a manifest, in bytes
/// (`Mi` / `Gi` suffixes, as the manifests write them).
fn manifest_memory_limit(file: &str) -> anyhow::Result<u64> {
    let path = ferrolb_e2e::workspace_root()
        .join("manifests")
        .join("base")
        .join(file);
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    let limit = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .with_context(|| format!("{file}: no limits.memory"))?;
    let (digits, unit) = limit.split_at(
        limit
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(limit.len()),
    );
    let n: u64 = digits.parse()?;
    match unit {
        "Mi" => Ok(n << 20),
        "Gi" => Ok(n << 30),
        other => bail!("{file}: memory unit {other:?} not handled"),
    }
}

/// Peak and current resident set size of a process, in bytes (`VmHWM`, `VmRSS`).
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    Ok((procfs::hwm_kib(pid)? * 1024, procfs::rss_kib(pid)? * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_apply_and_the_controller_works_with_its_service_account_token(
) -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let manifests = ferrolb_e2e::workspace_root().join("manifests");

    // The apiserver checks applied objects against its schema, so a misspelt field fails: the
    // apply below proves something.
    let bad = env.state_dir().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: default}\nautomountToken: false\n",
    )?;
    assert!(
        env.apply_manifest(&bad).await.is_err(),
        "a misspelt field was accepted by server-side apply"
    );

    // Every manifest of `kubectl apply -k manifests/`, server-side, and the memberlist Secret.
    let applied = env.apply_kustomization(&manifests).await?
        + env
            .apply_manifest(&manifests.join("memberlist-secret.yaml"))
            .await?;
    let ns = "metallb-system";
    let deploy: k8s_openapi::api::apps::v1::Deployment = Api::namespaced(client.clone(), ns)
        .get("controller")
        .await?;
    let spec = deploy.spec.context("Deployment without spec")?;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.context("no pod spec")?;
    assert_eq!(pod.service_account_name.as_deref(), Some("controller"));
    let ds: k8s_openapi::api::apps::v1::DaemonSet =
        Api::namespaced(client.clone(), ns).get("speaker").await?;
    let pod = ds
        .spec
        .and_then(|s| s.template.spec)
        .context("DaemonSet without pod spec")?;
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("speaker"));
    let caps = pod.containers[0]
        .security_context
        .as_ref()
        .and_then(|c| c.capabilities.clone())
        .context("speaker without capabilities")?;
    assert_eq!(caps.add, Some(vec!["NET_RAW".to_string()]));
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get("memberlist")
        .await?;

    // The addon-values example, rendered to the ConfigMap the way the README says.
    let rendered = Command::new(ferrolb_e2e::ferrolb_bin()?)
        .args(["config", "render"])
        .arg(manifests.join("examples").join("cluster.yaml"))
        .output()?;
    assert!(
        rendered.status.success(),
        "config render: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let config_file = env.state_dir().join("config.yaml");
    std::fs::write(&config_file, &rendered.stdout)?;
    let applied_config = env.apply_manifest(&config_file).await?;
    println!("applied {applied} objects from manifests/ and {applied_config} rendered ConfigMap");

    // The controller with a real token of the manifests' ServiceAccount (TokenRequest).
    env.namespace("apps").await?;
    let kubeconfig = env.token_request_kubeconfig(ns, "controller").await?;
    // The Deployment's own args, except the two the harness sets (namespace, and a loopback
    // metrics address instead of 0.0.0.0:7472).
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        manifests.join("base").join("controller.yaml"),
    )?)?;
    let mut args: Vec<String> = doc["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .context("controller.yaml: no args")?
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .filter(|a| !a.starts_with("--namespace=") && !a.starts_with("--metrics-addr="))
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("controller"));
    args.remove(0);
    args.extend(["--identity".to_string(), "controller-0".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ctl = Controller::start_as(&env, &kubeconfig, ns, &args)?;
    ctl.wait_ready().await?;
    ctl.wait_metric("ferrolb_controller_leader_bool", 1.0)
        .await?;
    create_lb(&client, "apps", "web", Svc::default()).await?;
    assert_eq!(
        wait_ingress(&client, "apps", "web").await?,
        vec!["192.168.10.240"],
        "first address of the example's layer2 pool"
    );
    wait_event(&client, "apps", "web", "IPAllocated").await?;
    wait_event(&client, ns, "config", "ConfigLoaded").await?;
    let lease: k8s_openapi::api::coordination::v1::Lease = Api::namespaced(client.clone(), ns)
        .get("ferrolb-controller")
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("controller-0")
    );

    // 100 more Services from the example's bgp pool (auto-assign off: asked for by name), then
    // the controller's memory against the manifest's limit.
    let started = Instant::now();
    for i in 0..100 {
        let svc = Svc {
            annotations: &[("metallb.universe.tf/address-pool", "routed")],
            ..Svc::default()
        };
        create_lb(&client, "apps", &format!("s{i:03}"), svc).await?;
    }
    wait_ingress(&client, "apps", "s099").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (peak, now) = rss(ctl.pid())?;
    let limit = manifest_memory_limit("controller.yaml")?;
    println!(
        "controller with 101 Services (ferrolb binary {}): peak RSS {:.1} MiB, RSS {:.1} MiB, limit {} MiB; 100 Services assigned in {:?}",
        ferrolb_e2e::ferrolb_bin()?.display(),
        peak as f64 / 1048576.0,
        now as f64 / 1048576.0,
        limit >> 20,
        started.elapsed()
    );
    assert!(
        peak * 2 < limit,
        "peak RSS {peak} is more than half of the manifest's memory limit {limit}"
    );

    // Requests outside the controller's RBAC are refused.
    let sa = ferrolb_e2e::k8s::client_for(&kubeconfig).await?;
    // MetalLB's configuration objects: read in metallb-system only, never written; Namespaces
    // read (serviceAllocation.namespaceSelectors).
    for (verb, resource, namespace, allowed) in [
        ("watch", "ipaddresspools", Some(ns), true),
        ("list", "bgppeers", Some(ns), true),
        ("watch", "communities", Some(ns), true),
        ("update", "ipaddresspools", Some(ns), false),
        ("list", "ipaddresspools", Some("apps"), false),
        ("create", "configurationstates", Some(ns), true),
        ("delete", "servicel2statuses", Some(ns), false),
    ] {
        assert_eq!(
            can_i(&sa, verb, "metallb.io", resource, namespace).await?,
            allowed,
            "controller {verb} metallb.io/{resource} in {namespace:?}"
        );
    }
    assert!(can_i(&sa, "watch", "", "namespaces", None).await?);
    assert!(!can_i(&sa, "delete", "", "namespaces", None).await?);
    type Secret = k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), ns);
    expect_forbidden(
        "list Secrets in metallb-system",
        secrets.list(&ListParams::default()).await,
    )?;
    expect_forbidden("get the memberlist Secret", secrets.get("memberlist").await)?;
    expect_forbidden(
        "delete the memberlist Secret",
        secrets.delete("memberlist", &DeleteParams::default()).await,
    )?;
    expect_forbidden(
        "list Secrets in kube-system",
        Api::<Secret>::namespaced(sa.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    )?;
    expect_forbidden(
        "change a Service's spec",
        Api::<Service>::namespaced(sa.clone(), "apps")
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"type": "ClusterIP"}})),
            )
            .await,
    )?;
    expect_forbidden(
        "delete a Service",
        Api::<Service>::namespaced(sa.clone(), "apps")
            .delete("web", &DeleteParams::default())
            .await,
    )?;
    expect_forbidden(
        "change the config ConfigMap",
        Api::<ConfigMap>::namespaced(sa.clone(), ns)
            .patch(
                "config",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"config": ""}})),
            )
            .await,
    )?;
    expect_forbidden(
        "read ConfigMaps outside metallb-system",
        Api::<ConfigMap>::namespaced(sa.clone(), "apps")
            .list(&ListParams::default())
            .await,
    )?;
    expect_forbidden(
        "list Nodes",
        Api::<k8s_openapi::api::core::v1::Node>::all(sa.clone())
            .list(&ListParams::default())
            .await,
    )?;
    expect_forbidden(
        "delete the Lease",
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(sa.clone(), ns)
            .delete("ferrolb-controller", &DeleteParams::default())
            .await,
    )?;

    let log = std::fs::read_to_string(&ctl.log)?;
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "no request of the controller was forbidden:\n{log}"
    );
    Ok(())
}

/// Can `client` do `verb` on `resource` (API `group`) in `namespace` (None: cluster-wide)?
async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> anyhow::Result<bool> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(String::from),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.map(|s| s.allowed).unwrap_or(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_give_the_speaker_what_it_reads_and_writes_and_nothing_else() -> anyhow::Result<()>
{
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let manifests = ferrolb_e2e::workspace_root().join("manifests");
    env.apply_kustomization(&manifests).await?;
    env.apply_manifest(&manifests.join("memberlist-secret.yaml"))
        .await?;
    env.apply_manifest(&manifests.join("examples").join("config-layer2.yaml"))
        .await?;
    let ns = "metallb-system";
    env.namespace("apps").await?;
    create_lb(&client, "apps", "web", Svc::default()).await?;
    let sa =
        ferrolb_e2e::k8s::client_for(&env.token_request_kubeconfig(ns, "speaker").await?).await?;

    // Everything the speaker's watchers and Event recorder do (src/speaker/mod.rs).
    for (verb, group, resource, namespace) in [
        ("list", "", "services", None),
        ("watch", "", "services", None),
        ("list", "discovery.k8s.io", "endpointslices", None),
        ("watch", "discovery.k8s.io", "endpointslices", None),
        ("list", "", "nodes", None),
        ("watch", "", "nodes", None),
        ("list", "", "configmaps", Some(ns)),
        ("watch", "", "configmaps", Some(ns)),
        ("list", "metallb.io", "ipaddresspools", Some(ns)),
        ("watch", "metallb.io", "l2advertisements", Some(ns)),
        ("watch", "metallb.io", "bgpadvertisements", Some(ns)),
        ("watch", "metallb.io", "communities", Some(ns)),
        ("watch", "metallb.io", "bgppeers", Some(ns)),
        ("watch", "metallb.io", "bfdprofiles", Some(ns)),
        ("create", "metallb.io", "servicel2statuses", Some(ns)),
        ("delete", "metallb.io", "servicebgpstatuses", Some(ns)),
        ("patch", "metallb.io", "configurationstates", Some(ns)),
        ("create", "events.k8s.io", "events", Some("apps")),
        ("patch", "events.k8s.io", "events", Some("apps")),
    ] {
        assert!(
            can_i(&sa, verb, group, resource, namespace).await?,
            "speaker may not {verb} {group}/{resource} in {namespace:?}"
        );
    }
    // The same for real, with the speaker's token.
    let services = Api::<Service>::all(sa.clone())
        .list(&ListParams::default())
        .await?;
    assert!(services
        .items
        .iter()
        .any(|s| s.metadata.name.as_deref() == Some("web")));
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(sa.clone())
        .list(&ListParams::default())
        .await?;
    Api::<k8s_openapi::api::core::v1::Node>::all(sa.clone())
        .list(&ListParams::default())
        .await?;
    let config = Api::<ConfigMap>::namespaced(sa.clone(), ns)
        .get("config")
        .await?;
    assert!(config.data.is_some_and(|d| d.contains_key("config")));
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some("web-".into()),
            ..ObjectMeta::default()
        },
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        reason: Some("nodeAssigned".into()),
        action: Some("Announce".into()),
        note: Some("announcing from node n1".into()),
        type_: Some("Normal".into()),
        reporting_controller: Some("ferrolb-speaker".into()),
        reporting_instance: Some("n1".into()),
        regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some("web".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        }),
        ..Event::default()
    };
    Api::<Event>::namespaced(sa.clone(), "apps")
        .create(&PostParams::default(), &event)
        .await
        .context("speaker creates an Event")?;

    // Outside its RBAC: Secrets, writes to Services, the controller's Lease, other namespaces.
    for (verb, group, resource, namespace) in [
        ("list", "", "secrets", Some(ns)),
        ("get", "", "secrets", Some(ns)),
        ("patch", "", "services/status", Some("apps")),
        ("update", "", "services", Some("apps")),
        ("create", "coordination.k8s.io", "leases", Some(ns)),
        ("list", "", "configmaps", Some("kube-system")),
        ("list", "", "pods", Some(ns)),
        ("patch", "", "nodes", None),
        ("update", "metallb.io", "ipaddresspools", Some(ns)),
        ("patch", "metallb.io", "ipaddresspools", Some(ns)),
        ("list", "metallb.io", "ipaddresspools", Some("apps")),
        ("create", "metallb.io", "servicel2statuses", Some("apps")),
        ("list", "", "namespaces", None),
    ] {
        assert!(
            !can_i(&sa, verb, group, resource, namespace).await?,
            "speaker may {verb} {group}/{resource} in {namespace:?}"
        );
    }
    expect_forbidden(
        "speaker reads the memberlist Secret",
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa.clone(), ns)
            .get("memberlist")
            .await,
    )?;
    expect_forbidden(
        "speaker writes a Service status",
        Api::<Service>::namespaced(sa.clone(), "apps")
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}})),
            )
            .await,
    )?;
    Ok(())
}

/// `kubectl apply -k manifests/` lists the files of `manifests/base` one by one (kubectl's
/// built-in kustomize before 1.21 takes files only); overlays use `base/kustomization.yaml`.
/// Both lists name the same files in the same order, and every YAML file of `base/` is listed.
#[test]
fn manifests_top_level_and_base_kustomizations_list_the_same_files() -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Kustomization {
        resources: Vec<String>,
    }
    let manifests = ferrolb_e2e::workspace_root().join("manifests");
    let read = |p: std::path::PathBuf| -> anyhow::Result<Vec<String>> {
        let k: Kustomization = serde_yaml::from_str(&std::fs::read_to_string(&p)?)
            .with_context(|| format!("{}", p.display()))?;
        Ok(k.resources)
    };
    let top = read(manifests.join("kustomization.yaml"))?;
    let base = read(manifests.join("base").join("kustomization.yaml"))?;
    let prefixed: Vec<String> = base.iter().map(|f| format!("base/{f}")).collect();
    assert_eq!(
        top, prefixed,
        "manifests/kustomization.yaml and base/ disagree"
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(manifests.join("base"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = base.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "a file of manifests/base is not listed");
    Ok(())
}
