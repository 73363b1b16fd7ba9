//! A tiny run of the load generator against its server, as a test of the tool itself (no
//! timing is asserted: figures live in docs/BENCHMARKS.md).

use std::process::Command;

#[test]
fn a_tiny_run_delivers_everything_in_order() {
    let json = std::env::temp_dir().join(format!("omni-bench-smoke-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_omni-bench"))
        .args([
            "--clients",
            "5",
            "--models",
            "10",
            "--rate",
            "max,200",
            "--secs",
            "1",
            "--warmup",
            "0.2",
            "--quiet",
            "--server",
            env!("CARGO_BIN_EXE_omni-bench-server"),
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("omni-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("| max |"),
        "the table has a row per rate:\n{stdout}"
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("--json wrote the file"))
            .expect("valid JSON");
    let _ = std::fs::remove_file(&json);
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["clients"], 5);
        assert_eq!(row["models"], 10);
        assert_eq!(row["lost"], 0, "{row}");
        assert_eq!(row["reordered"], 0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["cpu_us_per_delivery"].as_f64().unwrap() >= 0.0, "{row}");
    }
}
