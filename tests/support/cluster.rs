//! The real control plane for integration tests.
//!
//! Tests reach the cluster named by `KUBECONFIG`. When it is unset, the first test to ask builds
//! the pinned tools (`scripts/build-tools`, cached) and starts the plane
//! (`scripts/control-plane up`), which then stays up for later runs until
//! `scripts/control-plane down`. Each test works in its own namespace ([`TestNamespace`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig, NamedAuthInfo};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

/// Field manager of every write the test support makes.
pub const FIELD_MANAGER: &str = "helpdesk-mail-operator-tests";

/// Label put on every namespace a test creates, so leftovers are easy to find.
pub const TEST_NAMESPACE_LABEL: &str = "helpdesk-mail-operator.test/namespace";

/// How long helpers wait for the cluster to converge before failing the test.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a project script and returns the last line it printed on stdout. Its stderr goes to
/// the test's stderr, so a long first build shows progress.
fn run_script(script: &str, args: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<String> {
    let path = repo_root().join("scripts").join(script);
    let mut command = Command::new(&path);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{} {} failed with {}; stdout:\n{stdout}",
        path.display(),
        args.join(" "),
        output.status
    );
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} printed nothing", path.display()))
}

/// Directory holding the pinned binaries: `HDMO_TOOLS_BIN`, or the cache of
/// `scripts/build-tools`. With `build`, missing binaries are built first.
fn tools_bin(build: bool) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HDMO_TOOLS_BIN").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let args: &[&str] = if build { &[] } else { &["--print"] };
    run_script("build-tools", args, &[]).map(PathBuf::from)
}

/// Runs one of the `scripts/control-plane` commands made for tests (`apiserver-kill`,
/// `apiserver-start`, `etcd-compact`, `audit-log`) on the plane of `HDMO_PLANE_DIR` (the one
/// `scripts/test` started) and returns the last line it printed.
pub fn plane_command(action: &str) -> anyhow::Result<String> {
    let bin = tools_bin(false)?;
    run_script("control-plane", &[action], &[("HDMO_TOOLS_BIN", &bin)])
}

/// Where the cluster's kubeconfig comes from.
#[derive(Clone, Debug)]
enum Source {
    /// `KUBECONFIG` as the caller set it (possibly several paths).
    Environment(String),
    /// The kubeconfig of the plane these tests started.
    Plane(PathBuf),
}

fn source() -> anyhow::Result<Source> {
    static SOURCE: OnceLock<Result<Source, String>> = OnceLock::new();
    SOURCE
        .get_or_init(|| {
            if let Ok(value) = std::env::var("KUBECONFIG")
                && !value.trim().is_empty()
            {
                return Ok(Source::Environment(value));
            }
            start_plane().map_err(|error| format!("{error:#}"))
        })
        .clone()
        .map_err(|error| anyhow!("no control plane: {error}"))
}

fn start_plane() -> anyhow::Result<Source> {
    let bin = tools_bin(true)?;
    let line = run_script("control-plane", &["up"], &[("HDMO_TOOLS_BIN", &bin)])?;
    let path = line
        .strip_prefix("export KUBECONFIG=")
        .ok_or_else(|| anyhow!("scripts/control-plane up ended with {line:?}"))?;
    Ok(Source::Plane(PathBuf::from(path)))
}

/// The value to give `KUBECONFIG` in a child process (kubectl, helm, the operator binary).
pub fn kubeconfig_env() -> anyhow::Result<String> {
    Ok(match source()? {
        Source::Environment(value) => value,
        Source::Plane(path) => path.display().to_string(),
    })
}

