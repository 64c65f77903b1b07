//! Reading the deploy files: the programs of `docker-compose config`'s output and of the
//! rendered chart, each with its command and exactly the environment it gets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;

use super::{Program, Programs, DATAGEN, MIGRATE, SERVICES};

fn string_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(string_of).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ reading the compose file

/// The programs of `docker-compose config`'s output, keyed by service name.
pub fn compose_programs(config: &Value) -> anyhow::Result<Programs> {
    let services = config["services"]
        .as_object()
        .context("the compose config has no services")?;
    let mut programs = Programs::new();
    for name in [MIGRATE, DATAGEN].into_iter().chain(SERVICES) {
        let service = services
            .get(name)
            .with_context(|| format!("docker/compose.yaml has no service {name}"))?;
        let command = strings(&service["command"]);
        let (binary, args) = command
            .split_first()
            .with_context(|| format!("compose service {name} has no command"))?;
        let env = service["environment"]
            .as_object()
            .map(|vars| {
                vars.iter()
                    .filter_map(|(k, v)| string_of(v).map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        // ["CMD", "healthcheck", PORT]
        let health_port = strings(&service["healthcheck"]["test"])
            .get(2)
            .and_then(|port| port.parse().ok());
        if health_port.is_some() {
            let published = strings(&service["ports"]);
            ensure!(
                published
                    .iter()
                    .any(|p| p.trim_end_matches("/tcp").ends_with(&format!(":{}", health_port.unwrap_or(0)))),
                "compose service {name}: the healthcheck's port {health_port:?} is not published ({published:?})"
            );
        }
        programs.insert(
            name.to_owned(),
            Program {
                binary: binary.clone(),
                args: args.to_vec(),
                env,
                // Compose merges its shared blocks into each service's own environment.
                shared: BTreeSet::new(),
                health_port,
            },
        );
    }
    Ok(programs)
}

// ------------------------------------------------------------------ reading the chart

/// The rendered chart's documents, with the ConfigMaps and Secrets its env refers to.
#[derive(Debug)]
pub struct Manifests {
    pub documents: Vec<Value>,
    config_maps: HashMap<String, BTreeMap<String, String>>,
    secrets: HashMap<String, BTreeMap<String, String>>,
}

impl Manifests {
    pub fn new(documents: Value) -> anyhow::Result<Self> {
        let documents = documents
            .as_array()
            .context("the rendered chart is not a list of documents")?
            .clone();
        let mut config_maps = HashMap::new();
        let mut secrets = HashMap::new();
        for doc in &documents {
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let data = |key: &str| -> BTreeMap<String, String> {
                doc[key]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| string_of(v).map(|v| (k.clone(), v)))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match doc["kind"].as_str() {
                Some("ConfigMap") => {
                    config_maps.insert(name, data("data"));
                }
                Some("Secret") => {
                    let mut values: BTreeMap<String, String> = data("data")
                        .into_iter()
                        .map(|(k, v)| Ok((k, String::from_utf8(base64_decode(&v)?)?)))
                        .collect::<anyhow::Result<_>>()?;
                    values.extend(data("stringData"));
                    secrets.insert(name, values);
                }
                _ => {}
            }
        }
        Ok(Self {
            documents,
            config_maps,
            secrets,
        })
    }

    /// The programs: each Deployment's container (named by its first argument, the binary) and
    /// the migrate Job's. `external` stands for Secrets the chart refers to but does not make.
    pub fn programs(&self, external: &BTreeMap<String, String>) -> anyhow::Result<Programs> {
        let mut programs = Programs::new();
        for doc in &self.documents {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "Deployment" && kind != "Job" {
                continue;
            }
            let containers = doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .context("a workload without containers")?;
            ensure!(
                containers.len() == 1,
                "{kind} with {} containers",
                containers.len()
            );
            let container = &containers[0];
            let args = strings(&container["args"]);
            let (binary, rest) = args
                .split_first()
                .with_context(|| format!("{kind} {} has no args", doc["metadata"]["name"]))?;
            let name = if kind == "Job" && rest == ["migrate"] {
                MIGRATE.to_owned()
            } else {
                binary.clone()
            };
            let (env, shared) = self.container_env(container, external)?;
            let health_port = if kind == "Deployment" {
                let port = container["ports"]
                    .as_array()
                    .and_then(|ports| ports.iter().find(|p| p["name"] == "http"))
                    .and_then(|p| p["containerPort"].as_u64())
                    .with_context(|| format!("{name}: no container port named http"))?;
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    let get = &container[probe]["httpGet"];
                    ensure!(
                        get["path"] == "/health" && get["port"] == "http",
                        "{name}: {probe} is not GET /health on the http port: {get}"
                    );
                }
                Some(u16::try_from(port)?)
            } else {
                None
            };
            programs.insert(
                name,
                Program {
                    binary: binary.clone(),
                    args: rest.to_vec(),
                    env,
                    shared,
                    health_port,
                },
            );
        }
        Ok(programs)
    }

    /// The environment Kubernetes gives a container: `envFrom` first, `env` over it; and which
    /// of its variables came from `envFrom` alone.
    fn container_env(
        &self,
        container: &Value,
        external: &BTreeMap<String, String>,
    ) -> anyhow::Result<(BTreeMap<String, String>, BTreeSet<String>)> {
        let mut env = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                let data = self.config_maps.get(name).with_context(|| {
                    format!("envFrom names ConfigMap {name}, which the chart does not make")
                })?;
                env.extend(data.clone());
            } else {
                bail!("unexpected envFrom source {source}");
            }
        }
        let mut shared: BTreeSet<String> = env.keys().cloned().collect();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"]
                .as_str()
                .context("an env entry without a name")?;
            let value = if let Some(value) = string_of(&var["value"]) {
                Some(value)
            } else if var["valueFrom"]["secretKeyRef"].is_object() {
                let reference = &var["valueFrom"]["secretKeyRef"];
                let key = reference["key"]
                    .as_str()
                    .context("secretKeyRef without key")?;
                let secret = reference["name"]
                    .as_str()
                    .context("secretKeyRef without name")?;
                let found = match self.secrets.get(secret) {
                    Some(data) => data.get(key).cloned(),
                    None => external.get(key).cloned(),
                };
                ensure!(
                    found.is_some() || reference["optional"] == true,
                    "{name}: key {key} of Secret {secret} is missing and not optional"
                );
                found
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                // The downward API: the pod's own fields, as Kubernetes would fill them in.
                let pod = format!(
                    "{}-7d9f8b6c5-x2k4q",
                    container["name"].as_str().unwrap_or("pod")
                );
                match path {
                    "metadata.name" => Some(pod),
                    "metadata.namespace" => Some("default".to_owned()),
                    other => bail!("{name}: unexpected fieldRef {other}"),
                }
            } else if var["valueFrom"]["configMapKeyRef"].is_object() {
                let reference = &var["valueFrom"]["configMapKeyRef"];
                let map = reference["name"].as_str().unwrap_or_default();
                let key = reference["key"].as_str().unwrap_or_default();
                self.config_maps
                    .get(map)
                    .and_then(|data| data.get(key))
                    .cloned()
            } else {
                bail!("{name}: unexpected env source {var}")
            };
            shared.remove(name);
            match value {
                Some(value) => env.insert(name.to_owned(), value),
                None => env.remove(name),
            };
        }
        Ok((env, shared))
    }

    /// The Deployment running `binary`.
    pub fn deployment(&self, binary: &str) -> Option<&Value> {
        self.documents.iter().find(|doc| {
            doc["kind"] == "Deployment"
                && strings(&doc["spec"]["template"]["spec"]["containers"][0]["args"]).first()
                    == Some(&binary.to_owned())
        })
    }
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let digit = ALPHABET
            .iter()
            .position(|a| *a == byte)
            .with_context(|| format!("not base64: {text}"))?;
        buffer = (buffer << 6) | u32::try_from(digit)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff)?);
        }
    }
    Ok(out)
}
