//! Issue 24, Konvoy's page: MetalLB's labels select exactly ferrolb's controller or speaker pods
//! (the page's reload command), ferrolb's manifests apply over a MetalLB 0.12 install in place,
//! and the `kubeaddons` overlay applies and its controller assigns from the page's example.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};
use ferrolb_e2e::k8s::controller::Controller;
use ferrolb_e2e::k8s::objects::{create_lb, wait_event, wait_ingress, Svc};
use ferrolb_e2e::k8s::{self, TestEnv};
use ferrolb_e2e::prereq::{require, Need};
use kube::api::{ListParams, PostParams};
use kube::Api;

/// Does the equality-based label selector `k=v,k2=v2` (the form `kubectl -l` and the Konvoy
/// page's reload command use; no `!=` or set syntax) select a pod with `labels`?
fn selector_selects(selector: &str, labels: &BTreeMap<String, String>) -> anyhow::Result<bool> {
    let mut all = true;
    for term in selector.split(',') {
        let (k, v) = term
            .split_once('=')
            .with_context(|| format!("selector term {term:?} is not key=value"))?;
        all &= labels.get(k.trim()).map(String::as_str) == Some(v.trim());
    }
    Ok(all)
}

/// The string map at `v` (labels, matchLabels).
fn string_map(v: &serde_yaml::Value, what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    v.as_mapping()
        .with_context(|| format!("{what}: not a mapping"))?
        .iter()
        .map(|(k, v)| match (k.as_str(), v.as_str()) {
            (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
            _ => bail!("{what}: {k:?}: {v:?} is not a string pair"),
        })
        .collect()
}

/// `kubectl kustomize DIR` (the kustomize built into kubectl) written to `out`.
fn kustomize_build(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<String> {
    let built = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("run kubectl kustomize (kubectl is part of the machine image)")?;
    anyhow::ensure!(
        built.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let text = String::from_utf8(built.stdout)?;
    std::fs::write(out, &text)?;
    Ok(text)
}

/// The page's reload command (`kubectl -n kubeaddons delete pod -l app=metallb,component=controller`)
/// and MetalLB runbooks select pods by MetalLB's labels: the controller's pod template carries
/// `app: metallb, component: controller`, the speaker's `component: speaker`, each beside
/// ferrolb's own labels, and each selector picks one template and not the other. The workloads'
/// selectors are MetalLB 0.12's, and select their own templates.
#[test]
fn manifests_metallb_selectors_pick_the_controller_or_the_speaker_pods() -> anyhow::Result<()> {
    let manifests = ferrolb_e2e::workspace_root().join("manifests").join("base");
    let mut templates = BTreeMap::new();
    for (file, kind, component) in [
        ("controller.yaml", "Deployment", "controller"),
        ("speaker.yaml", "DaemonSet", "speaker"),
    ] {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(manifests.join(file))?)?;
        assert_eq!(doc["kind"].as_str(), Some(kind), "{file}");
        let labels = string_map(&doc["spec"]["template"]["metadata"]["labels"], file)?;
        let selector = string_map(&doc["spec"]["selector"]["matchLabels"], file)?;
        let object = string_map(&doc["metadata"]["labels"], file)?;
        let metallb = BTreeMap::from([
            ("app".to_string(), "metallb".to_string()),
            ("component".to_string(), component.to_string()),
        ]);
        assert_eq!(selector, metallb, "{file}: MetalLB 0.12's selector");
        for (k, v) in &metallb {
            assert_eq!(labels.get(k), Some(v), "{file}: pod template label {k}");
            assert_eq!(object.get(k), Some(v), "{file}: {kind} label {k}");
        }
        for set in [&labels, &object] {
            assert_eq!(
                set.get("app.kubernetes.io/name").map(String::as_str),
                Some("ferrolb"),
                "{file}: ferrolb's own label"
            );
            assert_eq!(
                set.get("app.kubernetes.io/component").map(String::as_str),
                Some(component),
                "{file}"
            );
        }
        templates.insert(component, labels);
    }
    let (controller, speaker) = (&templates["controller"], &templates["speaker"]);
    let pick = "app=metallb,component=controller";
    assert!(
        selector_selects(pick, controller)?,
        "{pick} misses the controller"
    );
    assert!(
        !selector_selects(pick, speaker)?,
        "{pick} selects the speaker"
    );
    let pick = "app=metallb,component=speaker";
    assert!(
        selector_selects(pick, speaker)?,
        "{pick} misses the speaker"
    );
    assert!(
        !selector_selects(pick, controller)?,
        "{pick} selects the controller"
    );
    // ferrolb's own labels tell the two apart the same way; `app=metallb` alone takes both.
    let own = "app.kubernetes.io/name=ferrolb,app.kubernetes.io/component=controller";
    assert!(selector_selects(own, controller)? && !selector_selects(own, speaker)?);
    assert!(
        selector_selects("app=metallb", controller)? && selector_selects("app=metallb", speaker)?
    );
    assert!(selector_selects("component", controller).is_err());
    Ok(())
}

/// MetalLB 0.12's Deployment `controller` and DaemonSet `speaker` (same names, same selectors as
/// ferrolb's) are taken over in place by applying ferrolb's manifests: no selector change, so
/// no "field is immutable" refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_metallb_apply_over_metallb_0_12_workloads_in_place() -> anyhow::Result<()> {
    if !require(&k8s::needs(&[]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let manifests = ferrolb_e2e::workspace_root().join("manifests");
    env.apply_manifest(&manifests.join("base").join("namespace.yaml"))
        .await?;
    // The workload shapes of MetalLB 0.12's manifest: names, namespace, labels and selectors.
    let metallb = env.state_dir().join("metallb-0.12-workloads.yaml");
    let mut text = String::new();
    for (kind, component) in [("Deployment", "controller"), ("DaemonSet", "speaker")] {
        text.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {component}\n  namespace: metallb-system\n  labels: {{app: metallb, component: {component}}}\nspec:\n  selector:\n    matchLabels: {{app: metallb, component: {component}}}\n  template:\n    metadata:\n      labels: {{app: metallb, component: {component}}}\n    spec:\n      containers:\n      - name: {component}\n        image: quay.io/metallb/{component}:v0.12.1\n"
        ));
    }
    std::fs::write(&metallb, text)?;
    assert_eq!(env.apply_manifest(&metallb).await?, 2);
    env.apply_kustomization(&manifests)
        .await
        .context("ferrolb's manifests over MetalLB 0.12's workloads")?;
    let client = env.client();
    let deploy: k8s_openapi::api::apps::v1::Deployment =
        Api::namespaced(client.clone(), "metallb-system")
            .get("controller")
            .await?;
    let pod = deploy
        .spec
        .and_then(|s| s.template.spec)
        .context("no pod spec")?;
    assert_eq!(pod.containers[0].image.as_deref(), Some("ferrolb:0.1.0"));
    let ds: k8s_openapi::api::apps::v1::DaemonSet = Api::namespaced(client, "metallb-system")
        .get("speaker")
        .await?;
    let labels = ds
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("ferrolb")
    );
    Ok(())
}

