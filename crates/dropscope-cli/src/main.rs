//! The `dropscope` binary: a thin shell over the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dropscope",
    version,
    about = "Conversion funnels, and why users drop off."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every acceptance case (*.json) in DIR; exits non-zero if any fails.
    Cases {
        /// Folder of case files.
        dir: PathBuf,
        /// Backend to check: `embedded` (default).
        #[arg(long, default_value = "embedded")]
        backend: String,
        /// Only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Cases {
            dir,
            backend,
            filter,
        } => {
            if backend != "embedded" {
                anyhow::bail!(
                    "unknown backend {backend:?}: only `embedded` is available in this build"
                );
            }
            let outcomes = dropscope_testkit::run_dir(&dir, || {
                Box::new(dropscope_testkit::Embedded::default())
            })
            .with_context(|| format!("reading cases from {}", dir.display()))?;
            let (mut passed, mut failed) = (0, 0);
            for o in outcomes
                .iter()
                .filter(|o| filter.as_ref().is_none_or(|f| o.id.contains(f.as_str())))
            {
                if o.passed {
                    passed += 1;
                    println!("{} pass", o.id);
                } else {
                    failed += 1;
                    println!("{} FAIL {}", o.id, o.detail);
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
