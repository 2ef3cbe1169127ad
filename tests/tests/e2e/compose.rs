//! The container set-up, checked without a Docker engine: `docker-compose.yml`,
//! the env files of its profiles (`deploy/compose/<profile>.env`) and the
//! Prometheus and Grafana provisioning under `deploy/`, against what the
//! binaries actually read and serve.
//!
//! `scripts/lint-containers.sh` (in `make lint`) validates the file against the
//! Compose Specification schema, which catches misspelt Compose keys. These
//! tests catch what a schema cannot see:
//!
//! - every environment variable set on a service run from our image is one its
//!   binary reads (a clap `env`, or `RUST_LOG`), and every value parses — with
//!   the defaults and with each profile's env file;
//! - the hosts a service connects to run in that configuration, and it waits
//!   for them;
//! - every published port is the port of the service's `*_ADDR`, which binds
//!   0.0.0.0 inside the container; the host side is loopback only;
//! - every healthcheck probes an endpoint the service kit serves, on that port;
//! - the fan-out worker has no fixed name or host port, so it scales;
//! - every NATS server runs an image that can sync each JetStream write before
//!   its ack, with a config that does; the `cluster` profile runs three servers
//!   that route to each other, each with its own name and volume, and the
//!   timeline services there know all three and keep 3 replicas of a stream;
//! - Prometheus scrapes every service on its port; the Grafana dashboard uses
//!   the provisioned data source and only metrics the code records;
//! - a one-shot job creates the development key pair into a named volume
//!   (`capctl dev-keys`, run here for real), and every service that verifies
//!   bearer tokens mounts that volume, reads its verifying key and waits for
//!   the job to complete.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::CommandFactory;
use serde::Deserialize;
use tower::ServiceExt;

/// Read by the kit's log filter rather than by clap.
const ENV_READ_OUTSIDE_CLAP: &[&str] = &["RUST_LOG"];

/// The binaries compose runs from our image, each with its command-line and
/// environment interface.
fn binaries() -> BTreeMap<&'static str, clap::Command> {
    BTreeMap::from([
        ("inventory", inventory::Config::command()),
        ("timeline", timeline::Config::command()),
        ("timeline-worker", timeline::config::WorkerConfig::command()),
    ])
}

// ---------------------------------------------------------------- the files --

