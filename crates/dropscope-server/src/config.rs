//! Server configuration: flags, `DROPSCOPE_*` environment variables and a
//! TOML config file, merged in that order of precedence (flag > env > file >
//! default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Default body limit, as PostHog's capture (20 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// Default number of events one request may carry.
pub const DEFAULT_MAX_EVENTS_PER_BATCH: usize = 10_000;
/// Default size of one event's JSON (PostHog refuses events over 1 MB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Default nesting depth of property values.
pub const DEFAULT_MAX_PROPERTY_DEPTH: usize = 20;
/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";
/// File in the data directory holding generated keys.
pub const KEYS_FILE: &str = "server-keys.json";

/// `dropscope serve` options. Every field is optional here: unset flags fall
/// back to the environment (clap), then the config file, then the default.
/// The same struct is the config file's schema (TOML, unknown keys refused).
#[derive(Debug, Clone, Default, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// TOML config file with any of the settings below (snake_case keys).
    #[arg(long, env = "DROPSCOPE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory of the store.
    #[arg(long, env = "DROPSCOPE_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8000].
    #[arg(long, env = "DROPSCOPE_ADDR", value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Public, write-only project token (capture only). Generated and kept
    /// in <data>/server-keys.json when unset.
    #[arg(long, env = "DROPSCOPE_PROJECT_TOKEN", value_name = "TOKEN")]
    pub project_token: Option<String>,
    /// Secret key for the query API (`Authorization: Bearer ...`).
    /// Generated and kept in <data>/server-keys.json when unset.
    #[arg(long, env = "DROPSCOPE_SECRET_KEY", value_name = "KEY")]
    pub secret_key: Option<String>,
    /// Largest request body, compressed and decompressed [default: 20 MiB].
    #[arg(long, env = "DROPSCOPE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most events in one capture request [default: 10000].
    #[arg(long, env = "DROPSCOPE_MAX_EVENTS_PER_BATCH", value_name = "N")]
    pub max_events_per_batch: Option<usize>,
    /// Largest JSON of one event [default: 1 MiB].
    #[arg(long, env = "DROPSCOPE_MAX_EVENT_BYTES", value_name = "BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Deepest nesting of objects/arrays inside a property value [default: 20].
    #[arg(long, env = "DROPSCOPE_MAX_PROPERTY_DEPTH", value_name = "N")]
    pub max_property_depth: Option<usize>,
    /// Where events live and queries run: `embedded` (the store in --data)
    /// or `clickhouse` [default: embedded].
    #[arg(long, env = "DROPSCOPE_BACKEND", value_name = "embedded|clickhouse")]
    pub backend: Option<String>,
    /// ClickHouse HTTP address for `--backend clickhouse`
    /// [default: http://127.0.0.1:8123].
    #[arg(long, env = "DROPSCOPE_CLICKHOUSE_URL", value_name = "URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database of the project (created and migrated on start)
    /// [default: dropscope].
    #[arg(long, env = "DROPSCOPE_CLICKHOUSE_DATABASE", value_name = "NAME")]
    pub clickhouse_database: Option<String>,
}

/// Default ClickHouse HTTP address.
pub const DEFAULT_CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
/// Default ClickHouse database.
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "dropscope";

/// Where events are stored and queries answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The embedded store in the data directory.
    #[default]
    Embedded,
    /// A ClickHouse database.
    ClickHouse { url: String, database: String },
}

/// Limits checked while a request is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_events_per_batch: usize,
    pub max_event_bytes: usize,
    pub max_property_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_events_per_batch: DEFAULT_MAX_EVENTS_PER_BATCH,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_property_depth: DEFAULT_MAX_PROPERTY_DEPTH,
        }
    }
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data: Option<PathBuf>,
    pub addr: SocketAddr,
    pub project_token: String,
    pub secret_key: String,
    pub limits: Limits,
    pub backend: BackendChoice,
}

