//! A real Kubernetes control plane (etcd + kube-apiserver v1.20.2) for integration tests.
//!
//! [`TestEnv::start`] gets the binaries (`$FERROLB_K8S_BIN`, else [`build_binaries`]:
//! `e2e/k8s/build-kube-apiserver.sh` builds them once per cache directory, under a file lock,
//! however many test threads and test binaries ask at the same time), runs
//! `e2e/k8s/start-testenv.sh` with them, waits until the apiserver is ready and returns the
//! kubeconfig path and a [`kube::Client`]. Dropping the `TestEnv` (also while a test panics)
//! stops both processes and removes the state directory. Everything listens on 127.0.0.1 only.
//!
//! Must not: touch anything outside its own state directory and the binaries' cache, or leave
//! processes behind.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Deserialize;

/// One running control plane, owned by the test (or test binary) that started it.
pub struct TestEnv {
    state: PathBuf,
    kubeconfig: PathBuf,
    client: Client,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("state", &self.state)
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

/// Stops the control plane when dropped, even if connecting to it failed.
struct StateGuard(Option<PathBuf>);

impl Drop for StateGuard {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            stop(&state);
        }
    }
}

fn script(name: &str) -> PathBuf {
    crate::workspace_root().join("e2e").join("k8s").join(name)
}

fn stop(state: &Path) {
    let result = Command::new("bash")
        .arg(script("stop-testenv.sh"))
        .arg(state)
        .status();
    if let Err(e) = result {
        eprintln!("stop-testenv.sh {}: {e}", state.display());
    }
}