/// Konvoy's addon namespace: `manifests/overlays/kubeaddons` built with `kubectl kustomize` and applied
/// server-side like the base; everything lands in `kubeaddons` and the processes take that
/// namespace from their pods. The page's reload command, run with kubectl against pods made from
/// the two templates, deletes exactly the controller's. Then `ferrolb controller --namespace
/// kubeaddons`, with a token of the overlay's `kubeaddons/controller` ServiceAccount (its RBAC
/// enforced), assigns from a ConfigMap rendered by `ferrolb config render` from the page's
/// layer2 example, byte for byte (10.0.50.x: an address in the Service's status, never a
/// destination of traffic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_kubeaddons_overlay_applies_and_the_controller_assigns_from_the_konvoy_page_example(
) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
    if !require(&k8s::needs(&[Need::Program("kubectl")]))? {
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let client = env.client();
    let root = ferrolb_e2e::workspace_root();
    let ns = "kubeaddons";

    let built = env.state_dir().join("kubeaddons.yaml");
    let text = kustomize_build(
        &root.join("manifests").join("overlays").join("kubeaddons"),
        &built,
    )?;
    assert!(
        !text.contains("metallb-system"),
        "the overlay left metallb-system behind:\n{text}"
    );
    let base = kustomize_build(&root.join("manifests"), &env.state_dir().join("base.yaml"))?;
    let applied = env.apply_manifest(&built).await?;
    assert_eq!(
        applied,
        serde_yaml::Deserializer::from_str(&base).count(),
        "the overlay applies every object of the base"
    );

    // Both workloads in kubeaddons; each process's --namespace is its pod's namespace.
    let deploy: Deployment = Api::namespaced(client.clone(), ns)
        .get("controller")
        .await?;
    let ds: DaemonSet = Api::namespaced(client.clone(), ns).get("speaker").await?;
    let templates: Vec<(&str, PodTemplateSpec)> = vec![
        ("controller", deploy.spec.context("no spec")?.template),
        ("speaker", ds.spec.context("no spec")?.template),
    ];
    for (name, template) in &templates {
        let container = &template.spec.as_ref().context("no pod spec")?.containers[0];
        let args = container.args.clone().unwrap_or_default();
        assert!(
            args.iter().any(|a| a == "--namespace=$(POD_NAMESPACE)"),
            "{name}: {args:?}"
        );
        let from = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "POD_NAMESPACE")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        assert_eq!(from.as_deref(), Some("metadata.namespace"), "{name}");
    }
    for binding in ["controller", "speaker"] {
        let rb: k8s_openapi::api::rbac::v1::RoleBinding =
            Api::namespaced(client.clone(), ns).get(binding).await?;
        let subject_ns: Vec<Option<String>> = rb
            .subjects
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.namespace)
            .collect();
        assert_eq!(
            subject_ns,
            vec![Some(ns.to_string())],
            "RoleBinding {binding}"
        );
    }

    // Pods as the Deployment and the DaemonSet would make them (no kubelet or controller-manager
    // here), then the page's reload command with a real kubectl.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (pod_name, (_, template)) in [
        ("controller-a", &templates[0]),
        ("controller-b", &templates[0]),
        ("speaker-n1", &templates[1]),
    ] {
        let mut meta = template.metadata.clone().unwrap_or_default();
        meta.name = Some(pod_name.to_string());
        let spec = PodSpec {
            // The test apiserver has no token controller to mint the mounted token.
            automount_service_account_token: Some(false),
            ..template.spec.clone().context("no pod spec")?
        };
        let pod = Pod {
            metadata: meta,
            spec: Some(spec),
            ..Pod::default()
        };
        pods.create(&PostParams::default(), &pod).await?;
    }
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    };
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app=metallb,component=speaker"))
                .await?
        ),
        ["speaker-n1"]
    );
    let reload = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args([
            "-n",
            ns,
            "delete",
            "pod",
            "-l",
            "app=metallb,component=controller",
        ])
        .output()?;
    let said = String::from_utf8_lossy(&reload.stdout);
    println!("$ kubectl -n kubeaddons delete pod -l app=metallb,component=controller\n{said}");
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        [
            "pod \"controller-a\" deleted",
            "pod \"controller-b\" deleted"
        ]
    );
    assert_eq!(
        names(pods.list(&ListParams::default()).await?),
        ["speaker-n1"]
    );

    // The page's layer2 example, rendered into kubeaddons the way the README says.
    let page = root.join("config/tests/data/konvoy-page/layer2.yaml");
    let rendered = Command::new(ferrolb_e2e::ferrolb_bin()?)
        .args(["config", "render", "--namespace", ns])
        .arg(&page)
        .output()?;
    assert!(
        rendered.status.success() && rendered.stderr.is_empty(),
        "config render: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let config_file = env.state_dir().join("config.yaml");
    std::fs::write(&config_file, &rendered.stdout)?;
    assert_eq!(env.apply_manifest(&config_file).await?, 1);

    // The controller as its Deployment runs it in kubeaddons, with the overlay's ServiceAccount.
    env.namespace("apps").await?;
    let kubeconfig = env.token_request_kubeconfig(ns, "controller").await?;
    let mut args: Vec<String> = templates[0]
        .1
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].args.clone())
        .unwrap_or_default()
        .into_iter()
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
        vec!["10.0.50.25"],
        "first address of the page's layer2 pool"
    );
    wait_event(&client, ns, "config", "ConfigLoaded").await?;
    let lease: k8s_openapi::api::coordination::v1::Lease = Api::namespaced(client.clone(), ns)
        .get("ferrolb-controller")
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("controller-0")
    );
    let log = std::fs::read_to_string(&ctl.log)?;
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request of the controller was forbidden:\n{log}"
    );
    Ok(())
}