impl Settings {
    /// Settings for tests: in-memory, port 0, given keys, default limits.
    pub fn for_tests(project_token: &str, secret_key: &str) -> Settings {
        Settings {
            data: None,
            addr: "127.0.0.1:0".parse().expect("addr"),
            project_token: project_token.into(),
            secret_key: secret_key.into(),
            limits: Limits::default(),
            backend: BackendChoice::Embedded,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    project_token: String,
    secret_key: String,
}

/// A fresh random token: `prefix` + 32 hex digits (128 random bits).
pub fn generate_token(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The keys kept in `<data>/server-keys.json`, created on first use.
/// Returns (project token, secret key).
pub fn data_dir_keys(dir: &Path) -> anyhow::Result<(String, String)> {
    let path = dir.join(KEYS_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let k: KeysFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        return Ok((k.project_token, k.secret_key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let k = KeysFile {
        project_token: generate_token("phc_"),
        secret_key: generate_token("dss_"),
    };
    let tmp = dir.join(format!("{KEYS_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&k)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok((k.project_token, k.secret_key))
}

impl ServeConfig {
    /// Reads a TOML config file (unknown keys are an error naming them).
    pub fn from_file(path: &Path) -> anyhow::Result<ServeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// `self` (flags and environment) over `other` (the config file).
    pub fn or(self, other: ServeConfig) -> ServeConfig {
        ServeConfig {
            config: self.config.or(other.config),
            data: self.data.or(other.data),
            addr: self.addr.or(other.addr),
            project_token: self.project_token.or(other.project_token),
            secret_key: self.secret_key.or(other.secret_key),
            max_body_bytes: self.max_body_bytes.or(other.max_body_bytes),
            max_events_per_batch: self.max_events_per_batch.or(other.max_events_per_batch),
            max_event_bytes: self.max_event_bytes.or(other.max_event_bytes),
            max_property_depth: self.max_property_depth.or(other.max_property_depth),
            backend: self.backend.or(other.backend),
            clickhouse_url: self.clickhouse_url.or(other.clickhouse_url),
            clickhouse_database: self.clickhouse_database.or(other.clickhouse_database),
        }
    }

    /// Merges the config file (if any) and defaults. Keys not given are read
    /// from (or generated into) `<data>/server-keys.json`; without a data
    /// directory both keys must be given.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let merged = match &self.config {
            Some(p) => {
                let file = ServeConfig::from_file(p)?;
                self.clone().or(file)
            }
            None => self,
        };
        let d = Limits::default();
        let limits = Limits {
            max_body_bytes: merged.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_events_per_batch: merged
                .max_events_per_batch
                .unwrap_or(d.max_events_per_batch),
            max_event_bytes: merged.max_event_bytes.unwrap_or(d.max_event_bytes),
            max_property_depth: merged.max_property_depth.unwrap_or(d.max_property_depth),
        };
        for (name, v) in [
            ("max_body_bytes", limits.max_body_bytes),
            ("max_events_per_batch", limits.max_events_per_batch),
            ("max_event_bytes", limits.max_event_bytes),
            ("max_property_depth", limits.max_property_depth),
        ] {
            anyhow::ensure!(v > 0, "{name} must be positive");
        }
        let backend = match merged.backend.as_deref().map(str::trim) {
            None | Some("embedded") => {
                anyhow::ensure!(
                    merged.clickhouse_url.is_none() && merged.clickhouse_database.is_none(),
                    "--clickhouse-url/--clickhouse-database need --backend clickhouse"
                );
                BackendChoice::Embedded
            }
            Some("clickhouse") => BackendChoice::ClickHouse {
                url: merged
                    .clickhouse_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLICKHOUSE_URL.into()),
                database: merged
                    .clickhouse_database
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLICKHOUSE_DATABASE.into()),
            },
            Some(other) => anyhow::bail!("--backend {other:?}: use embedded or clickhouse"),
        };
        let (project_token, secret_key) = match (merged.project_token, merged.secret_key) {
            (Some(p), Some(s)) => (p, s),
            (p, s) => {
                let dir = merged.data.as_deref().context(
                    "--project-token and --secret-key are required without --data (keys are kept in the data directory)",
                )?;
                let (fp, fs) = data_dir_keys(dir)?;
                (p.unwrap_or(fp), s.unwrap_or(fs))
            }
        };
        anyhow::ensure!(
            !project_token.is_empty(),
            "the project token must not be empty"
        );
        anyhow::ensure!(!secret_key.is_empty(), "the secret key must not be empty");
        anyhow::ensure!(
            project_token != secret_key,
            "the project token and the secret key must differ"
        );
        Ok(Settings {
            data: merged.data,
            addr: merged
                .addr
                .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("default addr")),
            project_token,
            secret_key,
            limits,
            backend,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.toml");
        std::fs::write(
            &file,
            "addr = \"0.0.0.0:9000\"\nmax_event_bytes = 5\nproject_token = \"phc_file\"\nsecret_key = \"sk_file\"\n",
        )
        .unwrap();
        let cfg = ServeConfig {
            config: Some(file),
            max_event_bytes: Some(7),
            ..Default::default()
        };
        let s = cfg.resolve().unwrap();
        assert_eq!(s.addr.to_string(), "0.0.0.0:9000");
        assert_eq!(s.limits.max_event_bytes, 7);
        assert_eq!(s.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(s.project_token, "phc_file");
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.toml");
        std::fs::write(&file, "adr = \"0.0.0.0:9000\"\n").unwrap();
        let err = ServeConfig::from_file(&file).unwrap_err();
        assert!(format!("{err:#}").contains("adr"), "{err:#}");
    }

    #[test]
    fn keys_are_generated_once_per_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServeConfig {
            data: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let a = cfg.clone().resolve().unwrap();
        let b = cfg.resolve().unwrap();
        assert!(a.project_token.starts_with("phc_"));
        assert_eq!(a.project_token, b.project_token);
        assert_eq!(a.secret_key, b.secret_key);
        assert_ne!(a.project_token, a.secret_key);
    }

    #[test]
    fn keys_required_without_data_dir() {
        assert!(ServeConfig::default().resolve().is_err());
    }
}