/// The parts of a Compose file these checks read; everything else is ignored.
#[derive(Debug, Deserialize)]
struct ComposeFile {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Service {
    image: Option<String>,
    /// Present on the services built here (`./Dockerfile`, `deploy/patroni`).
    build: Option<serde::de::IgnoredAny>,
    command: Option<StringOrList>,
    /// The map form (`NAME: value`), which this file uses throughout.
    environment: BTreeMap<String, String>,
    ports: Vec<Port>,
    healthcheck: Option<Healthcheck>,
    /// The long form, which carries the condition.
    depends_on: BTreeMap<String, Dependency>,
    profiles: Vec<String>,
    container_name: Option<String>,
    scale: Option<String>,
    restart: Option<String>,
    volumes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    fn words(&self) -> Vec<String> {
        match self {
            Self::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Self::List(list) => list.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Port {
    /// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]`
    Short(String),
    Long {
        target: u16,
        host_ip: Option<String>,
    },
}

impl Port {
    /// (host ip, container port)
    fn parse(&self) -> (Option<String>, u16) {
        match self {
            Self::Long { target, host_ip } => (host_ip.clone(), *target),
            Self::Short(spec) => {
                let spec = spec.split('/').next().unwrap_or(spec);
                let parts: Vec<&str> = spec.split(':').collect();
                let target = parts
                    .last()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("port `{spec}`: no container port"));
                let host_ip = (parts.len() == 3).then(|| parts[0].to_owned());
                (host_ip, target)
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Option<StringOrList>,
    #[serde(default)]
    disable: bool,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    condition: Option<String>,
    #[serde(default = "yes")]
    required: bool,
}

fn yes() -> bool {
    true
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn compose_text() -> String {
    read("docker-compose.yml")
}

fn compose() -> ComposeFile {
    serde_saphyr::from_str(&compose_text()).expect("docker-compose.yml parses")
}

/// A way of starting the stack: the default, or `--env-file
/// deploy/compose/<profile>.env --profile <profile>`.
#[derive(Debug)]
struct Configuration {
    name: String,
    /// The profile enabled with the env file (`None` for the default).
    profile: Option<String>,
    /// Variables the env file sets, for interpolation.
    vars: BTreeMap<String, String>,
}

fn configurations() -> Vec<Configuration> {
    let mut all = vec![Configuration {
        name: "default".into(),
        profile: None,
        vars: BTreeMap::new(),
    }];
    let dir = root().join("deploy/compose");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/compose exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "env"))
        .collect();
    files.sort();
    for path in files {
        let profile = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name")
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("env file readable");
        let vars = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (name, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: `{line}` is not NAME=value", path.display()));
                (name.to_owned(), value.to_owned())
            })
            .collect();
        all.push(Configuration {
            name: format!("deploy/compose/{profile}.env"),
            profile: Some(profile),
            vars,
        });
    }
    all
}

impl Configuration {
    /// Whether `service` runs in this configuration: it has no profile, or
    /// this one, and the env file does not scale it to zero.
    fn runs(&self, service: &Service) -> bool {
        let enabled = service.profiles.is_empty()
            || self
                .profile
                .as_ref()
                .is_some_and(|p| service.profiles.contains(p));
        let scale = service
            .scale
            .as_deref()
            .map_or(Ok("1".to_owned()), |v| interpolate(v, &self.vars));
        enabled && scale.as_deref() != Ok("0")
    }
}

/// Compose's `${NAME:-default}` / `${NAME}` interpolation (and `$$`), with the
/// variables of one configuration. A bare `$NAME` is refused: always give a default.
fn interpolate(value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let inner = rest
            .strip_prefix('{')
            .ok_or_else(|| format!("`{value}`: write variables as ${{NAME:-default}}"))?;
        let end = inner
            .find('}')
            .ok_or_else(|| format!("`{value}`: unclosed ${{"))?;
        let (name, default) = match inner[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&inner[..end], None),
        };
        match (vars.get(name).filter(|v| !v.is_empty()), default) {
            (Some(set), _) => out.push_str(set),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!("`{value}`: ${{{name}}} is unset, with no default"));
            }
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The image built from `./Dockerfile` (the `x-app` anchor).
const APP_IMAGE: &str = "cap-services:local";

/// The one-shot jobs run from our image: `capctl` commands that run to
/// completion (the development key pair), with their words.
fn one_shot_jobs(compose: &ComposeFile) -> Vec<(&str, &Service, Vec<String>)> {
    compose
        .services
        .iter()
        .filter(|(_, service)| service.image.as_deref() == Some(APP_IMAGE))
        .filter_map(|(name, service)| {
            let words = service.command.as_ref()?.words();
            (words.first().map(String::as_str) == Some("capctl")).then_some((
                name.as_str(),
                service,
                words,
            ))
        })
        .collect()
}

/// The services run from our image, with the binary each runs (not the
/// one-shot jobs).
fn app_services(compose: &ComposeFile) -> Vec<(&str, &Service, &'static str)> {
    let binaries = binaries();
    let jobs: BTreeSet<&str> = one_shot_jobs(compose)
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    compose
        .services
        .iter()
        .filter(|(name, service)| {
            service.image.as_deref() == Some(APP_IMAGE) && !jobs.contains(name.as_str())
        })
        .map(|(name, service)| {
            let command = service
                .command
                .as_ref()
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: a service built from the Dockerfile names its binary in `command`"
                    )
                })
                .words();
            let binary = binaries
                .keys()
                .find(|b| command.first().is_some_and(|c| c == *b))
                .unwrap_or_else(|| {
                    panic!("{name}: runs {command:?}, not one of {:?}", binaries.keys())
                });
            (name.as_str(), service, *binary)
        })
        .collect()
}

/// The environment variables `command` reads, each with its long flag.
fn env_flags(command: &clap::Command) -> BTreeMap<String, String> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let long = arg
                .get_long()
                .unwrap_or_else(|| panic!("{}: {env} has no --flag", command.get_name()));
            Some((env, long.to_owned()))
        })
        .collect()
}

/// The address from the service's one `*_ADDR` variable.
fn listen_addr(name: &str, service: &Service) -> SocketAddr {
    let addrs: Vec<_> = service
        .environment
        .iter()
        .filter(|(env, _)| env.ends_with("_ADDR"))
        .collect();
    assert_eq!(
        addrs.len(),
        1,
        "{name}: exactly one *_ADDR expected, found {addrs:?}"
    );
    let (env, value) = addrs[0];
    interpolate(value, &BTreeMap::new())
        .expect("interpolates")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {env}={value}: {e}"))
}

/// `(port, path)` of the first `http://` URL in a healthcheck command.
fn probed_url(words: &[String]) -> Option<(u16, String)> {
    let url = words
        .iter()
        .find_map(|w| w.split_whitespace().find(|t| t.starts_with("http://")))?;
    let after_scheme = url
        .trim_start_matches("http://")
        .trim_matches(|c| c == '"' || c == '\'');
    let (authority, path) =
        after_scheme.split_at(after_scheme.find('/').unwrap_or(after_scheme.len()));
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80);
    let path = path.split('?').next().unwrap_or("/").to_owned();
    Some((port, path))
}

/// The status the service kit's router (every service's `/healthz`, `/readyz`,
/// `/metrics`, ...) answers for `GET path`, with nothing to be ready for.
async fn kit_status(path: &str) -> StatusCode {
    let router = service_kit::http::service_router(
        axum::Router::new(),
        service_kit::http::Essentials {
            readiness: service_kit::health::Readiness::new(std::time::Duration::from_secs(1)),
            openapi: utoipa::openapi::OpenApiBuilder::new().build(),
            http: service_kit::config::HttpConfig::default(),
        },
    );
    let request = Request::get(path).body(Body::empty()).expect("request");
    router.oneshot(request).await.expect("infallible").status()
}