/// Client configuration for the cluster-admin identity of the test cluster.
pub async fn config() -> anyhow::Result<Config> {
    let options = KubeConfigOptions::default();
    let config = match source()? {
        Source::Environment(_) => Config::from_kubeconfig(&options).await,
        Source::Plane(path) => {
            let kubeconfig = Kubeconfig::read_from(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
    };
    config.context("loading the test cluster's kubeconfig")
}

/// A cluster-admin client. Make one per test: a client belongs to the runtime that made it.
pub async fn client() -> anyhow::Result<Client> {
    Client::try_from(config().await?).context("building a client for the test cluster")
}

/// A client that authenticates with a bearer token (for example from a TokenRequest) instead
/// of the admin certificate.
pub async fn client_with_token(token: &str) -> anyhow::Result<Client> {
    let mut config = config().await?;
    config.auth_info = serde_json::from_value::<AuthInfo>(serde_json::json!({ "token": token }))
        .context("building token credentials")?;
    Client::try_from(config).context("building a token client")
}

/// A token of the ServiceAccount `name`, from a TokenRequest valid for an hour.
pub async fn service_account_token(
    accounts: &Api<ServiceAccount>,
    name: &str,
) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {name}"))?
        .status
        .map(|status| status.token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| anyhow!("the TokenRequest for {name} returned no token"))
}

/// Writes a kubeconfig for the test cluster whose only credential is `token`, with
/// `namespace` as the context's default namespace when given.
pub fn token_kubeconfig(path: &Path, token: &str, namespace: Option<&str>) -> anyhow::Result<()> {
    let source = kubeconfig_env()?;
    let mut merged: Option<Kubeconfig> = None;
    for file in std::env::split_paths(&source) {
        let config =
            Kubeconfig::read_from(&file).with_context(|| format!("reading {}", file.display()))?;
        merged = Some(match merged {
            None => config,
            Some(m) => m.merge(config).context("merging kubeconfigs")?,
        });
    }
    let mut config = merged.ok_or_else(|| anyhow!("KUBECONFIG names no file"))?;
    let current = config
        .current_context
        .clone()
        .ok_or_else(|| anyhow!("the test kubeconfig has no current context"))?;
    let context = config
        .contexts
        .iter_mut()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_mut())
        .ok_or_else(|| anyhow!("context {current} is missing"))?;
    context.user = Some("token".to_owned());
    if let Some(namespace) = namespace {
        context.namespace = Some(namespace.to_owned());
    }
    let user: NamedAuthInfo = serde_json::from_value(serde_json::json!({
        "name": "token",
        "user": { "token": token }
    }))?;
    config.auth_infos = vec![user];
    // JSON is YAML: every kubeconfig reader takes it.
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Path of one of the pinned binaries (`kubectl`, `helm`, `etcd`, ...).
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = tools_bin(false)?.join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run scripts/build-tools (or set HDMO_TOOLS_BIN)",
        path.display()
    );
    Ok(path)
}

/// A command for one of the pinned binaries, pointed at the test cluster.
pub fn tool_command(name: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(tool(name)?);
    command
        .env("KUBECONFIG", kubeconfig_env()?)
        .stdin(Stdio::null());
    Ok(command)
}

/// Runs a pinned binary against the test cluster and returns its stdout; fails with its
/// stderr when it exits non-zero.
pub fn run_tool(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tool_command(name)?
        .args(args)
        .output()
        .with_context(|| format!("running {name}"))?;
    ensure!(
        output.status.success(),
        "{name} {} failed with {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).with_context(|| format!("{name} printed non-UTF-8"))
}

/// Polls `probe` until it yields a value, failing after `timeout` with the last error seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("not yet"),
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates or updates a CRD by server-side apply and waits until it is Established.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
) -> anyhow::Result<CustomResourceDefinition> {
    let name = crd
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow!("the CRD has no name"))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    wait_crd_established(client, &name, CONVERGE_TIMEOUT).await
}

/// Waits until the named CRD reports the Established condition.
pub async fn wait_crd_established(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = await_condition(api, name, conditions::is_crd_established());
    match tokio::time::timeout(timeout, established).await {
        Ok(Ok(Some(crd))) => Ok(crd),
        Ok(Ok(None)) => bail!("CRD {name} was deleted while waiting for Established"),
        Ok(Err(error)) => Err(error).with_context(|| format!("watching CRD {name}")),
        Err(_) => bail!("CRD {name} not Established within {timeout:?}"),
    }
}

/// A namespace of its own for one test: created by [`TestNamespace::create`], deleted by
/// [`TestNamespace::cleanup`] or, failing that, when dropped.
pub struct TestNamespace {
    name: String,
    client: Client,
    deleted: bool,
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<unique suffix>`. The prefix must be a short
    /// lowercase DNS label.
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        ensure!(
            !prefix.is_empty()
                && prefix.len() <= 40
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !prefix.starts_with('-'),
            "namespace prefix {prefix:?} must be a short lowercase DNS label"
        );
        let name = format!(
            "{prefix}-{:x}{:x}-{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>() & 0xff_ffff
        );
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self {
            name,
            client: client.clone(),
            deleted: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A namespaced API for this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Waits for the `default` ServiceAccount, which the controller manager creates in every
    /// new namespace (pods and token tests need it).
    pub async fn wait_default_service_account(&self) -> anyhow::Result<ServiceAccount> {
        let api: Api<ServiceAccount> = self.api();
        eventually("the default ServiceAccount", CONVERGE_TIMEOUT, || async {
            Ok(api.get_opt("default").await?)
        })
        .await
    }

    /// Deletes the namespace without waiting for its contents to go.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        delete_namespace(&self.client, &self.name).await
    }
}

async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    match Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error).with_context(|| format!("deleting namespace {name}")),
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // The test's runtime may be gone or busy; delete from a runtime of our own.
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = client().await?;
                delete_namespace(&client, &name).await
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("deleting test namespace {}: {error:#}", self.name),
            Err(_) => eprintln!("deleting test namespace {} panicked", self.name),
        }
    }
}
