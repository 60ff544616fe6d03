//! dropscope-testkit: the acceptance-case runner ([`case`], [`compare`]),
//! used by `dropscope cases` and by the test suites of every backend.

pub mod case;
pub mod clickhouse_server;
pub mod compare;
pub mod demo;
pub mod oracle;

use std::path::Path;

pub use case::{run_case, Backend, Embedded, Outcome};

/// Runs every `*.json` case in `dir` (sorted by name) on fresh backends.
pub fn run_dir(
    dir: &Path,
    mut make: impl FnMut() -> Result<Box<dyn Backend>, String>,
) -> std::io::Result<Vec<Outcome>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let id = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(case) => match make() {
                Ok(mut b) => out.push(run_case(&case, b.as_mut())),
                Err(e) => out.push(Outcome {
                    id,
                    passed: false,
                    detail: format!("backend: {e}"),
                }),
            },
            Err(e) => out.push(Outcome {
                id,
                passed: false,
                detail: format!("not valid JSON: {e}"),
            }),
        }
    }
    Ok(out)
}
