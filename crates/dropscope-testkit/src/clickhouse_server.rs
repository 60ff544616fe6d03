//! The private ClickHouse server the tests run against: started once per
//! test binary through `scripts/clickhouse.sh` (which installs Debian's
//! `clickhouse-server` if missing and serves on loopback with its own data
//! folder), or the one `CLICKHOUSE_URL` names. A server that cannot be
//! started fails the test; it is never skipped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The server's HTTP URL, after starting it if needed. Panics when it
/// cannot be started.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CLICKHOUSE_URL") {
            return url;
        }
        let script = workspace().join("scripts/clickhouse.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/clickhouse.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::env::var("CH_HTTP_PORT").unwrap_or_else(|_| "18123".into());
        format!("http://127.0.0.1:{port}")
    })
}