/// `(host, port)` of each store a service connects to, from its variables.
fn store_hosts(env: &str, value: &str) -> Vec<(String, u16)> {
    let host_port = |s: &str| -> (String, u16) {
        let (host, port) = s
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{env}: `{s}` has no port"));
        (
            host.to_owned(),
            port.parse()
                .unwrap_or_else(|_| panic!("{env}: bad port in `{s}`")),
        )
    };
    let url_host_port = |url: &str| -> (String, u16) {
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = after_scheme.split('/').next().unwrap_or(after_scheme);
        host_port(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
    };
    match env {
        "CASSANDRA_NODES" => value.split(',').map(host_port).collect(),
        // A comma-separated list of servers of one cluster.
        "NATS_URL" => value.split(',').map(str::trim).map(url_host_port).collect(),
        "DATABASE_URL" => vec![url_host_port(value)],
        _ => Vec::new(),
    }
}

// ------------------------------------------------------------------- checks --

#[test]
fn every_variable_set_on_a_service_is_read_by_its_binary() {
    let compose = compose();
    let binaries = binaries();
    let mut problems = Vec::new();
    for (name, service, binary) in app_services(&compose) {
        let reads = env_flags(&binaries[binary]);
        for env in service.environment.keys() {
            if !reads.contains_key(env) && !ENV_READ_OUTSIDE_CLAP.contains(&env.as_str()) {
                problems.push(format!("{name}: `{binary}` does not read {env}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "variables no binary reads (misspelt, or a setting that was removed):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_value_parses_in_every_configuration() {
    let compose = compose();
    let binaries = binaries();
    for configuration in configurations() {
        for (name, service, binary) in app_services(&compose) {
            let reads = env_flags(&binaries[binary]);
            let mut args = vec![binary.to_owned()];
            for (env, value) in &service.environment {
                let value = interpolate(value, &configuration.vars)
                    .unwrap_or_else(|e| panic!("{}: {name}: {env}: {e}", configuration.name));
                if let Some(long) = reads.get(env) {
                    args.push(format!("--{long}={value}"));
                }
            }
            // Only what compose sets: ignore the variables of the test process.
            let command = binaries[binary]
                .clone()
                .mut_args(|arg| arg.env(None::<&'static str>));
            if let Err(error) = command.try_get_matches_from(&args) {
                panic!(
                    "{}: {name}: `{binary}` refuses its environment:\n{error}",
                    configuration.name
                );
            }
        }
    }
}

#[test]
fn services_connect_to_stores_that_run_and_wait_for_them() {
    let compose = compose();
    for configuration in configurations() {
        let running = |service: &str| -> bool {
            compose
                .services
                .get(service)
                .is_some_and(|s| configuration.runs(s))
        };
        for (name, service, _) in app_services(&compose) {
            for (env, value) in &service.environment {
                let value = interpolate(value, &configuration.vars).expect("interpolates");
                for (host, _) in store_hosts(env, &value) {
                    assert!(
                        running(&host),
                        "{}: {name}: {env} names `{host}`, which does not run then",
                        configuration.name
                    );
                    assert!(
                        service.depends_on.contains_key(&host),
                        "{}: {name}: connects to `{host}` but does not wait for it (depends_on)",
                        configuration.name
                    );
                }
            }
        }
    }
}

#[test]
fn env_files_only_set_variables_the_compose_file_uses() {
    // Without comment lines: a variable only mentioned in a comment is not used.
    let text: String = compose_text()
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect();
    for configuration in configurations().into_iter().skip(1) {
        let profile = configuration
            .profile
            .as_deref()
            .expect("env files name a profile");
        assert!(
            compose()
                .services
                .values()
                .any(|s| s.profiles.iter().any(|p| p == profile)),
            "{}: no service has the profile `{profile}` the file name promises",
            configuration.name
        );
        for name in configuration.vars.keys() {
            assert!(
                text.contains(&format!("${{{name}")),
                "{}: sets {name}, which docker-compose.yml never interpolates",
                configuration.name
            );
        }
    }
}

#[tokio::test]
async fn ports_and_healthchecks_match_each_service_address() {
    let compose = compose();
    let apps: BTreeMap<&str, &'static str> = app_services(&compose)
        .into_iter()
        .map(|(n, _, b)| (n, b))
        .collect();
    let jobs: BTreeSet<&str> = one_shot_jobs(&compose)
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    for (name, service) in &compose.services {
        // A one-shot job runs to completion: its exit status is its health.
        if jobs.contains(name.as_str()) {
            assert!(service.ports.is_empty(), "{name}: a job publishes nothing");
            continue;
        }
        // Published on the host's loopback only: nothing here is meant for the network.
        for port in &service.ports {
            let (host_ip, _) = port.parse();
            assert_eq!(
                host_ip.as_deref(),
                Some("127.0.0.1"),
                "{name}: publish {port:?} on 127.0.0.1 only"
            );
        }
        let healthcheck = service
            .healthcheck
            .as_ref()
            .filter(|h| !h.disable)
            .unwrap_or_else(|| panic!("{name}: every service needs a healthcheck"));
        let words = healthcheck.test.as_ref().expect("healthcheck.test").words();
        assert!(
            matches!(words.first().map(String::as_str), Some("CMD" | "CMD-SHELL")),
            "{name}: healthcheck.test must start with CMD or CMD-SHELL"
        );
        if !apps.contains_key(name.as_str()) {
            continue;
        }

        let addr = listen_addr(name, service);
        assert!(
            addr.ip().is_unspecified(),
            "{name}: must listen on 0.0.0.0 to be reachable from other containers, not {addr}"
        );
        for port in &service.ports {
            let (_, target) = port.parse();
            assert_eq!(
                target,
                addr.port(),
                "{name}: publishes container port {target}, listens on {addr}"
            );
        }
        let (port, path) = probed_url(&words)
            .unwrap_or_else(|| panic!("{name}: healthcheck probes no http:// URL: {words:?}"));
        assert_eq!(
            port,
            addr.port(),
            "{name}: healthcheck probes port {port}, service listens on {addr}"
        );
        assert_eq!(
            kit_status(&path).await,
            StatusCode::OK,
            "{name}: healthcheck probes {path}, which the service kit does not serve"
        );
    }
}

#[test]
fn dependencies_wait_for_healthy_services() {
    let compose = compose();
    let jobs: BTreeSet<&str> = one_shot_jobs(&compose)
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    for (name, service) in &compose.services {
        for (dependency, how) in &service.depends_on {
            let target = compose.services.get(dependency).unwrap_or_else(|| {
                panic!("{name}: depends on `{dependency}`, which is not a service")
            });
            if jobs.contains(dependency.as_str()) {
                // A job has no health: it is waited for until it has run.
                assert_eq!(
                    how.condition.as_deref(),
                    Some("service_completed_successfully"),
                    "{name} → {dependency} (a one-shot job)"
                );
                continue;
            }
            assert_eq!(
                how.condition.as_deref(),
                Some("service_healthy"),
                "{name} → {dependency}"
            );
            assert!(
                target.healthcheck.is_some(),
                "{name} waits for {dependency}, which has no healthcheck"
            );
            // A dependency behind a profile must be optional, or the default
            // project is invalid ("depends on undefined service").
            if !target.profiles.is_empty() && service.profiles != target.profiles {
                assert!(
                    !how.required,
                    "{name} → {dependency}: a service of profile {:?} needs `required: false`",
                    target.profiles
                );
            }
        }
    }
}

/// The named volume mounted at `path` (`VOLUME:PATH[:MODE]`), if one is.
fn named_volume_at<'a>(service: &'a Service, path: &str) -> Option<&'a str> {
    service.volumes.iter().find_map(|volume| {
        let mut parts = volume.split(':');
        let (source, target) = (parts.next()?, parts.next()?);
        (target == path && !source.starts_with('.') && !source.starts_with('/')).then_some(source)
    })
}

#[test]
fn services_verify_tokens_with_the_key_pair_a_one_shot_job_creates() {
    use service_kit::auth::DevKeys;
    let compose = compose();
    let jobs = one_shot_jobs(&compose);
    let (job, job_service, words) = jobs
        .iter()
        .find(|(_, _, words)| words.get(1).map(String::as_str) == Some("dev-keys"))
        .expect("a one-shot job runs `capctl dev-keys`");
    let dir = flag_value(words, "--dir").expect("`capctl dev-keys --dir DIR`");
    assert_eq!(
        job_service.restart.as_deref(),
        Some("no"),
        "{job}: a one-shot job must not be restarted after it completed"
    );
    let volume = named_volume_at(job_service, &dir)
        .unwrap_or_else(|| panic!("{job}: writes {dir}, which is no named volume: lost with it"));

    // The job's command line works: run it for real into a fresh directory.
    let scratch = std::env::temp_dir().join(format!("compose-keys-{}", uuid::Uuid::new_v4()));
    let mut args: Vec<String> = words[1..].to_vec();
    let at = args.iter().position(|w| w == "--dir").expect("--dir") + 1;
    args[at] = scratch.to_string_lossy().into_owned();
    let output = std::process::Command::new(e2e::workspace_binary("capctl"))
        .args(&args)
        .output()
        .expect("run capctl");
    assert!(
        output.status.success(),
        "{job}: `capctl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let keys = DevKeys::in_dir(&scratch);
    assert!(keys.signing_key.exists() && keys.verifying_key.exists());
    std::fs::remove_dir_all(&scratch).ok();

    let binaries = binaries();
    let mut verifying = 0;
    for (name, service, binary) in app_services(&compose) {
        if !env_flags(&binaries[binary]).contains_key("AUTH_VERIFYING_KEY_FILE") {
            continue;
        }
        verifying += 1;
        let key = service
            .environment
            .get("AUTH_VERIFYING_KEY_FILE")
            .unwrap_or_else(|| panic!("{name}: verifies tokens but sets no AUTH_VERIFYING_KEY_FILE: it would not start"));
        let (mount, file) = key.rsplit_once('/').expect("an absolute path");
        assert_eq!(file, DevKeys::VERIFYING_KEY, "{name}: {key}");
        assert_eq!(
            named_volume_at(service, mount),
            Some(volume),
            "{name}: reads {key}, but does not mount the `{volume}` volume at {mount}"
        );
        assert!(
            service
                .volumes
                .iter()
                .any(|v| v == &format!("{volume}:{mount}:ro")),
            "{name}: mounts the key pair read-write; read-only is enough"
        );
        let how = service
            .depends_on
            .get(*job)
            .unwrap_or_else(|| panic!("{name}: does not wait for `{job}` to create the keys"));
        assert_eq!(
            how.condition.as_deref(),
            Some("service_completed_successfully"),
            "{name} → {job}"
        );
    }
    assert_eq!(verifying, 2, "the inventory and the timeline verify tokens");
}

#[test]
fn the_worker_scales() {
    let compose = compose();
    for (name, service, binary) in app_services(&compose) {
        if binary == "timeline-worker" {
            assert!(
                service.container_name.is_none(),
                "{name}: a container_name forbids --scale"
            );
            assert!(
                service.ports.is_empty(),
                "{name}: a fixed host port forbids --scale"
            );
        }
    }
}

#[test]
fn binaries_and_bind_mounts_exist() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let bins: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets"))
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    // The Dockerfile copies every bin target, so each must be one.
    for binary in binaries().keys() {
        assert!(
            bins.contains(binary),
            "`{binary}` is not a bin target of the workspace: {bins:?}"
        );
    }

    for (name, service) in &compose().services {
        for volume in &service.volumes {
            if volume.starts_with("./") {
                let source = volume.split(':').next().expect("source");
                assert!(
                    root().join(source).exists(),
                    "{name}: mounts {source}, which does not exist"
                );
            }
        }
    }
}

// --------------------------------------------------------------------- NATS --

/// The oldest nats-server with `sync_interval: always` (JetStream fsyncs each
/// write before the publisher gets its ack).
const NATS_SYNC_ALWAYS_SINCE: (u32, u32) = (2, 10);

/// The services run from the `nats` image.
fn nats_servers(compose: &ComposeFile) -> BTreeMap<&str, &Service> {
    compose
        .services
        .iter()
        .filter(|(_, s)| s.image.as_deref().is_some_and(|i| i.starts_with("nats:")))
        .map(|(name, s)| (name.as_str(), s))
        .collect()
}

/// `(major, minor)` of a `nats:<major>.<minor>[.<patch>]-<variant>` tag.
fn nats_image_version(image: &str) -> Option<(u32, u32)> {
    let tag = image.strip_prefix("nats:")?;
    let version = tag.split('-').next()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The value of `--flag value` or `--flag=value` in a command.
fn flag_value(words: &[String], flag: &str) -> Option<String> {
    words.iter().enumerate().find_map(|(i, word)| {
        if word == flag {
            words.get(i + 1).cloned()
        } else {
            word.strip_prefix(&format!("{flag}=")).map(str::to_owned)
        }
    })
}

/// The repository file a service's nats-server reads its `--config` from,
/// through the service's bind mounts.
fn nats_config_file(name: &str, service: &Service) -> PathBuf {
    let words = service.command.as_ref().map(StringOrList::words);
    let words = words.unwrap_or_default();
    let in_container = flag_value(&words, "--config")
        .or_else(|| flag_value(&words, "-c"))
        .unwrap_or_else(|| panic!("{name}: nats-server runs without --config"));
    service
        .volumes
        .iter()
        .find_map(|volume| {
            let mut parts = volume.split(':');
            let source = parts.next()?.strip_prefix("./")?;
            let target = parts.next()?;
            let rest = in_container.strip_prefix(target)?.trim_start_matches('/');
            Some(root().join(source).join(rest))
        })
        .unwrap_or_else(|| panic!("{name}: {in_container} is not bind-mounted from the repository"))
}

/// The settings of a nats-server config file, one per line without comments,
/// with every `include`d file in its place.
fn nats_config_lines(path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        match line.strip_prefix("include ") {
            Some(included) => {
                let included = included
                    .trim()
                    .trim_matches(|c| matches!(c, '"' | '\'' | ';'));
                let dir = path.parent().expect("a config file lives in a directory");
                lines.extend(nats_config_lines(&dir.join(included)));
            }
            None => lines.push(line.to_owned()),
        }
    }
    lines
}

/// The value of `key: value` (or `key = value`, `key value`) in one line.
fn nats_setting<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?;
    rest.starts_with([':', '=', ' '])
        .then(|| rest.trim_start_matches([':', '=', ' ']).trim_matches('"'))
}

/// The lines inside the top-level block `name { ... }`.
fn nats_block<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    let mut inside = Vec::new();
    let mut depth = 0usize;
    for line in lines {
        if depth == 0 {
            if nats_setting(line, name).is_some_and(|rest| rest.starts_with('{')) {
                depth = 1;
            }
            continue;
        }
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        if depth > 0 {
            inside.push(line.as_str());
        }
    }
    inside
}

#[test]
fn every_nats_server_syncs_each_write_before_its_ack() {
    let compose = compose();
    let servers = nats_servers(&compose);
    assert!(!servers.is_empty(), "no service runs the nats image");
    for (name, service) in servers {
        let image = service.image.as_deref().expect("filtered on the image");
        let version = nats_image_version(image).unwrap_or_else(|| {
            panic!("{name}: pin the nats image to a minor version (nats:2.N-alpine), not `{image}`")
        });
        assert!(
            version >= NATS_SYNC_ALWAYS_SINCE,
            "{name}: {image} predates `sync_interval: always` ({NATS_SYNC_ALWAYS_SINCE:?})"
        );
        let config = nats_config_lines(&nats_config_file(name, service));
        let jetstream = nats_block(&config, "jetstream");
        assert!(
            jetstream
                .iter()
                .any(|l| nats_setting(l, "sync_interval") == Some("always")),
            "{name}: its config does not set `sync_interval: always` in `jetstream {{}}`"
        );
        let store = jetstream
            .iter()
            .find_map(|l| nats_setting(l, "store_dir"))
            .unwrap_or_else(|| panic!("{name}: no jetstream store_dir"));
        assert!(
            service
                .volumes
                .iter()
                .any(|v| !v.starts_with('.') && v.split(':').nth(1) == Some(store)),
            "{name}: JetStream stores under {store}, which is not a named volume"
        );
    }
}

#[test]
fn the_cluster_profile_runs_three_nats_servers_that_route_to_each_other() {
    let compose = compose();
    let cluster: BTreeMap<&str, &Service> = nats_servers(&compose)
        .into_iter()
        .filter(|(_, s)| s.profiles.iter().any(|p| p == "cluster"))
        .collect();
    assert_eq!(
        cluster.len(),
        3,
        "the cluster profile runs three NATS servers, not {:?}",
        cluster.keys()
    );
    let mut server_names = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    for (name, service) in &cluster {
        let words = service.command.as_ref().expect("a command").words();
        let server_name = flag_value(&words, "--name")
            .unwrap_or_else(|| panic!("{name}: JetStream clustering needs a server name (--name)"));
        server_names.insert(server_name);
        volumes.extend(
            service
                .volumes
                .iter()
                .filter(|v| !v.starts_with('.'))
                .filter_map(|v| v.split(':').next()),
        );

        let config = nats_config_lines(&nats_config_file(name, service));
        let block = nats_block(&config, "cluster");
        assert!(
            block.iter().any(|l| nats_setting(l, "name").is_some()),
            "{name}: the cluster needs a name"
        );
        let port: u16 = block
            .iter()
            .find_map(|l| nats_setting(l, "port"))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no cluster port"));
        let routes: BTreeSet<(String, u16)> = block
            .iter()
            .flat_map(|l| l.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']')))
            .filter(|token| token.contains("://"))
            .flat_map(|url| store_hosts("NATS_URL", url.trim_matches('"')))
            .collect();
        let every_server: BTreeSet<(String, u16)> =
            cluster.keys().map(|n| ((*n).to_owned(), port)).collect();
        assert_eq!(
            routes, every_server,
            "{name}: routes must reach all three servers on their cluster port"
        );
    }
    assert_eq!(
        server_names.len(),
        3,
        "every server needs a name of its own: {server_names:?}"
    );
    assert_eq!(
        volumes.len(),
        3,
        "every server needs a volume of its own: {volumes:?}"
    );
}

#[test]
fn timeline_services_know_every_nats_server_and_keep_a_replica_on_each() {
    let compose = compose();
    let servers = nats_servers(&compose);
    let binaries = binaries();
    for configuration in configurations() {
        let running: BTreeSet<String> = servers
            .iter()
            .filter(|(_, s)| configuration.runs(s))
            .map(|(name, _)| (*name).to_owned())
            .collect();
        for (name, service, binary) in app_services(&compose) {
            let Some(url) = service.environment.get("NATS_URL") else {
                continue;
            };
            let url = interpolate(url, &configuration.vars).expect("interpolates");
            let hosts: BTreeSet<String> = store_hosts("NATS_URL", &url)
                .into_iter()
                .map(|(host, _)| host)
                .collect();
            assert_eq!(
                hosts, running,
                "{}: {name} must know every NATS server that runs, to reach the others when one is down",
                configuration.name
            );
            // Unset, the binary's own default applies.
            let replicas = match service.environment.get("NATS_STREAM_REPLICAS") {
                Some(value) => interpolate(value, &configuration.vars).expect("interpolates"),
                None => binaries[binary]
                    .get_arguments()
                    .find(|a| a.get_env().is_some_and(|e| e == "NATS_STREAM_REPLICAS"))
                    .and_then(|a| a.get_default_values().first())
                    .and_then(|d| d.to_str())
                    .expect("the binary reads NATS_STREAM_REPLICAS")
                    .to_owned(),
            };
            assert_eq!(
                replicas.parse::<usize>().ok(),
                Some(running.len()),
                "{}: {name}: NATS_STREAM_REPLICAS={replicas} with {} NATS server(s): one copy on each",
                configuration.name,
                running.len()
            );
        }
    }
}

#[tokio::test]
async fn the_binaries_accept_every_nats_url() {
    let compose = compose();
    for configuration in configurations() {
        for (name, service, _) in app_services(&compose) {
            let Some(url) = service.environment.get("NATS_URL") else {
                continue;
            };
            let url = interpolate(url, &configuration.vars).expect("interpolates");
            // The services' own connect: it parses the servers at once and
            // connects in the background, so no server is needed here.
            if let Err(error) = timeline::publisher::connect_nats(&url).await {
                panic!(
                    "{}: {name}: NATS_URL={url} is refused: {error:#}",
                    configuration.name
                );
            }
        }
    }
}

// ------------------------------------------------------------ observability --

#[derive(Debug, Deserialize)]
struct PrometheusConfig {
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Deserialize)]
struct ScrapeConfig {
    job_name: String,
    #[serde(default = "default_metrics_path")]
    metrics_path: String,
    #[serde(default)]
    static_configs: Vec<StaticConfig>,
    #[serde(default)]
    dns_sd_configs: Vec<DnsSdConfig>,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

#[derive(Debug, Deserialize)]
struct StaticConfig {
    targets: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DnsSdConfig {
    names: Vec<String>,
    port: u16,
}

#[tokio::test]
async fn prometheus_scrapes_every_service_where_it_listens() {
    let compose = compose();
    let config: PrometheusConfig =
        serde_saphyr::from_str(&read("deploy/prometheus/prometheus.yml"))
            .expect("prometheus.yml parses");
    let mut scraped = BTreeSet::new();
    for job in &config.scrape_configs {
        let static_targets = job.static_configs.iter().flat_map(|c| &c.targets).map(|t| {
            let (host, port) = t.rsplit_once(':').expect("host:port");
            (host.to_owned(), port.parse::<u16>().expect("port"))
        });
        let dns_targets = job
            .dns_sd_configs
            .iter()
            .flat_map(|c| c.names.iter().map(|n| (n.clone(), c.port)));
        for (host, port) in static_targets.chain(dns_targets) {
            let service = compose
                .services
                .get(&host)
                .filter(|s| s.image.as_deref() == Some(APP_IMAGE))
                .unwrap_or_else(|| {
                    panic!(
                        "job {}: `{host}` is not a service built from the Dockerfile",
                        job.job_name
                    )
                });
            let addr = listen_addr(&host, service);
            assert_eq!(
                port,
                addr.port(),
                "job {}: scrapes {host}:{port}, it listens on {addr}",
                job.job_name
            );
            scraped.insert(host);
        }
        assert_eq!(
            kit_status(&job.metrics_path).await,
            StatusCode::OK,
            "job {}: no {}",
            job.job_name,
            job.metrics_path
        );
    }
    for (name, _, _) in app_services(&compose) {
        assert!(scraped.contains(name), "Prometheus does not scrape {name}");
    }
}

#[derive(Debug, Deserialize)]
struct DatasourceProvisioning {
    datasources: Vec<Datasource>,
}

#[derive(Debug, Deserialize)]
struct Datasource {
    uid: String,
}

/// Every `"datasource": {"uid": ...}` and `"expr"` in a dashboard.
fn walk_dashboard<'a>(
    value: &'a serde_json::Value,
    uids: &mut Vec<&'a str>,
    exprs: &mut Vec<&'a str>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("datasource", serde_json::Value::Object(ds)) => {
                        uids.extend(ds.get("uid").and_then(|u| u.as_str()))
                    }
                    ("expr", serde_json::Value::String(expr)) => exprs.push(expr),
                    _ => walk_dashboard(child, uids, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|item| walk_dashboard(item, uids, exprs)),
        _ => {}
    }
}

/// String literals of the workspace's sources, where metrics get their names.
fn source_text() -> String {
    fn collect(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("readable source"));
            }
        }
    }
    let mut out = String::new();
    collect(&root().join("crates"), &mut out);
    out
}

