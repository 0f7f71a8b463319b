//! Golden outputs: each input in `testdata/` has its expected `.jsonl` and `.resp` beside it.
//! A change in output shows up as a diff to review. `RDBFERRY_UPDATE_GOLDEN=1` rewrites them
//! (and then compares nothing, so it is refused under `CI`).

use std::path::{Path, PathBuf};
use std::process::Command;

const INPUTS: &[&str] = &[
    "redis-7.0/all-types.rdb",
    "redis-6.2/all-types.rdb",
    "redis-6.0/all-types.rdb",
    "redis-7.0/appendonlydir",
    "redis-6.2/appendonly.aof",
];

/// Whether to rewrite the golden files instead of comparing: never in CI, where a run that
/// compares nothing would pass whatever the output.
fn updating() -> bool {
    let update = std::env::var_os("RDBFERRY_UPDATE_GOLDEN").is_some();
    assert!(
        !(update && std::env::var_os("CI").is_some()),
        "RDBFERRY_UPDATE_GOLDEN is set under CI: the golden files would be rewritten, not checked"
    );
    update
}

fn golden(input: &str, format: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let src = dir.join(input);
    let want_path = PathBuf::from(format!("{}.{format}", src.display()));
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .arg("convert")
        .arg(&src)
        .args(["--format", format, "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if updating() {
        std::fs::write(&want_path, &o.stdout).unwrap();
        return;
    }
    let want = std::fs::read(&want_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with RDBFERRY_UPDATE_GOLDEN=1 to create it)",
            want_path.display()
        )
    });
    if want != o.stdout {
        let (w, g) = (
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(&o.stdout),
        );
        let first = w
            .lines()
            .zip(g.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(w.lines().count().min(g.lines().count()));
        panic!(
            "{} differs from the output at line {}:\n  want: {}\n  got:  {}",
            want_path.display(),
            first + 1,
            w.lines()
                .nth(first)
                .unwrap_or("<end>")
                .chars()
                .take(300)
                .collect::<String>(),
            g.lines()
                .nth(first)
                .unwrap_or("<end>")
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
}

#[test]
fn jsonl_outputs_match_golden_files() {
    for i in INPUTS {
        golden(i, "jsonl");
    }
}

#[test]
fn resp_outputs_match_golden_files() {
    for i in INPUTS {
        golden(i, "resp");
    }
}

/// The JSONL outputs read back as inputs (issue 3: convert → edit → import) give the same
/// JSONL and the same RESP as the original inputs: the reader mirrors the writer.
#[test]
fn golden_jsonl_read_back_gives_the_same_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for i in INPUTS {
        let jsonl = dir.join(format!("{i}.jsonl"));
        for format in ["jsonl", "resp"] {
            let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
                .arg("convert")
                .arg(&jsonl)
                .args(["--format", format, "-q"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let want = std::fs::read(dir.join(format!("{i}.{format}"))).unwrap();
            assert!(
                want == o.stdout,
                "{} read back as --format {format} differs from {i}.{format}",
                jsonl.display()
            );
        }
    }
}