/// The directory holding `kube-apiserver` and `etcd`, as the last line
/// `e2e/k8s/build-kube-apiserver.sh` prints: it builds them when its cache has none, and a second
/// caller waits on the cache's lock for the first one's build. `env` is added to the script's
/// environment.
pub fn build_binaries(env: &[(&str, &OsStr)]) -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(script("build-kube-apiserver.sh"))
        .envs(env.iter().copied())
        .output()
        .context("run e2e/k8s/build-kube-apiserver.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
        _ => bail!(
            "build-kube-apiserver.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl TestEnv {
    /// Start a fresh etcd + kube-apiserver; ready when this returns.
    pub async fn start() -> anyhow::Result<TestEnv> {
        let state = PathBuf::from(format!(
            "/dev/shm/ferrolb-k8s-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let bin = match std::env::var_os("FERROLB_K8S_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => build_binaries(&[])?,
        };
        let mut guard = StateGuard(Some(state.clone()));
        let out = Command::new("bash")
            .arg(script("start-testenv.sh"))
            .arg(&state)
            .env("FERROLB_K8S_BIN", &bin)
            .env("ETCD_PORT", free_port()?.to_string())
            .env("ETCD_PEER_PORT", free_port()?.to_string())
            .env("APISERVER_PORT", free_port()?.to_string())
            .env("OWNER_PID", std::process::id().to_string())
            .output()
            .context("run e2e/k8s/start-testenv.sh")?;
        if !out.status.success() {
            bail!(
                "start-testenv.sh failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let kubeconfig = state.join("kubeconfig");
        let client = client_for(&kubeconfig).await?;
        guard.0 = None;
        Ok(TestEnv {
            state,
            kubeconfig,
            client,
        })
    }

    /// The kubeconfig file (token auth, CA data inline) for kubectl and the binaries under test.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The state directory (logs: `apiserver.log`, `etcd.log`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Create a namespace and return its name.
    pub async fn namespace(&self, name: &str) -> anyhow::Result<String> {
        let api: Api<Namespace> = Api::all(self.client());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("create namespace {name}"))?;
        Ok(name.to_string())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        stop(&self.state);
    }
}

impl TestEnv {
    /// A kubeconfig that authenticates as the ServiceAccount `metallb-system/<name>`
    /// (`controller` or `speaker`), with no permissions until `manifests/base/rbac.yaml` is applied.
    pub fn service_account_kubeconfig(&self, name: &str) -> PathBuf {
        self.state.join(format!("kubeconfig-{name}"))
    }

    /// A kubeconfig that authenticates with a real ServiceAccount token of `namespace/name`
    /// (TokenRequest API, one hour): the ServiceAccount must exist, as in a cluster. Written to
    /// the state directory; returns its path.
    pub async fn token_request_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let answer = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?;
        let token = answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("TokenRequest for {namespace}/{name}: no token"))?;
        let admin_token = std::fs::read_to_string(self.state.join("token"))?;
        let admin = std::fs::read_to_string(&self.kubeconfig)?;
        let needle = format!("token: {}", admin_token.trim());
        anyhow::ensure!(
            admin.contains(&needle),
            "admin kubeconfig has no token line"
        );
        let path = self
            .state
            .join(format!("kubeconfig-token-{namespace}-{name}"));
        std::fs::write(&path, admin.replace(&needle, &format!("token: {token}")))?;
        Ok(path)
    }

    /// Server-side apply, in order, every file listed under `resources:` in
    /// `dir/kustomization.yaml` (plain files, also in subdirectories; no overlays, patches or
    /// generators).
    /// Returns the number of objects applied.
    pub async fn apply_kustomization(&self, dir: &Path) -> anyhow::Result<usize> {
        #[derive(Deserialize)]
        struct Kustomization {
            resources: Vec<String>,
        }
        let path = dir.join("kustomization.yaml");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let k: Kustomization =
            serde_yaml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let mut n = 0;
        for file in &k.resources {
            n += self.apply_manifest(&dir.join(file)).await?;
        }
        Ok(n)
    }

    /// Server-side apply every document of a multi-document YAML manifest (kinds: Namespace,
    /// ServiceAccount, ConfigMap, Secret, ClusterRole, ClusterRoleBinding, Role, RoleBinding,
    /// Deployment, DaemonSet, CustomResourceDefinition, MetalLB's `metallb.io` kinds). The
    /// apiserver checks every field against its schema: an unknown or misspelt field fails the
    /// apply. After CRDs, it waits until MetalLB's kinds are served.
    pub async fn apply_manifest(&self, path: &Path) -> anyhow::Result<usize> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        self.apply_yaml(&text)
            .await
            .with_context(|| format!("{}", path.display()))
    }

    /// [`TestEnv::apply_manifest`] of YAML text.
    pub async fn apply_yaml(&self, text: &str) -> anyhow::Result<usize> {
        let path = Path::new("<yaml>");
        let mut n = 0;
        let mut crds = false;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc)
                .with_context(|| format!("{}: YAML", path.display()))?;
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_yaml::from_value(value)
                .with_context(|| format!("{}: not an object", path.display()))?;
            let types = obj
                .types
                .clone()
                .with_context(|| format!("{}: document without kind", path.display()))?;
            let gvk = GroupVersionKind::try_from(&types)?;
            let metallb_plural;
            let (plural, namespaced) = match gvk.kind.as_str() {
                "CustomResourceDefinition" => {
                    crds = true;
                    ("customresourcedefinitions", false)
                }
                kind if gvk.group == "metallb.io" => {
                    metallb_plural = match kind {
                        "Community" => "communities".to_string(),
                        k => format!("{}s", k.to_lowercase()),
                    };
                    (metallb_plural.as_str(), true)
                }
                "Namespace" => ("namespaces", false),
                "ServiceAccount" => ("serviceaccounts", true),
                "ConfigMap" => ("configmaps", true),
                "Secret" => ("secrets", true),
                "Deployment" => ("deployments", true),
                "DaemonSet" => ("daemonsets", true),
                "ClusterRole" => ("clusterroles", false),
                "ClusterRoleBinding" => ("clusterrolebindings", false),
                "Role" => ("roles", true),
                "RoleBinding" => ("rolebindings", true),
                other => bail!("{}: kind {other} not supported here", path.display()),
            };
            let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<DynamicObject> = match (namespaced, obj.metadata.namespace.as_deref()) {
                (true, Some(ns)) => Api::namespaced_with(self.client(), ns, &ar),
                (true, None) => Api::namespaced_with(self.client(), "default", &ar),
                (false, _) => Api::all_with(self.client(), &ar),
            };
            let name = obj.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply("ferrolb-e2e").force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("apply {} {name}", gvk.kind))?;
            n += 1;
        }
        if crds {
            self.wait_crds_served().await?;
        }
        Ok(n)
    }

    /// Waits until the apiserver serves MetalLB's configuration kinds (a CRD takes a moment
    /// to be established after it is created).
    pub async fn wait_crds_served(&self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + super::WAIT;
        let kinds = [
            "IPAddressPool",
            "L2Advertisement",
            "BGPAdvertisement",
            "Community",
            "BFDProfile",
        ];
        loop {
            let mut missing = Vec::new();
            for kind in kinds {
                let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", kind);
                if kube::discovery::pinned_kind(&self.client(), &gvk)
                    .await
                    .is_err()
                {
                    missing.push(kind);
                }
            }
            let peer = GroupVersionKind::gvk("metallb.io", "v1beta2", "BGPPeer");
            if kube::discovery::pinned_kind(&self.client(), &peer)
                .await
                .is_err()
            {
                missing.push("BGPPeer");
            }
            if missing.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "MetalLB's CRDs not served within {:?}: {missing:?}",
                    super::WAIT
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// A client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("kubeconfig to client config")?;
    Client::try_from(config).context("build kube client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Two threads need the binaries at once on an empty cache: one builds (a fake build that
    /// takes 2 s, through the script's real lock), the other waits on the lock and then finds
    /// them built; both get the same directory.
    #[test]
    fn apiserver_build_runs_once_while_a_second_caller_waits() {
        let cache = crate::scratch::Dir::new("k8s-build-lock").unwrap();
        let root = cache.path().join("cache");
        // The fake build: counts itself, takes 2 s, writes two scripts as the binaries.
        let fake = format!(
            r#"echo $$ >> '{builds}'; sleep 2; mkdir -p "$OUT"
               for b in kube-apiserver etcd; do
                 printf '#!/bin/sh\necho fake %s\n' $b > "$OUT/$b"; chmod +x "$OUT/$b"
               done"#,
            builds = cache.path().join("builds").display()
        );
        let started = Instant::now();
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (root, fake) = (root.clone(), fake.clone());
                std::thread::spawn(move || {
                    let env = [
                        ("FERROLB_K8S_CACHE", root.as_os_str()),
                        ("FERROLB_K8S_FAKE_BUILD", OsStr::new(&fake)),
                    ];
                    let dir = build_binaries(&env);
                    (dir.map_err(|e| e.to_string()), started.elapsed())
                })
            })
            .collect();
        let results: Vec<_> = callers.into_iter().map(|t| t.join().unwrap()).collect();
        let want = root.join("v1.20.2").join("bin");
        for (dir, took) in &results {
            assert_eq!(dir.as_ref().unwrap(), &want);
            // The one that did not build returned only after the build was done.
            assert!(*took >= Duration::from_secs(2), "returned after {took:?}");
        }
        let builds = cache.read("builds");
        assert_eq!(builds.lines().count(), 1, "builds: {builds:?}");
        assert!(want.join("kube-apiserver").exists() && want.join("etcd").exists());
        // A third caller finds them cached at once.
        let t = Instant::now();
        let env = [("FERROLB_K8S_CACHE", root.as_os_str())];
        assert_eq!(build_binaries(&env).unwrap(), want);
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(cache.read("builds").lines().count(), 1);
    }
}