#[test]
fn the_dashboard_uses_the_provisioned_datasource_and_recorded_metrics() {
    let provisioning: DatasourceProvisioning = serde_saphyr::from_str(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .expect("datasource provisioning parses");
    let provisioned: BTreeSet<&str> = provisioning
        .datasources
        .iter()
        .map(|d| d.uid.as_str())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/cap-services.json"))
            .expect("dashboard is JSON");
    let (mut uids, mut exprs) = (Vec::new(), Vec::new());
    walk_dashboard(&dashboard, &mut uids, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard queries nothing");
    for uid in uids {
        assert!(
            provisioned.contains(uid),
            "the dashboard uses data source `{uid}`; provisioned: {provisioned:?}"
        );
    }

    // Metric names: identifiers with our prefixes; histogram series end in
    // _bucket/_sum/_count, which the code does not spell.
    let sources = source_text();
    let mut missing = BTreeSet::new();
    for expr in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !["inventory_", "timeline_", "http_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                continue;
            }
            let metric = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            if !sources.contains(&format!("\"{metric}\"")) {
                missing.insert(metric.to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard charts metrics no code records: {missing:?}"
    );
}

#[test]
fn interpolation_follows_compose() {
    let vars = BTreeMap::from([
        ("SET".to_owned(), "x".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]);
    assert_eq!(interpolate("${SET:-d}", &vars).as_deref(), Ok("x"));
    assert_eq!(
        interpolate("a${UNSET:-b:9042}c", &vars).as_deref(),
        Ok("ab:9042c")
    );
    assert_eq!(interpolate("${EMPTY:-d}", &vars).as_deref(), Ok("d"));
    assert_eq!(interpolate("$$HOME", &vars).as_deref(), Ok("$HOME"));
    assert!(interpolate("${UNSET}", &vars).is_err());
    assert!(interpolate("$SET", &vars).is_err());
}

// ------------------------------------------------------- PostgreSQL cluster --

/// The settings that make the cluster CP, read from a Patroni configuration.
fn patroni_dcs(text: &str) -> serde_json::Value {
    let config: serde_json::Value = serde_saphyr::from_str(text).expect("Patroni YAML parses");
    let dcs = &config["bootstrap"]["dcs"];
    serde_json::json!({
        "ttl": dcs["ttl"],
        "loop_wait": dcs["loop_wait"],
        "retry_timeout": dcs["retry_timeout"],
        "primary_start_timeout": dcs["primary_start_timeout"],
        "synchronous_mode": dcs["synchronous_mode"],
        "synchronous_mode_strict": dcs["synchronous_mode_strict"],
        "use_pg_rewind": dcs["postgresql"]["use_pg_rewind"],
        "synchronous_commit": dcs["postgresql"]["parameters"]["synchronous_commit"],
        "etcd_members": config["etcd3"]["hosts"].as_array().map(Vec::len),
    })
}

#[test]
fn the_cluster_profile_runs_the_labs_postgresql_shape() {
    let compose = compose();
    let cluster = configurations()
        .into_iter()
        .find(|c| c.profile.as_deref() == Some("cluster"))
        .expect("deploy/compose/cluster.env");
    let runs = |name: &str| compose.services.get(name).is_some_and(|s| cluster.runs(s));
    for name in [
        "etcd-1", "etcd-2", "etcd-3", "pg-1", "pg-2", "pg-3", "haproxy",
    ] {
        assert!(runs(name), "the cluster profile runs {name}");
    }
    assert!(
        !runs("postgres"),
        "the single PostgreSQL is scaled to 0 in the cluster profile"
    );
    assert_eq!(
        cluster
            .vars
            .get("DATABASE_URL")
            .map(|url| store_hosts("DATABASE_URL", url)),
        Some(vec![("haproxy".to_owned(), 5000)]),
        "the inventory reaches the primary through HAProxy"
    );

    // Compose and the lab run the same Patroni settings: the timings, strict
    // synchronous replication, pg_rewind, three etcd members.
    let compose_dcs = patroni_dcs(&read("deploy/patroni/patroni.yml"));
    // The lab's template, with its placeholders filled as cap-lab fills them.
    let lab_dcs = patroni_dcs(
        &read("crates/lab/patroni/patroni.yml.in")
            .replace("@INDEX@", "1")
            .replace("@DIR@", "/lab/pg-1")
            .replace("@PG_BIN@", "/usr/lib/postgresql/15/bin"),
    );
    assert_eq!(
        compose_dcs, lab_dcs,
        "compose's Patroni and the lab's agree"
    );
    assert_eq!(compose_dcs["synchronous_mode_strict"], true);
    assert_eq!(compose_dcs["etcd_members"], 3);
    // Patroni's rule: loop_wait + 2 * retry_timeout <= ttl.
    let (ttl, loop_wait, retry) = (
        compose_dcs["ttl"].as_u64().expect("ttl"),
        compose_dcs["loop_wait"].as_u64().expect("loop_wait"),
        compose_dcs["retry_timeout"]
            .as_u64()
            .expect("retry_timeout"),
    );
    assert!(
        loop_wait + 2 * retry <= ttl,
        "loop_wait + 2 * retry_timeout <= ttl"
    );

    // Both HAProxy configurations route to the node Patroni calls primary, and
    // close the sessions of a node that stops being it.
    for path in [
        "deploy/patroni/haproxy.cfg",
        "crates/lab/patroni/haproxy.cfg",
    ] {
        let text = read(path);
        for needle in [
            "option httpchk GET /primary",
            "http-check expect status 200",
            "on-marked-down shutdown-sessions",
        ] {
            assert!(text.contains(needle), "{path}: `{needle}`");
        }
        assert_eq!(
            text.matches("check port 8008").count(),
            3,
            "{path}: three Patroni nodes"
        );
    }
}
