//! The `dropscope-bench` binary refuses bad flags before doing any work,
//! and never clears a folder that holds files.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dropscope-bench"))
        .args(args)
        .output()
        .expect("running dropscope-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn only_that_matches_nothing_is_refused_with_the_names() {
    let o = bench(&["--smoke", "--only", "no such query"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--only \"no such query\" matches no benchmark query"),
        "{e}"
    );
    assert!(
        e.contains("funnel ordered") && e.contains("diagnosis"),
        "{e}"
    );
    // Refused before generating anything.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("demo events"));
}

#[test]
fn compare_without_the_ordered_funnel_is_refused() {
    let o = bench(&["--smoke", "--compare", "--only", "strict"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--compare") && e.contains("\"strict\" leaves it out"),
        "{e}"
    );
}

#[test]
fn a_folder_with_files_is_not_cleared_without_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("events.jsonl");
    std::fs::write(&keep, "precious\n").unwrap();
    let o = bench(&[
        "--smoke",
        "--no-cold",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("exists and is not empty: pass --reuse"), "{e}");
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "precious\n");
}
